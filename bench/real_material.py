"""Where the real material is (``../shared/real``) and the grocery photos in their role splits.

Shared by the real-photo benchmarks (:mod:`bench.real_photos`, which tabulates frozen heads and
fine-tuned recipes side by side, and :mod:`bench.fine_tuned_recipes`) and the real test tier, so
all of them read the same photos in the same roles.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from model_build.data.dataset import discover
from model_build.data.prepare import prepare_split
from model_build.data.splits import assign_roles

REPOSITORY_ROOT: Final[Path] = Path(__file__).resolve().parent.parent


def find_real_dir() -> Path:
    """``$MOMEE_REAL_DIR``, else ``../shared/real`` beside the repository (or beside the main
    checkout when this is a ``git worktree``)."""
    if os.environ.get("MOMEE_REAL_DIR"):
        return Path(os.environ["MOMEE_REAL_DIR"])
    candidates = [REPOSITORY_ROOT.parent / "shared" / "real"]
    git = REPOSITORY_ROOT / ".git"
    if git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(git.read_text().partition("gitdir:")[2].strip())
        if gitdir.parent.name == "worktrees":
            candidates.append(gitdir.parent.parent.parent.parent / "shared" / "real")
    return next((path for path in candidates if path.is_dir()), candidates[0])


REAL_DIR: Final[Path] = find_real_dir()
WEIGHTS: Final[Path] = REAL_DIR / "mobilenet_v2_imagenet_notop.h5"
GROCERY: Final[Path] = REAL_DIR / "grocery"


def real_material_missing() -> str | None:
    """One line saying why the real tier cannot run here, or None."""
    if not WEIGHTS.is_file() or not (GROCERY / "train").is_dir():
        return f"real material not found at {REAL_DIR} (ImageNet weights + grocery photos)"
    return None


def load_data(data_dir: Path, label_limit: int | None, holdout_fraction: float = 0.5):
    """The dataset in its role splits (train, selection, calibration, held_out), decoded once
    into ``.cache/prepared``; the first ``label_limit`` labels only when given."""
    dataset = assign_roles(discover(data_dir), held_out_fraction=holdout_fraction)
    if label_limit:
        keep = set(dataset.labels[:label_limit])
        dataset = dataset.without(
            {s.path for ss in dataset.splits.values() for s in ss if s.label not in keep}
        )
    splits = {
        name: prepare_split(dataset, name, cache_dir=REPOSITORY_ROOT / ".cache" / "prepared")
        for name in ("train", "selection", "calibration", "held_out")
    }
    labels = list(dataset.labels[:label_limit] if label_limit else dataset.labels)
    return dataset, labels, splits
