"""Unfamiliarity scores ("not one of ours") and how well they separate familiar from unfamiliar.

Every score is *higher for less familiar* photos:

* ``msp``: 1 − the top softmax probability (Hendrycks & Gimpel 2017); free, from the output;
* ``energy``: −logsumexp(logits) (Liu et al. 2020); free when the logits are available;
* ``mahalanobis``: the smallest squared Mahalanobis distance of the pooled backbone features to a
  label's mean, one covariance shared by all labels, shrunk (Lee et al. 2018) — the one shipped
  (:mod:`contracts.unfamiliarity`);
* ``knn``: the distance of the L2-normalised pooled features to their k-th nearest training
  photo (Sun et al. 2022).

:func:`separation` gives AUROC (familiar vs unfamiliar; 0.5 is chance) and the false-positive
rate at 95 % recall of familiar photos: the threshold lets 95 % of familiar photos through, and
the FPR is the share of unfamiliar photos that get through with them.
Pure numpy; ``bench/real_photos.py`` measures them on real photos.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from contracts.image import ImageRejected, image_to_tensor
from contracts.unfamiliarity import UNFAMILIARITY_FILE, UnfamiliarityScorer
from model_build.data.prepare import run_split, subset
from model_build.run_folder import RunFolder
from sample_data.photos import LABELS, draw_sample_image

FAMILIAR_RECALL: Final[float] = 0.95
SHRINKAGE: Final[float] = 0.1
KNN_K: Final[int] = 10
# The shipped far-photo score: Mahalanobis on L2-normalised pooled features. Chosen on the
# leave-labels-out folds of bench/real_photos.py (docs/evaluation.md, "On real photos").
NORMALISED: Final[bool] = True


def msp_score(probabilities: np.ndarray) -> np.ndarray:
    return 1.0 - np.asarray(probabilities, dtype=np.float64).max(axis=1)


def energy_score(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))


def fit_mahalanobis(
    features: np.ndarray,
    labels: np.ndarray,
    shrinkage: float = SHRINKAGE,
    *,
    normalised: bool = NORMALISED,
) -> UnfamiliarityScorer:
    """Label means and the shared, shrunk precision matrix of pooled features (threshold +inf);
    ``normalised``: of L2-normalised features (the scorer normalises what it scores)."""
    features = np.asarray(features, dtype=np.float64)
    if normalised:
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / max(len(features) - len(classes), 1)
    # Shrink towards the average variance: D = 1280 dimensions from a few thousand photos.
    target = np.trace(covariance) / covariance.shape[0]
    covariance = (1 - shrinkage) * covariance + shrinkage * target * np.eye(len(covariance))
    precision = np.linalg.inv(covariance)
    precision = (precision + precision.T) / 2
    return UnfamiliarityScorer(
        means=means.astype(np.float32),
        precision=precision.astype(np.float32),
        threshold=np.inf,
        normalised=normalised,
    )


@dataclass(frozen=True)
class Unfamiliarity:
    """What evaluation gets back: the report block and the worker's flags on the photos."""

    report: dict[str, Any]
    calibration_flags: np.ndarray
    evaluation_flags: np.ndarray


@dataclass(frozen=True)
class NearestNeighbours:
    bank: np.ndarray  # [M, D] L2-normalised training features
    k: int = KNN_K

    @classmethod
    def fit(cls, features: np.ndarray, k: int = KNN_K) -> NearestNeighbours:
        return cls(_normalise(features), k)

    def score(self, features: np.ndarray) -> np.ndarray:
        similarity = _normalise(features) @ self.bank.T
        k = min(self.k, self.bank.shape[0])
        kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
        return np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))


def _normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def auroc(familiar: np.ndarray, unfamiliar: np.ndarray) -> float:
    """P(score of an unfamiliar photo > score of a familiar one), ties counting half."""
    familiar, unfamiliar = np.asarray(familiar), np.asarray(unfamiliar)
    if not len(familiar) or not len(unfamiliar):
        return float("nan")
    scores = np.concatenate([familiar, unfamiliar])
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties (Mann-Whitney U).
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[len(familiar) :].sum() - len(unfamiliar) * (len(unfamiliar) + 1) / 2.0
    return float(u / (len(familiar) * len(unfamiliar)))


def fpr_at_familiar_recall(
    familiar: np.ndarray, unfamiliar: np.ndarray, recall: float = FAMILIAR_RECALL
) -> tuple[float, float]:
    """(threshold, FPR): the threshold keeps ``recall`` of familiar photos at or below it."""
    threshold = float(np.quantile(np.asarray(familiar), recall))
    return threshold, float(np.mean(np.asarray(unfamiliar) <= threshold))


def separation(familiar: np.ndarray, unfamiliar: np.ndarray) -> dict[str, float]:
    threshold, fpr = fpr_at_familiar_recall(familiar, unfamiliar)
    return {
        "auroc": auroc(familiar, unfamiliar),
        "fpr_at_95_familiar_recall": fpr,
        "threshold": threshold,
        "familiar": len(familiar),
        "unfamiliar": len(unfamiliar),
    }


# --- fitted at training time ---------------------------------------------------------------------


def pooled_feature_model(model: Any) -> Any | None:
    """pixels 0..255 → global average of the backbone's last feature map (None without one)."""
    from model_build.training.model import parts_of  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    parts = parts_of(model)
    return parts.pooled_features() if parts.has_backbone else None


def pooled_features(extractor: Any, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    if len(pixels) == 0:
        return np.zeros((0, int(extractor.outputs[0].shape[-1])), np.float32)
    return np.concatenate(
        [
            np.asarray(extractor(pixels[i : i + batch_size].astype(np.float32), training=False))
            for i in range(0, len(pixels), batch_size)
        ]
    )


def fit_scorer(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    familiar_recall: float = FAMILIAR_RECALL,
) -> UnfamiliarityScorer:
    """Mahalanobis on training photos; threshold = the ``familiar_recall`` quantile of val scores
    (familiar photos it was not fitted on), so about 5 % of familiar photos are flagged."""
    fitted = fit_mahalanobis(train_features, train_labels)
    threshold = float(np.quantile(fitted.score(val_features), familiar_recall))
    return UnfamiliarityScorer(fitted.means, fitted.precision, threshold, fitted.normalised)


def report(
    scorer: UnfamiliarityScorer,
    familiar_features: np.ndarray,
    unfamiliar_features: np.ndarray,
    unfamiliar_source: str,
) -> dict[str, Any]:
    """AUROC and FPR at 95 % familiar recall, plus the share flagged at the shipped threshold."""
    familiar = scorer.score(familiar_features)
    unfamiliar = scorer.score(unfamiliar_features)
    return {
        "method": "mahalanobis" + (" (L2-normalised features)" if scorer.normalised else ""),
        "threshold": scorer.threshold,
        "familiar_recall_target": FAMILIAR_RECALL,
        "unfamiliar_source": unfamiliar_source,
        **separation(familiar, unfamiliar),
        "familiar_flagged_at_threshold": float(np.mean(familiar > scorer.threshold)),
        "unfamiliar_flagged_at_threshold": float(np.mean(unfamiliar > scorer.threshold)),
    }


def generated_unfamiliar_pixels(count: int, seed: int = 123) -> np.ndarray:
    """Generated drawings of baby products (the demo's sample data) through the image contract:
    photos of another kind than real shop or product photos ("far" unfamiliar)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        buffer = io.BytesIO()
        draw_sample_image(LABELS[index % len(LABELS)], rng, 256).save(buffer, format="JPEG")
        images.append(image_to_tensor(buffer.getvalue()))
    return np.stack(images)


def fit_for_run(
    model: Any,
    run_dir: Any,
    *,
    train: tuple[np.ndarray, np.ndarray],
    val_images: np.ndarray,
    eval_images: np.ndarray,
    unfamiliar_images: np.ndarray,
    unfamiliar_source: str,
    val_features: np.ndarray | None = None,
    eval_features: np.ndarray | None = None,
) -> Unfamiliarity | None:
    """Fit the scorer on the run's photos, save ``unfamiliarity.npz``; the report block and the
    flags of the calibration and evaluation photos (the threshold walk leaves flagged ones out).

    ``val_features`` / ``eval_features``: the pooled features of those photos when the caller
    already has them (evaluation's two-output pass), so the backbone does not run on them again.
    None for a model without a MobileNetV2 backbone (the small demo CNN)."""
    extractor = pooled_feature_model(model)
    path = Path(run_dir) / UNFAMILIARITY_FILE
    if extractor is None:
        path.unlink(missing_ok=True)
        return None
    train_images, train_labels = train
    if val_features is None:
        val_features = pooled_features(extractor, val_images)
    if eval_features is None:
        eval_features = pooled_features(extractor, eval_images)
    scorer = fit_scorer(pooled_features(extractor, train_images), train_labels, val_features)
    scorer.save(path)
    block = {
        **report(
            scorer, eval_features, pooled_features(extractor, unfamiliar_images), unfamiliar_source
        ),
        "file": UNFAMILIARITY_FILE,
        "train_images": len(train_labels),
        "cut_fitted_on": "calibration",
    }
    return Unfamiliarity(
        report=block,
        calibration_flags=scorer.unfamiliar(val_features),
        evaluation_flags=scorer.unfamiliar(eval_features),
    )


UNFAMILIARITY_TRAIN_IMAGES: Final[int] = 2000
GENERATED_UNFAMILIAR: Final[int] = 100


def load_folder_pixels(folder: Any) -> np.ndarray:
    """Every decodable image under ``folder`` (recursively) through the image contract."""
    images = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            images.append(image_to_tensor(path.read_bytes()))
        except ImageRejected:
            continue
    if not images:
        raise ValueError(f"no decodable images under {folder}")
    return np.stack(images)


def evaluate_unfamiliarity(
    model: Any,
    run_dir: Any,
    data_dir: Any,
    val_images: np.ndarray,
    eval_images: np.ndarray,
    *,
    unfamiliar_dir: Any = None,
    train: Any = None,
    val_features: np.ndarray | None = None,
    eval_features: np.ndarray | None = None,
) -> Unfamiliarity | None:
    """The evaluation's hook: fit on up to 2,000 training photos, report against unfamiliar ones.

    ``train`` is the prepared train split training holds (a fixed random subset of it is used);
    ``None`` rebuilds that subset from the run folder's recorded split.
    """
    from model_build.training.model import parts_of  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    if not parts_of(model).has_backbone:  # the small demo CNN: no backbone features to score
        (Path(run_dir) / UNFAMILIARITY_FILE).unlink(missing_ok=True)
        return None
    if train is None:
        train = run_split(
            RunFolder(run_dir), "train", data_dir=data_dir, limit=UNFAMILIARITY_TRAIN_IMAGES
        )
    else:
        train = subset(train, UNFAMILIARITY_TRAIN_IMAGES)
    train = (np.asarray(train.pixels), train.label_indices)
    if unfamiliar_dir is not None:
        unfamiliar, source = load_folder_pixels(unfamiliar_dir), f"photos in {unfamiliar_dir}"
    else:
        unfamiliar = generated_unfamiliar_pixels(GENERATED_UNFAMILIAR)
        source = f"{GENERATED_UNFAMILIAR} generated baby-product drawings"
    return fit_for_run(
        model,
        run_dir,
        train=train,
        val_images=val_images,
        eval_images=eval_images,
        unfamiliar_images=unfamiliar,
        unfamiliar_source=source,
        val_features=val_features,
        eval_features=eval_features,
    )
