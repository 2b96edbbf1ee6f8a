"""Audit a dataset before training on it: ``python -m model_build.audit DIR [--out FOLDER]``.

Training runs the same audit automatically and writes its results into the run folder; the
standalone command writes them to ``--out`` (default ``audit/<dataset folder name>`` under the
working directory). Nothing is ever written into the dataset folder, which may be read-only
(Kaggle's input folder is).

It reports:

* counts per split and label, as a table and a bar chart (``audit_counts.png``);
* files that cannot be used (unreadable, not an image, corrupt, too large…), with the image
  function's reason — they are listed and skipped, never fatal;
* leakage between splits: *exact* duplicates (same bytes) and *near* duplicates (perceptual hash
  of the 224×224 model input within :data:`NEAR_DUPLICATE_DISTANCE` bits) between every pair of
  splits (train, selection, calibration, held-out — or train/val/test before roles are given);
* tiny originals (shorter side below :data:`TINY_SIDE` pixels), which the model sees upscaled;
* class imbalance (largest label more than :data:`IMBALANCE_RATIO` times the smallest in a split)
  and labels with no images in a split.

Decoding goes through the prepare cache (:mod:`model_build.data.prepare`), so the audit's decode is
the
one training reuses: nothing is decoded twice.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from model_build.data.dataset import Dataset
from model_build.data.prepare import DecodeResult, decode_samples
from model_build.run_folder import AUDIT_FIGURE, AUDIT_FILE

NEAR_DUPLICATE_DISTANCE: Final[int] = 4  # of 64 perceptual-hash bits
TINY_SIDE: Final[int] = 100
IMBALANCE_RATIO: Final[float] = 1.5
AUDIT_JSON: Final[str] = AUDIT_FILE
_MAX_LISTED: Final[int] = 1000


@dataclass(frozen=True)
class AuditResult:
    """The report (as written to audit.json) and the files training must leave out."""

    report: dict
    unusable: frozenset[Path]
    results: Mapping[str, DecodeResult] = field(default_factory=dict)  # by content hash

    @property
    def warnings(self) -> list[str]:
        return self.report["warnings"]


def audit_dataset(
    dataset: Dataset,
    out_dir: Path | None = None,
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> AuditResult:
    """Audit ``dataset``; when ``out_dir`` is given write ``audit.json`` and the bar chart there."""
    all_samples = [s for samples in dataset.splits.values() for s in samples]
    results = decode_samples(all_samples, cache_dir=cache_dir, workers=workers)

    skipped = []
    unusable: set[Path] = set()
    for split, samples in dataset.splits.items():
        for sample in samples:
            result = results[sample.sha256]
            if not result.ok:
                unusable.add(sample.path)
                skipped.append(
                    {
                        "split": split,
                        "label": sample.label,
                        "path": str(sample.path),
                        "reason": result.reason,
                        "detail": result.detail,
                    }
                )
    usable = dataset.without(unusable)
    counts = usable.counts()
    warnings: list[str] = []
    if skipped:
        warnings.append(f"{len(skipped)} file(s) cannot be used and are skipped (see 'skipped')")

    exact, near = _cross_split_duplicates(usable, results)
    if exact:
        warnings.append(
            f"{len(exact)} exact duplicate(s) across splits: the numbers of the later split are "
            "inflated"
        )
    if near:
        warnings.append(
            f"{len(near)} near-duplicate pair(s) across splits (perceptual hash within "
            f"{NEAR_DUPLICATE_DISTANCE} bits): check them for leakage"
        )

    tiny = []
    for split, samples in usable.splits.items():
        for sample in samples:
            result = results[sample.sha256]
            if min(result.width, result.height) < TINY_SIDE:
                tiny.append(
                    {
                        "split": split,
                        "path": str(sample.path),
                        "width": result.width,
                        "height": result.height,
                    }
                )
    if tiny:
        warnings.append(
            f"{len(tiny)} tiny image(s) (shorter side under {TINY_SIDE} px) are upscaled to 224"
        )

    for split, per_label in counts.items():
        empty = [label for label, n in per_label.items() if n == 0]
        if empty:
            warnings.append(f"{split}: no usable images for {empty}")
        present = [n for n in per_label.values() if n > 0]
        if present and max(present) > IMBALANCE_RATIO * min(present):
            largest = max(per_label, key=per_label.get)
            smallest = min((lb for lb in per_label if per_label[lb] > 0), key=per_label.get)
            warnings.append(
                f"{split}: class imbalance — {largest} has {per_label[largest]} images, "
                f"{smallest} has {per_label[smallest]}"
            )

    report = {
        "data_dir": str(dataset.root),
        "layout": dataset.layout,
        "labels": list(dataset.labels),
        "counts": counts,
        "totals": {split: sum(per_label.values()) for split, per_label in counts.items()},
        "skipped": skipped,
        "duplicates": {
            "exact": exact[:_MAX_LISTED],
            "near": near[:_MAX_LISTED],
            "exact_total": len(exact),
            "near_total": len(near),
            "near_distance_bits": NEAR_DUPLICATE_DISTANCE,
        },
        "tiny": tiny[:_MAX_LISTED],
        "tiny_total": len(tiny),
        "warnings": warnings,
        "notes": list(dataset.notes),
        # More training data (--data given more than once), and how much came from review.
        "extra": [extra.summary() for extra in dataset.extra],
        "from_review": _from_review(usable),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / AUDIT_JSON).write_text(json.dumps(report, indent=2) + "\n")
        plot_counts(counts, out_dir / AUDIT_FIGURE)
    return AuditResult(report=report, unusable=frozenset(unusable), results=results)


def _cross_split_duplicates(
    dataset: Dataset, results: dict[str, DecodeResult]
) -> tuple[list[dict], list[dict]]:
    """Exact (same sha256) and near (phash distance) duplicates between *every pair* of splits.

    With roles (train, selection, calibration, held_out) a copy of a training photo among the
    held-out ones inflates the reported numbers as surely as one in val did; every pair is
    compared, each pair once, in the order the splits are listed."""
    exact: list[dict] = []
    near: list[dict] = []
    names = [name for name, samples in dataset.splits.items() if samples]
    hashes = {
        name: np.array(
            [int(results[s.sha256].phash, 16) for s in dataset.splits[name]], dtype=np.uint64
        )
        for name in names
    }
    for position, first in enumerate(names):
        by_digest: dict[str, list[Path]] = defaultdict(list)
        for sample in dataset.splits[first]:
            by_digest[sample.sha256].append(sample.path)
        for second in names[position + 1 :]:
            for sample in dataset.splits[second]:
                for other in by_digest.get(sample.sha256, ()):
                    exact.append(_pair(first, other, second, sample.path))
                value = np.uint64(int(results[sample.sha256].phash, 16))
                distances = np.bitwise_count(np.bitwise_xor(hashes[first], value))
                for index in np.flatnonzero(distances <= NEAR_DUPLICATE_DISTANCE):
                    other = dataset.splits[first][index]
                    if other.sha256 == sample.sha256:
                        continue  # already an exact duplicate
                    near.append(
                        {
                            **_pair(first, other.path, second, sample.path),
                            "distance_bits": int(distances[index]),
                        }
                    )
    return exact, near


def _pair(first: str, first_path: Path, second: str, second_path: Path) -> dict:
    # "split"/"path" name the later split's photo and "train_path" the earlier one, as before
    # (when only train was compared with val and test); "splits" names both.
    return {
        "splits": [first, second],
        "split": second,
        "path": str(second_path),
        "train_path": str(first_path),
    }


def plot_counts(counts: dict[str, dict[str, int]], path: Path) -> None:
    """A grouped bar chart of images per label and split (the reference's figures 1–2)."""
    import matplotlib  # noqa: PLC0415 — matplotlib loads only when a figure is drawn

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415 — matplotlib loads only when a figure is drawn

    labels = sorted({label for per_label in counts.values() for label in per_label})
    splits = list(counts)
    positions = np.arange(len(labels))
    width = 0.8 / max(len(splits), 1)
    figure, axes = pyplot.subplots(figsize=(max(8, len(labels) * 0.7), 4.5))
    for offset, split in enumerate(splits):
        values = [counts[split].get(label, 0) for label in labels]
        axes.bar(positions + offset * width, values, width, label=split)
    axes.set_xticks(positions + width * (len(splits) - 1) / 2)
    axes.set_xticklabels(labels, rotation=45, ha="right")
    axes.set_ylabel("images")
    axes.set_title("Images per label and split")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _from_review(dataset: Dataset) -> int:
    """Train images that came from a reviewed-dataset export."""
    reviewed = {str(extra.root) for extra in dataset.extra if extra.reviewed}
    return sum(1 for sample in dataset.splits.get("train", ()) if sample.source in reviewed)


def print_report(report: dict, stream=None) -> None:
    """A human-readable summary of an audit report."""
    stream = stream or sys.stdout
    print(f"audit of {report['data_dir']} ({report['layout']} layout)", file=stream)
    header = "label".ljust(22) + "".join(split.rjust(8) for split in report["counts"])
    print(header, file=stream)
    for label in report["labels"]:
        row = label.ljust(22) + "".join(
            str(per_label.get(label, 0)).rjust(8) for per_label in report["counts"].values()
        )
        print(row, file=stream)
    print(
        "total".ljust(22) + "".join(str(n).rjust(8) for n in report["totals"].values()),
        file=stream,
    )
    for extra in report.get("extra", []):
        kind = "reviewed photos" if extra["reviewed"] else "photos"
        line = f"train: +{extra['added_total']} {kind} from {extra['root']}"
        if extra["dropped_same_bytes_as_evaluation"]:
            line += (
                f" ({extra['dropped_same_bytes_as_evaluation']} dropped: same bytes as val/test)"
            )
        print(line, file=stream)
    if report.get("extra"):
        print(f"from review: {report.get('from_review', 0)} usable training images", file=stream)
    for item in report["skipped"][:20]:
        print(f"  skipped {item['path']}: {item['reason']}", file=stream)
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=stream)
