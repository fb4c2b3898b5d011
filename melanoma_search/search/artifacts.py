"""What a trial leaves behind in Optuna's artifact store, so optuna-dashboard and the export can find it.

Every trial: ``config.yaml`` (the resolved training config). Finished trials also: ``oof.csv``, ``test.csv``,
``history.csv`` (each fold's epochs: losses, validation AUC, learning rate) and ``roc.svg`` (the out-of-fold ROC
curve).

Model weights (``fold<k>.safetensors``) are kept for the best ``top_k_weights`` trials only, in
``storage/NAME/study-<key>/weights/trial-<number>/`` (one folder per study, not per name): a trial entering the top k
keeps its weights and the one pushed out loses them, so a long study does not fill the disk. They live beside the
artifact store rather than in it because Optuna cannot change a finished trial's artifact list: evicted weights
would stay listed in the dashboard, pointing at nothing. For the same reason no trial records its own weights
folder: the study's user attribute ``weights`` (:func:`~melanoma_search.search.records.kept_weights`) maps each
kept trial number to its folder and is rewritten on every eviction.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
from numpy.typing import ArrayLike
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from sklearn.metrics import roc_auc_score, roc_curve

from melanoma_search.search import records

__all__ = ["ArtifactWriter", "roc_svg"]

_log = logging.getLogger(__name__)


def roc_svg(target: ArrayLike, pred: ArrayLike, *, title: str, size: int = 320) -> str:
    """A small self-contained SVG of the ROC curve (no plotting library, renders in any browser and the dashboard)."""
    fpr, tpr, _ = roc_curve(np.asarray(target), np.asarray(pred))
    auc = roc_auc_score(np.asarray(target), np.asarray(pred))
    pad, side = 40, size - 72  # room below the plot for the tick labels, then the axis title
    points = " ".join(f"{pad + x * side:.1f},{pad + (1 - y) * side:.1f}" for x, y in zip(fpr, tpr, strict=True))
    ticks = "".join(
        f'<text x="{pad + t * side:.0f}" y="{pad + side + 16}" font-size="10" text-anchor="middle">{t:.1f}</text>'
        f'<text x="{pad - 6}" y="{pad + (1 - t) * side + 3:.0f}" font-size="10" text-anchor="end">{t:.1f}</text>'
        for t in (0.0, 0.5, 1.0)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" font-family="sans-serif">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{size / 2}" y="20" font-size="13" text-anchor="middle">{title} (AUC {auc:.4f})</text>'
        f'<rect x="{pad}" y="{pad}" width="{side}" height="{side}" fill="none" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad + side}" x2="{pad + side}" y2="{pad}" stroke="#bbb" stroke-dasharray="4"/>'
        f'<polyline points="{points}" fill="none" stroke="#c0392b" stroke-width="2"/>{ticks}'
        f'<text x="{size / 2}" y="{size - 4}" font-size="11" text-anchor="middle">false positive rate</text>'
        f'<text x="12" y="{size / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {size / 2})">true positive rate</text></svg>'
    )


class ArtifactWriter:
    """Uploads a trial's files to the study's artifact store and keeps weights for the top k trials only."""

    def __init__(self, root: str | Path, *, weights_root: str | Path, top_k: int) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(str(self.root))
        self.weights_root = Path(weights_root).resolve()
        self.top_k = top_k

    def upload(self, trial: optuna.Trial, path: Path, *, mimetype: str | None = None) -> str:
        return upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial,
                               mimetype=mimetype)

    def _copy_in(self, number: int, weight_files: Sequence[Path]) -> Path:
        """The trial's weights copied into its kept folder, which is only recorded once complete: a copy that fails
        (a full disk) leaves no folder a later export could take for whole weights."""
        folder = self.weights_root / f"trial-{number:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for path in weight_files:
                shutil.copy2(path, folder / path.name)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    def _evict(self, folder: Path) -> None:
        """Delete a trial's kept weights pushed out of the top k: only a folder under this study's weights folder.

        The folder comes from the study's ``weights`` attribute, which anyone who can write to the storage can
        change; a path elsewhere (a user's data, another study's weights) is left alone and said."""
        resolved = folder.resolve()
        if resolved == self.weights_root or not resolved.is_relative_to(self.weights_root):
            _log.warning("not deleting %s: the study's weights record points outside its weights folder %s",
                         folder, self.weights_root)
            return
        shutil.rmtree(resolved, ignore_errors=True)

    def keep_weights(self, trial: optuna.Trial, value: float, weight_files: Sequence[Path]) -> Path | None:
        """Keep ``weight_files`` if ``trial`` is among the top k by ``value``; drop weights pushed out of it.

        Several workers may finish trials at the same moment: the whole read-rank-write runs under a file lock in
        ``weights_root``, whose file also remembers the values of the kept trials (a trial that is still saving its
        outputs is not COMPLETE in the storage yet, but it already holds a place in the top k).
        """
        if self.top_k <= 0 or not weight_files:
            return None
        study = trial.study
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        self.weights_root.mkdir(parents=True, exist_ok=True)
        with open(self.weights_root / ".kept.json", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read()
            held: dict[str, float] = json.loads(text) if text.strip() else {}
            scores = {t.number: t.values[0] for t in study.get_trials(deepcopy=False,
                                                                      states=(optuna.trial.TrialState.COMPLETE,))
                      if t.values}
            scores.update({int(n): v for n, v in held.items()})
            scores[trial.number] = value
            ranked = sorted(scores, key=lambda n: -scores[n] if maximize else scores[n])[: self.top_k]
            kept = records.kept_weights(study)
            folder = None
            if trial.number in ranked:
                folder = self._copy_in(trial.number, weight_files)
                kept[trial.number] = folder
            for number in [n for n in kept if n not in ranked]:
                self._evict(kept.pop(number))
            records.set_kept_weights(study, kept)
            handle.seek(0)
            handle.truncate()
            json.dump({str(n): scores[n] for n in kept}, handle)
        return folder
