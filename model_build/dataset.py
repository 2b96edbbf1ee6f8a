"""Dataset discovery: which files, which labels, which split.

Two layouts are accepted under ``--data DIR``:

* **Kaggle layout**: ``DIR/train/<label>/…``, ``DIR/val/<label>/…`` and optionally
  ``DIR/test/<label>/…``. When ``val/`` is missing, ``train/`` is split as below.
* **One folder of label folders**: ``DIR/<label>/…``, split into train and val by ``val_fraction``.

Labels are the sorted folder names of the training data (contract 3 of ARCHITECTURE.md). A label
folder in ``val/`` or ``test/`` that has no counterpart in ``train/`` is an error: the model could
never predict it.

The split is keyed on file *content* (sha256), not on names or listing order: within each label
the distinct contents are ranked by a seeded hash and the first ``val_fraction`` of them go to
val, and a content chosen for val takes *every* file with those bytes along. So identical files
never straddle the split, renaming or re-copying the folder changes nothing, and adding images
moves only the new ones.

Every regular file is listed, whatever its extension, so the audit can report the ones that are
not images; hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are ignored.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from contracts.artifact import sha256_file


class DatasetError(ValueError):
    """The data folder cannot be used as given; the message says why and what to change."""


@dataclass(frozen=True)
class Sample:
    """One file of the dataset."""

    path: Path
    label: str
    label_index: int
    sha256: str  # of the file's bytes; keys the split and the prepare cache


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
        return Dataset(
            root=self.root,
            layout=self.layout,
            labels=self.labels,
            splits=splits,
            val_fraction=self.val_fraction,
            seed=self.seed,
            notes=self.notes,
        )

    def summary(self) -> dict:
        """A JSON-ready description (for config.json and the artifact manifest)."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "labels": list(self.labels),
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "counts": self.counts(),
        }


def discover(data_dir: Path, *, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Find the labels and the files of every split under ``data_dir``.

    ``val_fraction`` and ``seed`` matter only when val is split off (no ``val/`` folder). Raises
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
            return Dataset(root=root, layout="kaggle", labels=labels, splits=splits, seed=seed)
        train, val = _split_by_content(_samples(train_files, labels), labels, val_fraction, seed)
        splits = {"train": train, "val": val}
        if "test" in other_files:
            splits["test"] = _samples(other_files["test"], labels)
        return Dataset(
            root=root,
            layout="kaggle_split_train",
            labels=labels,
            splits=splits,
            val_fraction=val_fraction,
            seed=seed,
            notes=("no val/ folder: val was split off train/ by content hash",),
        )

    files = _label_files(root)
    if not files:
        raise DatasetError(
            f"{root} has neither train/ (Kaggle layout) nor label folders (DIR/<label>/<images>)"
        )
    labels = tuple(sorted(files))
    train, val = _split_by_content(_samples(files, labels), labels, val_fraction, seed)
    return Dataset(
        root=root,
        layout="label_folders",
        labels=labels,
        splits={"train": train, "val": val},
        val_fraction=val_fraction,
        seed=seed,
    )


file_sha256 = sha256_file  # one definition of content hashing, shared with the artifact loader


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
    with ThreadPoolExecutor(max_workers=8) as pool:  # hashlib releases the GIL
        digests = list(pool.map(lambda pair: file_sha256(pair[1]), pairs))
    index = {label: i for i, label in enumerate(labels)}
    return tuple(
        Sample(path=path, label=label, label_index=index[label], sha256=digest)
        for (label, path), digest in zip(pairs, digests, strict=True)
    )


def _split_by_content(
    samples: tuple[Sample, ...], labels: tuple[str, ...], val_fraction: float, seed: int
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Stable content-keyed split; identical bytes always land in the same split."""

    def rank(digest: str) -> str:
        return hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()

    digests_by_label: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        digests_by_label[sample.label].add(sample.sha256)
    val_digests: set[str] = set()
    for label in labels:
        distinct = sorted(digests_by_label.get(label, ()), key=rank)
        take = round(len(distinct) * val_fraction)
        # At least one val image per label with two or more, never the whole label.
        take = min(max(take, 1), len(distinct) - 1) if len(distinct) >= 2 else 0
        val_digests.update(distinct[:take])
    train = tuple(s for s in samples if s.sha256 not in val_digests)
    val = tuple(s for s in samples if s.sha256 in val_digests)
    return train, val
