"""One role per split: which photos fit the weights, choose the model, calibrate, and report.

A number is only a promise on photos that nothing was fitted *or chosen* on. Each split has one
role, and :func:`assign_roles` is the one picker that gives them out:

==============  ===============================================================================
``train``       fits the weights (train/ minus the selection slice; ``--data`` folders added)
``selection``   a slice of train/ (default 10 % per label): chooses the checkpoint, the
                learning-rate drops, early stopping, the threshold stop and any recipe choice
``calibration`` val/ (all of it when test/ exists, else the part not held out): fits only the
                temperature, the review threshold, int8's calibration and the unfamiliarity cut
``held_out``    test/ when present, else the held-out part of val: reports only
==============  ===============================================================================

Why a slice of train rather than cross-fitting or a third folder: it costs one split and no
extra training, it leaves val/ whole for calibration (the threshold's guarantee grows with the
calibration size) and keeps test/ (or the held-out half of val) untouched. Before, val chose the
checkpoint *and* fitted the threshold, and the statistical review measured that as +3.9 accuracy
points of optimism.

**Groups.** Photos of one capture session (seller, upload batch) look alike; splitting inside a
session leaks. When the dataset names groups — a folder level under the label folder
(``train/<label>/<group>/photo.jpg``) — whole groups go to one side. Otherwise the unit is the
file's content (sha256), so identical bytes never straddle two splits.

**Never depends on ``--seed``.** Units are ranked by the sha256 of a fixed salt and the unit's
key; another seed changes the weights' initialisation, never which photos evaluate them. (The
held-out salt is the one the seed-0 runs used, so their held-out photos are unchanged.)

:func:`check_roles` proves that no content is in two roles; training and standalone evaluation
call it, and it names the offending splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

from model_build.data.dataset import Dataset, pick_units

TRAIN: Final[str] = "train"
SELECTION: Final[str] = "selection"
CALIBRATION: Final[str] = "calibration"
HELD_OUT: Final[str] = "held_out"
ROLE_SPLITS: Final[tuple[str, ...]] = (TRAIN, SELECTION, CALIBRATION, HELD_OUT)
ROLES: Final[dict[str, str]] = {
    TRAIN: "fits the weights",
    SELECTION: "chooses the checkpoint, learning-rate drops, early stopping and recipe",
    CALIBRATION: "fits temperature, review threshold, int8 calibration and unfamiliarity cut",
    HELD_OUT: "reports only",
}
DEFAULT_SELECTION_FRACTION: Final[float] = 0.1
DEFAULT_HELD_OUT_FRACTION: Final[float] = 0.5
# Fixed salts: the same dataset always gives the same roles. "holdout:0:" is the salt seed-0 runs
# used for the held-out half, so those runs' held-out photos (and published hashes) still match.
_SELECTION_SALT: Final[str] = "selection:"
_HELD_OUT_SALT: Final[str] = "holdout:0:"


class RoleViolation(ValueError):
    """The same photo serves two roles (e.g. the checkpoint was chosen on calibration photos)."""


def assign_roles(
    dataset: Dataset,
    *,
    selection_fraction: float = DEFAULT_SELECTION_FRACTION,
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
) -> Dataset:
    """``dataset`` (splits ``train``, ``val`` and maybe ``test`` as discovered) with its splits
    renamed by role: ``train``, ``selection``, ``calibration`` and ``held_out``.

    ``held_out`` is absent only when there is no test/ and ``held_out_fraction`` is 0: the report
    then says its numbers are measured on the calibration photos. A dataset whose splits are
    already roles is returned unchanged.
    """
    if SELECTION in dataset.splits:
        return dataset
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"the selection fraction must be in (0, 1), got {selection_fraction}")
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {held_out_fraction}")
    train = dataset.splits.get("train", ())
    val = dataset.splits.get("val", ())
    test = dataset.splits.get("test", ())
    chosen = pick_units(train, selection_fraction, salt=_SELECTION_SALT, at_least_one=True)
    splits = {
        TRAIN: tuple(s for s in train if s.sha256 not in chosen),
        SELECTION: tuple(s for s in train if s.sha256 in chosen),
    }
    if test:
        splits[CALIBRATION], splits[HELD_OUT] = tuple(val), tuple(test)
        held_note = "held_out = test/"
    elif held_out_fraction > 0:
        held = pick_units(val, held_out_fraction, salt=_HELD_OUT_SALT, at_least_one=False)
        splits[CALIBRATION] = tuple(s for s in val if s.sha256 not in held)
        splits[HELD_OUT] = tuple(s for s in val if s.sha256 in held)
        held_note = f"held_out = {len(splits[HELD_OUT])} photos of val/"
    else:
        splits[CALIBRATION] = tuple(val)
        held_note = "nothing held out: numbers are measured on the calibration photos"
    unit = "group" if any(s.group for s in (*train, *val)) else "content hash"
    notes = (
        *dataset.notes,
        f"roles by {unit}: selection = {len(splits[SELECTION])} photos of train/, "
        f"calibration = {len(splits[CALIBRATION])}, {held_note}",
    )
    return dataclasses.replace(dataset, splits=splits, notes=notes)


def reported_split(splits: Mapping[str, object]) -> str:
    """The split the numbers are reported on: the held-out one when the run has it, else the
    calibration one (the report then says its numbers are on the photos they were fitted on)."""
    return recorded_name(splits, HELD_OUT) or recorded_name(splits, CALIBRATION) or CALIBRATION


def check_roles(contents: Mapping[str, Iterable[str]]) -> None:
    """Raise :class:`RoleViolation` when a content hash is in two role splits.

    ``contents`` maps a split name to the content hashes (sha256) of its photos: a dataset's
    samples, a run's ``data.json`` or the photos a step actually used. Splits that are not roles
    (e.g. ``val`` of an old run) are ignored.
    """
    seen: dict[str, str] = {}
    for split in ROLE_SPLITS:
        for digest in set(contents.get(split, ())):
            if digest in seen:
                raise RoleViolation(
                    f"a photo ({digest[:12]}…) is in both {seen[digest]} and {split}: "
                    f"{seen[digest]} {ROLES[seen[digest]]}, {split} {ROLES[split]}"
                )
            seen[digest] = split


def dataset_contents(dataset: Dataset) -> dict[str, list[str]]:
    """:func:`check_roles`' input from a dataset."""
    return {name: [s.sha256 for s in samples] for name, samples in dataset.splits.items()}


def split_content_hash(dataset: Dataset, split: str) -> str:
    """sha256 of the sorted ``label<TAB>file sha256`` lines of ``split``: "the same photos"."""
    lines = sorted(f"{s.label}\t{s.sha256}" for s in dataset.splits.get(split, ()))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# Runs recorded before the roles existed name their splits val / holdout / test.
_OLD_NAMES: Final[dict[str, tuple[str, ...]]] = {
    CALIBRATION: (CALIBRATION, "val"),
    HELD_OUT: (HELD_OUT, "test", "holdout"),
}


def recorded_name(splits: Mapping[str, object], role: str) -> str | None:
    """The split of a run's record that played ``role`` (older runs: val, test or holdout)."""
    for name in _OLD_NAMES.get(role, (role,)):
        if len(splits.get(name) or ()):
            return name
    return None
