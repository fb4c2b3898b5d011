"""What a metadata member loses when it is scored without metadata, with and without ``model.meta_dropout``.

On the HAM10000 sample (which has sex, age and site), one pretrained EfficientNet-Lite0 per dropout rate is trained
on folds 1-3 with metadata, then its fold-0 rows are scored twice: with their metadata, and with it removed (what
happens to images from a collection without metadata, or a folder of JPEGs). It prints both AUCs and the drop.

    python bench/meta_missing.py --rates 0 0.5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from melanoma_search.data.meta import without_metadata
from melanoma_search.ensemble.folder import Member, score_member
from melanoma_search.search import load_spec
from melanoma_search.train import fit, parse_config, prepare_for
from melanoma_search.train.config import apply_overrides, parse_override
from melanoma_search.train.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="ham-cpu", help="spec whose base config and first enqueued params to use")
    parser.add_argument("--data-dir", default="../shared/data/ham10000-224")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    spec = load_spec(args.study)
    base = spec.base_config(overrides=[("data.dir", str(Path(args.data_dir).resolve()))])
    base = apply_overrides(base, {**(dict(spec.enqueue[0]) if spec.enqueue else {}), "model.meta": True,
                                  "data.folds": [0]})
    base = apply_overrides(base, [parse_override(o) for o in args.overrides])
    results = []
    for rate in args.rates:
        config = parse_config(apply_overrides(base, {"model.meta_dropout": rate}))
        data = prepare_for(config)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = fit(config, data=data, weights_dir=tmp, log=lambda line: None)
            fold = result.folds[0]
            assert fold.weights_path is not None
            member = Member(name="m", weight=1.0, config=config, weight_files={0: Path(fold.weights_path)},
                            reference=fold.oof[["fold", "pred"]], classes=data.classes,
                            encoders={str(k): v for k, v in result.meta_encoders.items()})
            rows = data.table[data.table["fold"].eq(0)].reset_index(drop=True)
            device = resolve_device("auto")
            with_meta = roc_auc_score(rows["target"], score_member(member, rows, device=device)[0])
            without = roc_auc_score(rows["target"], score_member(member, without_metadata(rows), device=device)[0])
            results.append((rate, with_meta, without, time.perf_counter() - start))
    print(f"\nfold 0 of {data.n_folds} ({len(rows)} images, {int(rows['target'].sum())} melanomas), "
          f"{config.model.name} at {config.image_size} px, {config.epochs} epochs")
    print(f"{'meta_dropout':>12}{'with metadata':>15}{'without':>10}{'drop':>8}  time")
    for rate, with_meta, without, seconds in results:
        print(f"{rate:>12.2f}{with_meta:>15.4f}{without:>10.4f}{with_meta - without:>8.3f}  {seconds:.0f}s")


if __name__ == "__main__":
    main()
