"""Real photos, real backbone: recipes side by side on held-out grocery photos (not a test).

``python -m bench.real_photos`` (``make test-real`` runs it) uses ``../shared/real`` — ImageNet
MobileNetV2 no-top weights and the Grocery Store dataset (train 2,640 / val 296 photos, 43 labels;
see that folder's README) — and prints one row per recipe:

    val and held-out accuracy, top-3, macro-F1 (labels present), ECE before/after temperature,
    review threshold (Clopper-Pearson, fitted on val), coverage and precision on held-out photos,
    the old point-estimate threshold's held-out precision, int8 agreement and accuracy, wall time
    per phase

and the unfamiliarity scores' AUROC / FPR at 95 % familiar recall (near: grocery labels held out
of training; far: generated drawings of baby products from ``sample_data.photos``).

Protocol (what training does): val is split by content hash into *val* (checkpoint choice,
temperature, threshold) and *held-out* (every reported number; never trained or fitted on).
The backbone runs once per image and view (frozen-feature cache, as ``--feature-cache-views``);
each recipe's head trains on the same cached features, so recipes differ only in the head.

Recipes (same backbone; every head is far cheaper than the backbone at inference):

* ``reference``: Conv2D 128 3×3 → MaxPool → Flatten → Dropout 0.2 → Dense 128 → Dense (softmax),
  Adam 1e-3, ReduceLROnPlateau, best val accuracy — the reference exactly;
* ``gap``: GlobalAveragePooling → Dropout 0.3 → Dense (softmax) — ``--head gap`` of training;
* ``gap_ls``: the same with label smoothing 0.1 (benchmark only);
* ``gap_mlp``: GlobalAveragePooling → Dense 256 → Dropout 0.4 → Dense (softmax), smoothing 0.1.

Results: ``bench/results/real_photos.json`` and the table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

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
RESULTS: Final[Path] = REPOSITORY_ROOT / "bench" / "results" / "real_photos.json"
RECIPES: Final[tuple[str, ...]] = ("reference", "gap", "gap_ls", "gap_mlp")
SMOOTHED: Final[frozenset[str]] = frozenset({"gap_ls", "gap_mlp"})


def real_material_missing() -> str | None:
    """One line saying why the real tier cannot run here, or None."""
    if not WEIGHTS.is_file() or not (GROCERY / "train").is_dir():
        return f"real material not found at {REAL_DIR} (ImageNet weights + grocery photos)"
    return None


# --- heads -------------------------------------------------------------------------------------


def build_recipe_head(recipe: str, feature_shape: tuple[int, ...], classes: int):
    import keras
    from keras import layers

    from model_build.training.model import build_head

    if recipe in ("reference", "gap"):  # exactly what python -m model_build.train --head builds
        return build_head(feature_shape, classes, kind=recipe)
    features = keras.Input(shape=feature_shape, name="features")
    x = layers.GlobalAveragePooling2D(name="head_gap")(features)
    if recipe == "gap_ls":
        x = layers.Dropout(0.3, name="head_dropout")(x)
    elif recipe == "gap_mlp":
        x = layers.Dense(256, activation="relu", name="head_dense")(x)
        x = layers.Dropout(0.4, name="head_dropout")(x)
    else:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {RECIPES}")
    logits = layers.Dense(classes, name="logits")(x)
    outputs = layers.Activation("softmax", name="probabilities")(logits)
    return keras.Model(features, outputs, name="head")


def train_head(
    recipe: str,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    classes: int,
    *,
    epochs: int,
    seed: int = 0,
    batch_size: int = 32,
):
    """Train a head on cached features; keep the weights of the best val-accuracy epoch."""
    import keras

    keras.utils.set_random_seed(seed)
    head = build_recipe_head(recipe, tuple(train_features.shape[1:]), classes)
    smoothing = 0.1 if recipe in SMOOTHED else 0.0
    head.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
        metrics=["accuracy"],
    )
    best = {"accuracy": -1.0, "weights": None, "epoch": 0}

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            value = float((logs or {}).get("val_accuracy", 0.0))
            if value > best["accuracy"]:
                best.update(accuracy=value, weights=self.model.get_weights(), epoch=epoch + 1)

    one_hot = np.eye(classes, dtype=np.float32)
    head.fit(
        np.asarray(train_features, dtype=np.float32),
        one_hot[train_labels],
        validation_data=(np.asarray(val_features, dtype=np.float32), one_hot[val_labels]),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[
            KeepBest(),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
        ],
    )
    head.set_weights(best["weights"])
    return head, best["epoch"]


def predict(head, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate(
        [
            np.asarray(head(np.asarray(features[i : i + batch_size], np.float32), training=False))
            for i in range(0, len(features), batch_size)
        ]
    ).astype(np.float64)


def logits_of(head, features: np.ndarray) -> np.ndarray | None:
    import keras

    try:
        layer = head.get_layer("logits")
    except ValueError:
        return None
    sub = keras.Model(head.inputs, layer.output)
    return predict(sub, features)


# --- data and features ---------------------------------------------------------------------------


def load_data(data_dir: Path, label_limit: int | None, holdout_fraction: float = 0.5):
    from model_build.data.dataset import discover
    from model_build.data.prepare import prepare_split
    from model_build.data.splits import assign_roles

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


def backbone_model(weights: Path, classes: int):
    from model_build.training.model import build_model

    return build_model("mobilenet_v2", num_classes=classes, weights=str(weights))


def features_for(model, pixels: np.ndarray, path: Path, *, views: int) -> np.ndarray:
    from model_build.training.feature_cache import compute_features

    if path.is_file():
        from model_build.data.rowfile import RowFile

        return RowFile(path)
    return compute_features(model, pixels, path, views=views, seed=0, batch_size=32)


def far_unfamiliar_pixels(count: int) -> np.ndarray:
    """Generated drawings of baby products (the demo's sample data), through the image contract."""
    import io

    from contracts.image import image_to_tensor
    from sample_data.photos import LABELS, draw_sample_image

    rng = np.random.default_rng(123)
    images = []
    for index in range(count):
        buffer = io.BytesIO()
        draw_sample_image(LABELS[index % len(LABELS)], rng, 256).save(buffer, format="JPEG")
        images.append(image_to_tensor(buffer.getvalue()))
    return np.stack(images)


# --- numbers -------------------------------------------------------------------------------------


def recipe_row(
    fit_probs: np.ndarray,
    fit_labels: np.ndarray,
    eval_probs: np.ndarray,
    eval_labels: np.ndarray,
    labels: list[str],
    *,
    target_precision: float,
    confidence: float,
) -> dict[str, Any]:
    from model_build.evaluation.metrics import classification_report, top_k_accuracy
    from model_build.evaluation.thresholds import fit_and_measure

    calibration = fit_and_measure(
        fit_probs,
        fit_labels,
        eval_probs,
        eval_labels,
        target_precision=target_precision,
        confidence=confidence,
    )
    report = classification_report(eval_labels, eval_probs.argmax(1), labels)
    return {
        "val_accuracy": float(np.mean(fit_probs.argmax(1) == fit_labels)),
        "held_out_accuracy": report["accuracy"],
        "held_out_top3": top_k_accuracy(eval_probs, eval_labels, 3),
        "held_out_macro_f1": report["macro avg"]["f1-score"],
        "ece_before": calibration["ece_before"],
        "ece_after": calibration["ece_after"],
        "temperature": calibration["temperature"],
        "threshold": calibration["review_threshold"],
        "target_reached": calibration["target_reached"],
        "held_out_coverage": calibration["coverage"],
        "held_out_precision": calibration["precision_at_threshold"],
        "old_rule_threshold": calibration["point_estimate"]["review_threshold"],
        "old_rule_val_precision": calibration["point_estimate"]["precision_fit"],
        "old_rule_held_out_precision": calibration["point_estimate"]["precision"],
        "old_rule_held_out_coverage": calibration["point_estimate"]["coverage"],
    }


def int8_row(
    model, head, train_pixels, fit_pixels, fit_labels, eval_pixels, eval_labels, *, target
) -> dict[str, Any]:
    """Full model (scaling + backbone + this head) → TFLite float32 and int8; held-out gate."""
    import keras

    from model_build.release.export import (
        convert_float32,
        convert_int8,
        keras_predict,
        tflite_predict,
    )
    from model_build.release.int8_gate import gate_int8
    from model_build.training.model import parts_of

    parts = parts_of(model)
    inputs = model.inputs[0]
    full = keras.Model(inputs, head(parts.backbone(parts.scaling(inputs), training=False)))
    started = time.monotonic()
    float_bytes = convert_float32(full)
    keras_eval = keras_predict(full, eval_pixels)
    float_fit, float_eval = (
        tflite_predict(float_bytes, fit_pixels),
        tflite_predict(float_bytes, eval_pixels),
    )
    picks = np.random.default_rng(0).choice(len(train_pixels), min(200, len(train_pixels)), False)
    int8_bytes = convert_int8(full, train_pixels[np.sort(picks)])
    int8_fit, int8_eval = (
        tflite_predict(int8_bytes, fit_pixels),
        tflite_predict(int8_bytes, eval_pixels),
    )
    gate = gate_int8(
        float_fit=float_fit,
        int8_fit=int8_fit,
        fit_labels=fit_labels,
        float_eval=float_eval,
        int8_eval=int8_eval,
        eval_labels=eval_labels,
        target_precision=target,
    )
    return {
        "float32_keras_agreement": float(np.mean(keras_eval.argmax(1) == float_eval.argmax(1))),
        "int8_agreement": gate["int8_agreement_held_out"],
        "int8_held_out_accuracy": gate["int8_held_out"]["accuracy"],
        "float32_held_out_accuracy": gate["float32_held_out"]["accuracy"],
        "int8_published": gate["int8_published"],
        "int8_rejected_because": gate["int8_rejected_because"],
        "int8_temperature": gate["int8_calibration"]["temperature"],
        "int8_threshold": gate["int8_calibration"]["review_threshold"],
        "old_gate_would_publish": gate["int8_agreement_held_out"] >= 0.99,
        "seconds": time.monotonic() - started,
    }


def unfamiliarity_rows(
    pooled: dict[str, np.ndarray],
    labels_of: dict[str, np.ndarray],
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    far_pooled: np.ndarray,
    far_features: np.ndarray,
    classes: int,
    *,
    held_labels: list[int],
    epochs: int,
) -> dict[str, Any]:
    """Train the ``gap_ls`` head without ``held_labels``; score familiar vs near vs far photos."""
    from model_build.evaluation.unfamiliarity import (
        NearestNeighbours,
        energy_score,
        fit_mahalanobis,
        msp_score,
        separation,
    )

    held = np.isin(np.arange(classes), held_labels)
    keep_train = ~held[train_labels]
    keep_val = ~held[val_labels]
    remap = -np.ones(classes, dtype=np.int64)
    remap[~held] = np.arange((~held).sum())
    head, _ = train_head(
        "gap_ls",  # has a logits layer, for the energy score
        train_features[np.flatnonzero(keep_train)],
        remap[train_labels[keep_train]],
        val_features[np.flatnonzero(keep_val)],
        remap[val_labels[keep_val]],
        int((~held).sum()),
        epochs=epochs,
    )
    familiar_mask = ~held[labels_of["holdout"]]
    familiar = np.asarray(pooled["holdout_features"])[familiar_mask]
    near = np.concatenate(
        [np.asarray(pooled[f"{s}_features"])[held[labels_of[s]]] for s in ("holdout", "val")]
    )
    familiar_maps = np.asarray(pooled["holdout_maps"])[familiar_mask]
    near_maps = np.concatenate(
        [np.asarray(pooled[f"{s}_maps"])[held[labels_of[s]]] for s in ("holdout", "val")]
    )
    train_pooled = np.asarray(pooled["train_features"])
    first_view = slice(0, len(train_pooled))  # view 0 of each training photo
    train_kept = train_pooled[keep_train[first_view]]
    mahalanobis = fit_mahalanobis(train_kept, train_labels[first_view][keep_train[first_view]])
    knn = NearestNeighbours.fit(train_kept)
    scores = {
        "msp": lambda f, m: msp_score(predict(head, m)),
        "energy": lambda f, m: energy_score(logits_of(head, m)),
        "mahalanobis": lambda f, m: mahalanobis.score(f),
        "knn": lambda f, m: knn.score(f),
    }
    result = {"held_out_labels": int(held.sum()), "scores": {}}
    for name, score in scores.items():
        s_familiar = score(familiar, familiar_maps)
        result["scores"][name] = {
            "near": separation(s_familiar, score(near, near_maps)),
            "far": separation(s_familiar, score(far_pooled, far_features)),
        }
    return result


# --- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from model_build.data.holdout import HOLDOUT_SPLIT

    timings: dict[str, float] = {}
    started = time.monotonic()
    _, labels, splits = load_data(Path(args.data), args.labels)
    timings["prepare_s"] = time.monotonic() - started
    train, val, held_out = splits["train"], splits["val"], splits[HOLDOUT_SPLIT]
    classes = len(labels)
    print(
        f"real photos: {classes} labels, train {len(train)}, val {len(val)}, "
        f"held-out {len(held_out)} (content-hash half of val)",
        flush=True,
    )
    cache = Path(args.cache) / f"labels{args.labels or 'all'}"
    started = time.monotonic()
    model = backbone_model(Path(args.weights), classes)
    train_maps = features_for(
        model, train.pixels, cache / f"train_{args.views}.npy", views=args.views
    )
    val_maps = features_for(model, val.pixels, cache / "val.npy", views=0)
    held_maps = features_for(model, held_out.pixels, cache / "holdout.npy", views=0)
    timings["features_s"] = time.monotonic() - started
    train_labels = np.tile(train.label_indices, args.views)

    results: dict[str, Any] = {
        "labels": classes,
        "images": {"train": len(train), "val": len(val), "held_out": len(held_out)},
        "views": args.views,
        "epochs": args.epochs,
        "target_precision": args.target_precision,
        "threshold_confidence": args.confidence,
        "recipes": {},
        "timings": timings,
    }
    heads = {}
    for recipe in args.recipes:
        started = time.monotonic()
        head, epoch = train_head(
            recipe, train_maps, train_labels, val_maps, val.label_indices, classes,
            epochs=args.epochs,
        )  # fmt: skip
        trained = time.monotonic() - started
        fit_probs, eval_probs = predict(head, val_maps), predict(head, held_maps)
        row = recipe_row(
            fit_probs, val.label_indices, eval_probs, held_out.label_indices, labels,
            target_precision=args.target_precision, confidence=args.confidence,
        )  # fmt: skip
        row.update(best_epoch=epoch, train_head_s=trained, trainable_parameters=head.count_params())
        row["held_out_correct"] = (
            (eval_probs.argmax(1) == held_out.label_indices).astype(int).tolist()
        )
        heads[recipe] = head
        results["recipes"][recipe] = row
        print(f"{recipe}: {json.dumps(row)}", flush=True)
    reference = results["recipes"].get("reference")
    for recipe, row in results["recipes"].items():
        if reference is not None and recipe != "reference":
            row["vs_reference"] = paired_difference(
                np.array(row["held_out_correct"]), np.array(reference["held_out_correct"])
            )
    if args.int8:
        for recipe in args.int8_recipes or args.recipes[:1]:
            row = int8_row(
                model, heads[recipe], train.pixels, val.pixels, val.label_indices,
                held_out.pixels, held_out.label_indices, target=args.target_precision,
            )  # fmt: skip
            results["recipes"][recipe]["int8"] = row
            print(f"{recipe} int8: {json.dumps(row)}", flush=True)
    if args.unfamiliar:
        started = time.monotonic()
        count = len(train)
        pooled = {
            "train_features": np.asarray(train_maps[:count], np.float32).mean(axis=(1, 2)),
            "val_features": np.asarray(val_maps, np.float32).mean(axis=(1, 2)),
            "holdout_features": np.asarray(held_maps, np.float32).mean(axis=(1, 2)),
            "val_maps": val_maps,
            "holdout_maps": held_maps,
        }
        far_pixels = far_unfamiliar_pixels(args.far_images)
        far_maps = features_for(model, far_pixels, cache / f"far_{args.far_images}.npy", views=0)
        far_pooled = np.asarray(far_maps, np.float32).mean(axis=(1, 2))
        held_labels = list(range(0, classes, max(classes // args.near_labels, 1)))[
            : args.near_labels
        ]
        results["unfamiliarity"] = unfamiliarity_rows(
            pooled,
            {"val": val.label_indices, "holdout": held_out.label_indices},
            train_maps, train_labels, val_maps, val.label_indices,
            far_pooled, far_maps, classes, held_labels=held_labels, epochs=args.epochs,
        )  # fmt: skip
        results["unfamiliarity"]["near_labels"] = [labels[i] for i in held_labels]
        results["unfamiliarity"]["far"] = f"{args.far_images} generated baby-product drawings"
        timings["unfamiliarity_s"] = time.monotonic() - started
        print(f"unfamiliarity: {json.dumps(results['unfamiliarity'])}", flush=True)
    return results


def paired_difference(
    candidate: np.ndarray, reference: np.ndarray, resamples: int = 10000
) -> dict[str, float]:
    """Held-out accuracy difference with a paired bootstrap 95 % interval (same photos)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(candidate), (resamples, len(candidate)))
    differences = candidate[picks].mean(axis=1) - reference[picks].mean(axis=1)
    low, high = np.quantile(differences, [0.025, 0.975])
    return {
        "difference": float(candidate.mean() - reference.mean()),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "only_candidate_right": int(((candidate == 1) & (reference == 0)).sum()),
        "only_reference_right": int(((candidate == 0) & (reference == 1)).sum()),
    }


def print_table(results: dict[str, Any]) -> None:
    def f(value: Any, digits: int = 3) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    print(
        "\n| recipe | val acc | held-out acc | top-3 | macro-F1 | ECE before → after | threshold "
        "| held-out coverage | held-out precision | old rule: held-out precision | int8 agreement "
        "| int8 acc (f32) | int8 gate | head train s |"
    )
    print("|" + "---|" * 14)
    for name, row in results["recipes"].items():
        int8 = row.get("int8") or {}
        print(
            f"| {name} | {f(row['val_accuracy'])} | {f(row['held_out_accuracy'])} | "
            f"{f(row['held_out_top3'])} | {f(row['held_out_macro_f1'])} | "
            f"{f(row['ece_before'])} → {f(row['ece_after'])} | {f(row['threshold'])} | "
            f"{f(row['held_out_coverage'])} | {f(row['held_out_precision'])} | "
            f"{f(row['old_rule_held_out_precision'])} (val {f(row['old_rule_val_precision'])}) | "
            f"{f(int8.get('int8_agreement'))} | {f(int8.get('int8_held_out_accuracy'))} "
            f"({f(int8.get('float32_held_out_accuracy'))}) | "
            f"{'—' if not int8 else ('yes' if int8['int8_published'] else 'no')} | "
            f"{row['train_head_s']:.0f} |"
        )
    for name, row in results["recipes"].items():
        versus = row.get("vs_reference")
        if versus:
            print(
                f"{name} − reference on held-out: {versus['difference']:+.3f} "
                f"(paired bootstrap 95 % CI {versus['ci95_low']:+.3f} … "
                f"{versus['ci95_high']:+.3f}; "
                f"{versus['only_candidate_right']} photos only {name} got right, "
                f"{versus['only_reference_right']} only reference)"
            )
    unfamiliar = results.get("unfamiliarity")
    if unfamiliar:
        near = ", ".join(unfamiliar["near_labels"])
        print(f"\nunfamiliarity (near: {near}; far: {unfamiliar['far']})")
        print("| score | near AUROC | near FPR@95 | far AUROC | far FPR@95 |")
        print("|---|---|---|---|---|")
        for name, row in unfamiliar["scores"].items():
            near, far = row["near"], row["far"]
            print(
                f"| {name} | {f(near['auroc'])} | {f(near['fpr_at_95_familiar_recall'])} "
                f"| {f(far['auroc'])} | {f(far['fpr_at_95_familiar_recall'])} |"
            )
    print("timings:", {k: round(v) for k, v in results["timings"].items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_photos", description=__doc__)
    parser.add_argument("--data", default=str(GROCERY))
    parser.add_argument("--weights", default=str(WEIGHTS))
    parser.add_argument("--labels", type=int, default=None, help="first N labels only")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--int8-recipes", nargs="*", default=None)
    parser.add_argument("--unfamiliar", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--near-labels", type=int, default=6)
    parser.add_argument("--far-images", type=int, default=100)
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--cache", default=str(REPOSITORY_ROOT / ".cache" / "real_photos"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    missing = real_material_missing()
    if missing and args.data == str(GROCERY):
        print(f"skipped: {missing}")
        return 0
    started = time.monotonic()
    results = run(args)
    results["timings"]["total_s"] = time.monotonic() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message="The structure of `inputs`")
    sys.exit(main())
