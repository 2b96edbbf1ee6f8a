"""Which images fit the calibration and which ones report the numbers: held-out evaluation.

Checkpoint choice (best val accuracy), the temperature and the review threshold are all *fitted* on
val. Numbers measured on the same images are optimistic: on the grocery photos a threshold chosen
for 0.98 precision on val gave 0.963 on photos it had not seen. So evaluation reports on data that
nothing was fitted on:

* a dataset with ``test/`` is evaluated on ``test/`` (val keeps its role: checkpoint, temperature,
  threshold);
* otherwise :data:`HOLDOUT_SPLIT` is taken out of val **before training**: within each label, the
  distinct file contents of val are ranked by a seeded hash and the first ``fraction`` of them are
  held out (same content-keyed rule as the train/val split of :mod:`model_build.data.dataset`, with
  its
  own salt, so identical bytes never straddle the two parts and the choice survives renaming).
  Training, checkpoint choice and calibration see only the rest of val.

The evaluation data is identified by a content hash (:func:`split_content_hash`): the sha256 of
the sorted ``label, file sha256`` lines of its images. The manifest records it, so the publish
gate can tell whether two models were measured on the same photos.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Final

from model_build.data.dataset import Dataset, pick_by_content

HOLDOUT_SPLIT: Final[str] = "holdout"


def evaluation_split(dataset: Dataset) -> str:
    """``"test"`` when the dataset has test images, else ``"holdout"`` if held out, else ``"val"``.

    ``"val"`` means nothing was held out (``--holdout-fraction 0`` and no ``test/``): the report
    then says its numbers are measured on the data they were fitted on.
    """
    return evaluation_split_of(dataset.splits)


def evaluation_split_of(splits) -> str:
    """:func:`evaluation_split` of a split mapping (a dataset's, or a run's recorded splits)."""
    if len(splits.get("test") or ()):
        return "test"
    if len(splits.get(HOLDOUT_SPLIT) or ()):
        return HOLDOUT_SPLIT
    return "val"


def with_holdout(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``dataset`` with part of val moved to :data:`HOLDOUT_SPLIT` (unless it has ``test/``).

    Within each label at least one val image stays in val (when it has two or more distinct
    contents) and a label with a single val image keeps it in val.
    """
    if fraction <= 0 or dataset.splits.get("test") or HOLDOUT_SPLIT in dataset.splits:
        return dataset
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    val = dataset.splits.get("val", ())

    held = pick_by_content(val, fraction, salt=f"holdout:{seed}:", at_least_one=False)
    splits = dict(dataset.splits)
    splits["val"] = tuple(s for s in val if s.sha256 not in held)
    splits[HOLDOUT_SPLIT] = tuple(s for s in val if s.sha256 in held)
    notes = (
        *dataset.notes,
        f"{len(splits[HOLDOUT_SPLIT])} val images held out for evaluation (content hash)",
    )
    # Everything else (the extra training folders among it) is kept as it was.
    return dataclasses.replace(dataset, splits=splits, notes=notes)


def split_content_hash(dataset: Dataset, split: str) -> str:
    """sha256 of the sorted ``label<TAB>file sha256`` lines of ``split``: "the same photos"."""
    lines = sorted(f"{s.label}\t{s.sha256}" for s in dataset.splits.get(split, ()))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
