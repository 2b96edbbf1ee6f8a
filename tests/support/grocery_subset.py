"""A small dataset folder of the real grocery photos, made of symlinks (the real tier's input)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.real_material import GROCERY


def grocery_subset(root: Path, labels: Sequence[str], train_per_label: int) -> Path:
    """``root/{train,val}/<label>/``: the first ``train_per_label`` training photos of each label
    and all of its val photos, as symlinks into ``../shared/real/grocery``."""
    for split, limit in (("train", train_per_label), ("val", None)):
        for label in labels:
            target = root / split / label
            target.mkdir(parents=True)
            for path in sorted((GROCERY / split / label).iterdir())[:limit]:
                (target / path.name).symlink_to(path)
    return root
