"""``python -m melanoma_search.train``: train one configuration and write its predictions.

Prints a line per epoch and ends with ``val_auc=<OOF AUC, the mean of the folds'>``; writes ``oof.csv``, ``test.csv``,
``config.yaml`` (the resolved config), ``metrics.yaml`` and the best weights per fold to the output folder.
Without ``--config`` it trains the defaults on the embedded synthetic set.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from melanoma_search.cli import parser_for
from melanoma_search.errors import MelanomaSearchError


def main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for("melanoma_search.train", __doc__)
    parser.add_argument("--config", help="YAML config (default: built-in defaults on the synthetic set)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.name=efficientnet_b0 --set data.folds=all")
    parser.add_argument("--data-dir", help="shortcut for --set data.dir=DIR")
    parser.add_argument("--output-dir", help="shortcut for --set output_dir=DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from melanoma_search.train.config import load_config
    from melanoma_search.train.loop import fit, prepare_for

    values = {"data.dir": args.data_dir, "output_dir": args.output_dir}
    try:
        config = load_config(args.config, overrides=args.overrides,
                             values={k: v for k, v in values.items() if v is not None})
        data = prepare_for(config)
        result = fit(config, data=data, weights_dir=config.output_dir)
        out = result.save(config.output_dir, config=config)
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"fold AUCs: {', '.join(f'{a:.4f}' for a in result.fold_aucs)}; outputs in {out}")
    print(f"val_auc={result.auc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
