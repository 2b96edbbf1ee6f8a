"""The publish quality gate: never make a useless or a worse model ``latest`` by accident.

Before a version is written, :func:`quality_problems` looks at the run's evaluation and at the
destination's current ``latest`` and refuses (``publish_run`` raises, the command prints one line
and exits 2; ``--force`` publishes anyway) when

* **the model is near chance**: its skill over always answering the most common label of the
  evaluation data, ``(accuracy − majority share) / (1 − majority share)`` (Cohen's-kappa style),
  is below :data:`MIN_SKILL`. A frozen MobileNetV2 with random weights scored 0.098 on the
  grocery photos by predicting one class — exactly the majority share, skill 0;
* **it is worse than the current latest on the same evaluation data**: both manifests record the
  content hash of the images their numbers were measured on (``evaluation.data_sha256``); when
  they are equal and the new accuracy is lower, publishing would replace a better model.
  Different evaluation data cannot be compared, so that case is allowed and said.

A run without evaluation numbers (hand-made test folders) is not judged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import boto3

from contracts.artifact import (
    LATEST_FILE,
    MANIFEST_FILE,
    ArtifactError,
    Manifest,
    _s3_get,
    parse_latest,
    parse_manifest,
    s3_key,
    split_s3_uri,
)

MIN_SKILL: Final[float] = 0.2


def skill_over_majority(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """(skill, majority share) of the evaluation, or None when the metrics lack the numbers."""
    accuracy = metrics.get("accuracy")
    per_label = metrics.get("per_label")
    if not isinstance(accuracy, int | float) or not isinstance(per_label, dict) or not per_label:
        return None
    supports = [int(values.get("support", 0)) for values in per_label.values()]
    total = sum(supports)
    if total == 0:
        return None
    majority = max(supports) / total
    if majority >= 1.0:
        return (1.0 if accuracy >= 1.0 else 0.0), majority
    return (float(accuracy) - majority) / (1.0 - majority), majority


def read_latest_manifest(dest: str, s3_client: Any = None) -> Manifest | None:
    """The manifest ``latest.json`` points at under ``dest``, or None when nothing is published."""
    try:
        if dest.startswith("s3://"):
            bucket, prefix = split_s3_uri(dest)
            if s3_client is None:
                s3_client = boto3.client("s3")
            version = parse_latest(
                _s3_get(s3_client, bucket, s3_key(prefix, LATEST_FILE)), f"{dest}/{LATEST_FILE}"
            )
            raw = _s3_get(s3_client, bucket, s3_key(prefix, version, MANIFEST_FILE))
            return parse_manifest(raw, f"{dest}/{version}/{MANIFEST_FILE}")
        root = Path(dest)
        latest = root / LATEST_FILE
        if not latest.is_file():
            return None
        version = parse_latest(latest.read_bytes(), str(latest))
        path = root / version / MANIFEST_FILE
        return parse_manifest(path.read_bytes(), str(path))
    except (ArtifactError, OSError, ValueError):
        return None  # nothing (readable) published: nothing to compare with


def quality_problems(
    metrics: dict[str, Any], latest: Manifest | None, *, min_skill: float = MIN_SKILL
) -> tuple[list[str], list[str]]:
    """(problems that refuse publishing, notes to print)."""
    problems: list[str] = []
    notes: list[str] = []
    evaluation = metrics.get("evaluation") or {}
    where = f"{evaluation.get('split', 'val')} ({metrics.get('images', '?')} images)"
    skill = skill_over_majority(metrics)
    if skill is None:
        notes.append("quality gate: the run has no evaluation numbers; not judged")
        return problems, notes
    value, majority = skill
    if value < min_skill:
        problems.append(
            f"accuracy {metrics['accuracy']:.4f} on {where} is near chance (always answering the "
            f"most common label scores {majority:.4f}; skill {value:.2f} < {min_skill})"
        )
    if latest is None:
        return problems, notes
    ours = evaluation.get("data_sha256")
    theirs = (latest.evaluation or {}).get("data_sha256")
    latest_accuracy = latest.metrics.get("accuracy")
    if not ours or ours != theirs or not isinstance(latest_accuracy, int | float):
        notes.append(
            f"quality gate: latest {latest.version} was evaluated on other data; not compared"
        )
        return problems, notes
    if metrics["accuracy"] < latest_accuracy:
        problems.append(
            f"accuracy {metrics['accuracy']:.4f} is below latest {latest.version}'s "
            f"{latest_accuracy:.4f} on the same {where}"
        )
    return problems, notes


def describe(problems: list[str]) -> str:
    return "quality gate: " + "; ".join(problems) + " (--force publishes anyway)"
