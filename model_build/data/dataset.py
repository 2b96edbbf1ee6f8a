"""Dataset discovery: which files, which labels, which split.

Two layouts are accepted under ``--data DIR``:

* **Kaggle layout**: ``DIR/train/<label>/…``, ``DIR/val/<label>/…`` and optionally
  ``DIR/test/<label>/…``. When ``val/`` is missing, ``train/`` is split as below.
* **One folder of label folders**: ``DIR/<label>/…``, split into train and val by ``val_fraction``.

Labels are the sorted folder names of the training data (contract 3 of ARCHITECTURE.md). A label
folder in ``val/`` or ``test/`` that has no counterpart in ``train/`` is an error: the model could
never predict it. A label with no val photo is noted (nothing could measure it); a label of an
added training folder that the main dataset does not have is refused (a reviewed export naming a
label outside the model's set would otherwise create a class with a handful of photos and no val).

The split is keyed on the photo's *group* when the dataset names one (a folder level under the
label folder: ``<label>/<session>/photo.jpg``), else on its file *content* (sha256), never on
names, listing order or ``--seed``: within each label the units are ranked by a fixed-salt hash
and the first ``val_fraction`` of them go to val, and a content chosen for val takes *every* file
with those bytes along. So identical files never straddle the split, renaming or re-copying the
folder changes nothing, and adding images moves only the new ones. The roles of the splits
(selection, calibration, held-out) are given out by :mod:`model_build.data.splits`.

Every regular file is listed, whatever its extension, so the audit can report the ones that are
not images; hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from contracts.artifact import sha256_file
from model_build.progress import Progress


class DatasetError(ValueError):
    """The data folder cannot be used as given; the message says why and what to change."""


@dataclass(frozen=True)
class Sample:
    """One file of the dataset."""

    path: Path
    label: str
    label_index: int
    sha256: str  # of the file's bytes; keys the split and the prepare cache
    source: str | None = None  # the extra dataset it came from (None: the main --data folder)
    # The capture group the dataset names: the first folder level under the label folder
    # (``<label>/<group>/photo.jpg``); None for a photo directly in its label folder.
    group: str | None = None


@dataclass(frozen=True)
class Dataset:
    """The result of :func:`discover`.

    ``labels`` is the sorted tuple of label names (index = model output index). ``splits`` maps
    ``"train"``, ``"val"`` and, when present, ``"test"`` to their samples, sorted by path.
    """

    root: Path
    layout: Literal["kaggle", "kaggle_split_train", "label_folders"]
    labels: tuple[str, ...]
    splits: dict[str, tuple[Sample, ...]]
    val_fraction: float | None = None  # set when val was split off by content hash
    seed: int = 0
    notes: tuple[str, ...] = field(default=())
    extra: tuple[ExtraData, ...] = field(
        default=()
    )  # more training data (:func:`add_training_data`)

    def files(self, split: str) -> list[Path]:
        """The file paths of ``split``."""
        return [sample.path for sample in self.splits.get(split, ())]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {label: number of files}}`` including labels with zero files."""
        result: dict[str, dict[str, int]] = {}
        for split, samples in self.splits.items():
            per_label = dict.fromkeys(self.labels, 0)
            for sample in samples:
                per_label[sample.label] += 1
            result[split] = per_label
        return result

    def without(self, paths: set[Path]) -> Dataset:
        """A copy with ``paths`` (e.g. files the audit found unreadable) left out."""
        splits = {
            split: tuple(s for s in samples if s.path not in paths)
            for split, samples in self.splits.items()
        }
        return dataclasses.replace(self, splits=splits)

    def summary(self) -> dict:
        """A JSON-ready description (for config.json and the artifact manifest)."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "labels": list(self.labels),
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "counts": self.counts(),
            "extra": [extra.summary() for extra in self.extra],
        }


@dataclass(frozen=True)
class ExtraData:
    """One more dataset folder whose photos were added to train (see :func:`add_training_data`)."""

    root: Path
    reviewed: bool  # a reviewed-dataset export (review.reviewed_dataset)
    added: dict[str, int]  # per label, files added to train
    dropped: int  # files with the same bytes as a val/test/held-out file of the main dataset

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "reviewed": self.reviewed,
            "added": dict(self.added),
            "added_total": sum(self.added.values()),
            "dropped_same_bytes_as_evaluation": self.dropped,
        }


def add_training_data(dataset: Dataset, folders: list[Path] | tuple[Path, ...]) -> Dataset:
    """``dataset`` with every file of ``folders`` added to **train** only.

    The main dataset's val, test and held-out splits stay exactly as they were, so its numbers
    stay comparable from run to run, and no added photo can leak into them: a file with the same
    bytes (sha256) as any evaluation file is dropped (and counted). Each folder is read whole
    (label folders, or the Kaggle layout, all of its splits). Every label of an added folder must
    be a label of the main dataset: a new class would have no val photo to measure it, so it is
    a :class:`DatasetError` (add the class to the main dataset's train/ and val/ first).
    """
    if not folders:
        return dataset
    evaluation = {
        sample.sha256
        for split, samples in dataset.splits.items()
        if split != "train"
        for sample in samples
    }
    found: list[tuple[Path, dict[str, list[Path]]]] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise DatasetError(f"data folder {root} does not exist or is not a folder")
        if (root / "train").is_dir():
            files: dict[str, list[Path]] = defaultdict(list)
            for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
                for label, paths in _label_files(split_dir).items():
                    files[label].extend(paths)
        else:
            files = _label_files(root)
        if not files:
            raise DatasetError(f"{root} has no label folders (DIR/<label>/<images>)")
        unknown = sorted(set(files) - set(dataset.labels))
        if unknown:
            raise DatasetError(
                f"{root} has label folder(s) {unknown} that the main dataset {dataset.root} does "
                "not have: no val photo could measure them. Add the class to the main dataset's "
                "train/ and val/, or remove the folder."
            )
        found.append((root, dict(files)))
    labels = dataset.labels
    index = {label: i for i, label in enumerate(labels)}

    def relabel(sample: Sample) -> Sample:
        return Sample(
            sample.path,
            sample.label,
            index[sample.label],
            sample.sha256,
            sample.source,
            sample.group,
        )

    splits = {split: tuple(map(relabel, samples)) for split, samples in dataset.splits.items()}
    extras: list[ExtraData] = []
    added_samples: list[Sample] = []
    for root, files in found:
        samples = [
            Sample(s.path, s.label, index[s.label], s.sha256, str(root))
            for s in _samples(files, labels)
        ]
        kept = [sample for sample in samples if sample.sha256 not in evaluation]
        added_samples.extend(kept)
        per_label: dict[str, int] = defaultdict(int)
        for sample in kept:
            per_label[sample.label] += 1
        extras.append(
            ExtraData(
                root=root,
                reviewed=_is_reviewed_export(root),
                added=dict(sorted(per_label.items())),
                dropped=len(samples) - len(kept),
            )
        )
    splits["train"] = tuple(
        sorted((*splits.get("train", ()), *added_samples), key=lambda s: str(s.path))
    )
    notes = tuple(
        f"train: +{sum(extra.added.values())} from {extra.root}"
        + (" (reviewed photos)" if extra.reviewed else "")
        + (f", {extra.dropped} dropped (same bytes as an evaluation file)" if extra.dropped else "")
        for extra in extras
    )
    return dataclasses.replace(
        dataset,
        labels=labels,
        splits=splits,
        notes=(*dataset.notes, *notes),
        extra=(*dataset.extra, *extras),
    )


def _is_reviewed_export(root: Path) -> bool:
    """Whether ``root`` is (the labelled folder of) a ``review.reviewed_dataset`` export."""
    for candidate in (root / "manifest.json", root.parent / "manifest.json"):
        try:
            if json.loads(candidate.read_text()).get("kind") == "reviewed_dataset":
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def discover(data_dir: Path, *, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Find the labels and the files of every split under ``data_dir``.

    ``val_fraction`` matters only when val is split off (no ``val/`` folder); ``seed`` is only
    recorded (it never chooses photos). Raises
    :class:`DatasetError` for a missing folder, no label folders, or a val/test label that train
    lacks.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist or is not a folder")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--val-fraction must be between 0 and 1, got {val_fraction}")

    if (root / "train").is_dir():
        train_files = _label_files(root / "train")
        if not train_files:
            raise DatasetError(f"{root / 'train'} has no label folders")
        labels = tuple(sorted(train_files))
        other_files = {
            split: _label_files(root / split)
            for split in ("val", "test")
            if (root / split).is_dir()
        }
        for split, files in other_files.items():
            missing = sorted(set(files) - set(labels))
            if missing:
                raise DatasetError(
                    f"{split}/ has label folder(s) {missing} that train/ does not have; the model "
                    f"could never predict them. Add them to train/ or remove them from {split}/."
                )
        if "val" in other_files:
            splits = {"train": _samples(train_files, labels)}
            for split, files in other_files.items():
                splits[split] = _samples(files, labels)
            return _require_val(
                Dataset(root=root, layout="kaggle", labels=labels, splits=splits, seed=seed)
            )
        train, val = _split_by_content(_samples(train_files, labels), val_fraction, seed)
        splits = {"train": train, "val": val}
        if "test" in other_files:
            splits["test"] = _samples(other_files["test"], labels)
        return _require_val(
            Dataset(
                root=root,
                layout="kaggle_split_train",
                labels=labels,
                splits=splits,
                val_fraction=val_fraction,
                seed=seed,
                notes=("no val/ folder: val was split off train/ by content hash",),
            )
        )

    files = _label_files(root)
    if not files:
        raise DatasetError(
            f"{root} has neither train/ (Kaggle layout) nor label folders (DIR/<label>/<images>)"
        )
    labels = tuple(sorted(files))
    train, val = _split_by_content(_samples(files, labels), val_fraction, seed)
    return _require_val(
        Dataset(
            root=root,
            layout="label_folders",
            labels=labels,
            splits={"train": train, "val": val},
            val_fraction=val_fraction,
            seed=seed,
        )
    )


def _require_val(dataset: Dataset) -> Dataset:
    """``dataset``, noting every label without a val photo (printed with the audit).

    Such a label is not refused: public datasets ship that way (the Grocery Store dataset's
    official val split lacks 6 of its 43 labels), and its train photos still teach the other
    labels what they are not. Nothing can measure it, though, so the note says so, and its
    evaluation rows read "no images evaluated". What *is* refused is a label that only an added
    training folder brings (:func:`add_training_data`): that is how a reviewed export would create
    a new class from a handful of photos.
    """
    in_val = {sample.label for sample in dataset.splits.get("val", ())}
    missing = [label for label in dataset.labels if label not in in_val]
    if not missing:
        return dataset
    note = f"label(s) {missing} have no val photo: nothing measures or calibrates them"
    return replace(dataset, notes=(*dataset.notes, note))


def _is_hidden(path: Path, base: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def _label_files(split_dir: Path) -> dict[str, list[Path]]:
    """``{label: [files]}`` of each visible sub-folder of ``split_dir`` (searched recursively)."""
    result: dict[str, list[Path]] = {}
    for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if label_dir.name.startswith("."):
            continue
        result[label_dir.name] = sorted(
            p for p in label_dir.rglob("*") if p.is_file() and not _is_hidden(p, label_dir)
        )
    return result


def _samples(files: dict[str, list[Path]], labels: tuple[str, ...]) -> tuple[Sample, ...]:
    pairs = [(label, path) for label in sorted(files) for path in files[label]]
    digests = []
    with (
        Progress("hash", total=len(pairs), unit="file") as progress,
        ThreadPoolExecutor(max_workers=8) as pool,  # hashlib releases the GIL
    ):
        for digest in pool.map(lambda pair: sha256_file(pair[1]), pairs):
            digests.append(digest)
            progress.update()
    index = {label: i for i, label in enumerate(labels)}
    return tuple(
        Sample(
            path=path,
            label=label,
            label_index=index[label],
            sha256=digest,
            group=_group_of(path, label),
        )
        for (label, path), digest in zip(pairs, digests, strict=True)
    )


def _group_of(path: Path, label: str) -> str | None:
    """The folder under the label folder, when the photo is not directly in it."""
    parts = path.parts
    for position in range(len(parts) - 2, -1, -1):
        if parts[position] == label:
            below = parts[position + 1 : -1]
            return below[0] if below else None
    return None


def pick_units(
    samples: tuple[Sample, ...], fraction: float, *, salt: str, at_least_one: bool
) -> set[str]:
    """The content hashes of ``fraction`` of each label's units, never a label's last unit; with
    ``at_least_one``, one unit per label that has two or more.

    A unit is the photo's group when it has one (every photo of a capture session goes the same
    way), else its content. Units are ranked by ``sha256(salt + unit)``: a fixed order that
    depends on neither paths nor ``--seed``. Callers test ``sample.sha256 in chosen``, so a
    content chosen once takes every file with those bytes along.
    """

    def unit(sample: Sample) -> str:
        return f"group:{sample.group}" if sample.group else f"content:{sample.sha256}"

    def rank(key: str) -> str:
        # The content unit keeps its bare digest in the hash, as before groups existed, so
        # datasets without groups keep exactly their earlier split.
        return hashlib.sha256(f"{salt}{key.removeprefix('content:')}".encode()).hexdigest()

    units_by_label: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for sample in samples:
        units_by_label[sample.label][unit(sample)].add(sample.sha256)
    chosen: set[str] = set()
    for units in units_by_label.values():
        ranked = sorted(units, key=rank)
        take = round(len(ranked) * fraction)
        if at_least_one:
            take = max(take, 1) if len(ranked) >= 2 else 0
        for key in ranked[: max(min(take, len(ranked) - 1), 0)]:
            chosen.update(units[key])
    return chosen


def _split_by_content(
    samples: tuple[Sample, ...], val_fraction: float, seed: int
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Stable group- or content-keyed split; identical bytes always land in the same split.

    ``seed`` is recorded but does not choose the photos: the salt is the one seed 0 used, so
    another seed cannot change which photos evaluate the model."""
    del seed
    # At least one val image per label with two or more, never the whole label.
    val_digests = pick_units(samples, val_fraction, salt="0:", at_least_one=True)
    train = tuple(s for s in samples if s.sha256 not in val_digests)
    val = tuple(s for s in samples if s.sha256 in val_digests)
    return train, val
