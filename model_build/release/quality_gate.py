"""The publish gate: never make a useless or a worse model ``latest`` by accident.

Before a version is written, :func:`judge` decides, and ``publish_run`` refuses (the command prints
one line and exits 2; ``train --publish`` exits 3) unless ``--force``, which the manifest records
(``publish_gate.forced``):

* **near chance**: the candidate's skill over always answering the most common label of its
  held-out photos, ``(accuracy − majority share) / (1 − majority share)``, is below
  :data:`MIN_SKILL` (a frozen MobileNetV2 with random weights scored exactly the majority share);
* **worse than latest, like with like**: the latest published artifact is *re-evaluated on the
  candidate's held-out photos* — its own TFLite file, temperature, threshold and unfamiliarity
  score, exactly as the worker runs it — so both models are measured on the same photos whatever
  seed or dataset the latest was trained with (the held-out photos never depend on ``--seed``).
  Paired differences (candidate − latest, photo by photo) with a paired bootstrap 95 % interval
  decide: refused when the interval lies entirely below ``−margin`` for **accuracy**
  (:data:`ACCURACY_MARGIN`) or for **coverage at the target** (:data:`COVERAGE_MARGIN`), or when
  the latest met its target precision on these photos and the candidate does not (**target met**).
  A difference inside the noise of a few hundred photos is not a reason to refuse; a 0.70 model
  against a 0.90 latest is.

A run folder without recorded held-out photos (``data.json``; hand-made test folders) or without
evaluation numbers is not compared, and the gate says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from contracts import litert
from contracts.artifact import (
    MODEL_FILE,
    RUNTIME_FILES,
    UNFAMILIARITY_FILE,
    Artifact,
    ArtifactError,
    Calibration,
    load_artifact,
)
from contracts.scoring import apply_temperature
from contracts.unfamiliarity import UnfamiliarityScorer

MIN_SKILL: Final[float] = 0.2
ACCURACY_MARGIN: Final[float] = 0.01
COVERAGE_MARGIN: Final[float] = 0.02
RESAMPLES: Final[int] = 10_000


@dataclass(frozen=True)
class WorkerOutcome:
    """Per held-out photo: top-1 right, and auto-catalogued by the worker's rule."""

    correct: np.ndarray
    auto: np.ndarray
    target_precision: float

    @property
    def precision(self) -> float | None:
        return float(self.correct[self.auto].mean()) if self.auto.any() else None

    @property
    def target_met(self) -> bool:
        precision = self.precision
        return precision is not None and precision >= self.target_precision


def worker_outcome(
    model_file: Path,
    calibration: Calibration,
    scorer: UnfamiliarityScorer | None,
    pixels: np.ndarray,
    labels: np.ndarray,
) -> WorkerOutcome:
    """Run a published model file on labelled photos the way the worker does."""
    flagged = None
    if scorer is not None:
        flagged = scorer.unfamiliar(litert.predict(model_file, pixels, output="features"))
    return outcome_of(litert.predict(model_file, pixels), labels, calibration, flagged)


def outcome_of(
    probabilities: np.ndarray,
    labels: np.ndarray,
    calibration: Calibration,
    unfamiliar: np.ndarray | None = None,
) -> WorkerOutcome:
    """The worker's rule on a model's (uncalibrated) probabilities and unfamiliarity flags."""
    calibrated = apply_temperature(probabilities, calibration.temperature)
    flagged = np.zeros(len(labels), bool) if unfamiliar is None else np.asarray(unfamiliar, bool)
    return WorkerOutcome(
        correct=calibrated.argmax(1) == np.asarray(labels),
        auto=(calibrated.max(1) >= calibration.review_threshold) & ~flagged,
        target_precision=calibration.target_precision,
    )


def artifact_outcome(artifact: Artifact, pixels: np.ndarray, labels: np.ndarray) -> WorkerOutcome:
    scorer_path = artifact.unfamiliarity_path
    scorer = UnfamiliarityScorer.load(scorer_path) if scorer_path is not None else None
    return worker_outcome(
        artifact.model_path, artifact.calibration_for("float32"), scorer, pixels, labels
    )


def paired_interval(
    candidate: np.ndarray, latest: np.ndarray, resamples: int = RESAMPLES
) -> tuple[float, float, float]:
    """(difference of means, 95 % paired-bootstrap low, high), photo by photo (fixed seed)."""
    candidate = np.asarray(candidate, np.float64)
    latest = np.asarray(latest, np.float64)
    differences = candidate - latest
    if not len(differences):
        return 0.0, 0.0, 0.0
    picks = np.random.default_rng(0).integers(0, len(differences), (resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(differences.mean()), float(low), float(high)


@dataclass
class Decision:
    """What the gate found: refusals, notes, and the comparison (recorded in the manifest)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)
    forced: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "refused_because": self.problems,
            "forced": self.forced,
            "notes": self.notes,
            "accuracy_margin": ACCURACY_MARGIN,
            "coverage_margin": COVERAGE_MARGIN,
            "min_skill": MIN_SKILL,
            **({"versus_latest": self.comparison} if self.comparison else {}),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def read_latest(dest: str, s3_client: Any = None) -> Artifact | None:
    """The artifact ``latest.json`` points at under ``dest`` (runtime files), or None."""
    try:
        return load_artifact(dest, only=RUNTIME_FILES, s3_client=s3_client)
    except (ArtifactError, OSError, ValueError):
        return None  # nothing (readable) published: nothing to compare with


def judge(
    metrics: dict[str, Any],
    latest: Artifact | None,
    held_out: Callable[[], tuple[np.ndarray, np.ndarray] | None],
    candidate_outcome: Callable[[np.ndarray, np.ndarray], WorkerOutcome],
    *,
    min_skill: float = MIN_SKILL,
) -> Decision:
    """The decision. ``held_out()`` gives the candidate's held-out (pixels, labels) or None;
    ``candidate_outcome`` runs the candidate as the worker would."""
    decision = Decision()
    evaluation = metrics.get("evaluation") or {}
    where = f"{evaluation.get('split', 'held_out')} ({metrics.get('images', '?')} images)"
    skill = skill_over_majority(metrics)
    if skill is None:
        decision.notes.append("quality gate: the run has no evaluation numbers; not judged")
        return decision
    value, majority = skill
    if value < min_skill:
        decision.problems.append(
            f"accuracy {metrics['accuracy']:.4f} on {where} is near chance (always answering the "
            f"most common label scores {majority:.4f}; skill {value:.2f} < {min_skill})"
        )
    if latest is None:
        return decision
    photos = held_out()
    if photos is None:
        decision.notes.append(
            f"quality gate: the run records no held-out photos; latest {latest.version} not "
            "compared"
        )
        return decision
    if list(latest.labels) != list(metrics.get("labels") or latest.labels):
        decision.notes.append(
            f"quality gate: latest {latest.version} has other labels; not compared"
        )
        return decision
    pixels, labels = photos
    problems, decision.comparison = compare(
        candidate_outcome(pixels, labels), artifact_outcome(latest, pixels, labels), latest.version
    )
    decision.problems.extend(problems)
    return decision


def compare(
    ours: WorkerOutcome, theirs: WorkerOutcome, latest: str
) -> tuple[list[str], dict[str, Any]]:
    """(refusals, the comparison record) of two models run as the worker runs them on the same
    photos: paired differences on accuracy and coverage with the margins, and target met."""
    photos = len(ours.correct)
    accuracy = paired_interval(ours.correct, theirs.correct)
    coverage = paired_interval(ours.auto, theirs.auto)
    comparison = {
        "latest": latest,
        "photos": photos,
        "test": "paired bootstrap 95 % interval of candidate − latest, same photos",
        "accuracy": {"candidate": float(ours.correct.mean()),
                     "latest": float(theirs.correct.mean()),
                     "difference": accuracy[0], "interval": [accuracy[1], accuracy[2]]},
        "coverage": {"candidate": float(ours.auto.mean()), "latest": float(theirs.auto.mean()),
                     "difference": coverage[0], "interval": [coverage[1], coverage[2]]},
        "target_met": {"candidate": ours.target_met, "latest": theirs.target_met,
                       "candidate_precision": ours.precision, "latest_precision": theirs.precision},
    }  # fmt: skip
    problems = []
    if accuracy[2] < -ACCURACY_MARGIN:
        problems.append(
            f"accuracy {ours.correct.mean():.4f} is below latest {latest}'s "
            f"{theirs.correct.mean():.4f} on the same {photos} held-out photos (paired 95 % "
            f"interval {accuracy[1]:+.3f} … {accuracy[2]:+.3f}, margin {ACCURACY_MARGIN})"
        )
    if coverage[2] < -COVERAGE_MARGIN:
        problems.append(
            f"coverage {ours.auto.mean():.1%} is below latest {latest}'s "
            f"{theirs.auto.mean():.1%} on the same photos (paired 95 % interval "
            f"{coverage[1]:+.3f} … {coverage[2]:+.3f}, margin {COVERAGE_MARGIN})"
        )
    if theirs.target_met and not ours.target_met:
        problems.append(
            f"latest {latest} meets its target precision on these photos and this model "
            f"does not (precision {ours.precision if ours.precision is not None else 'none'})"
        )
    return problems, comparison


def candidate_outcome_of(run_dir: Path, calibration: Calibration):
    """The candidate run's float32 file as the worker runs it."""
    scorer_path = Path(run_dir) / UNFAMILIARITY_FILE
    scorer = UnfamiliarityScorer.load(scorer_path) if scorer_path.is_file() else None

    def outcome(pixels: np.ndarray, labels: np.ndarray) -> WorkerOutcome:
        return worker_outcome(Path(run_dir) / MODEL_FILE, calibration, scorer, pixels, labels)

    return outcome


def describe(problems: list[str]) -> str:
    return "quality gate: " + "; ".join(problems) + " (--force publishes anyway)"
