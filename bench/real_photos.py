"""Real photos, real backbone: the evaluation protocol on held-out grocery photos (not a test).

``python -m bench.real_photos`` (``make test-real`` runs it) uses ``../shared/real`` — ImageNet
MobileNetV2 no-top weights and the Grocery Store dataset (train 2,640 / val 296 photos, 43 labels;
see that folder's README) — and prints the protocol's table (docs/evaluation.md):

* **one role per split** (:mod:`model_build.data.splits`): the head fits on train minus a 10 %
  *selection* slice, which alone chooses the best epoch, LR drops and stopping; *calibration*
  (val minus the held-out half) fits temperature, threshold, int8 calibration and the
  unfamiliarity cut; *held_out* (the other half of val, by content hash, not by seed) reports;
* per recipe: held-out accuracy, top-3, macro-F1 (scikit-learn's definition), ECE, the certified
  threshold (the worker's rule: unfamiliar photos removed, fixed grid, Clopper–Pearson fixed
  sequence) and held-out coverage and precision with exact 95 % intervals, target met or not;
* the gates: the publish gate comparing each recipe with the first as "latest" on the same
  held-out photos (paired bootstrap, margins), and the int8 gate (its own calibration, coverage
  and precision within margin of float32's);
* unfamiliarity over leave-labels-out folds (every label held out once, ~6 per fold): near AUROC
  and FPR at 95 % familiar recall per score (max softmax, energy, Mahalanobis raw and on
  L2-normalised features, kNN), mean, range and a bootstrap interval over folds; far: generated
  drawings; and end to end, how many near-unfamiliar photos the shipped rule auto-catalogues.

The backbone runs once per image and view (frozen-feature cache, as ``--feature-cache-views``);
each recipe's head trains on the same cached features, so recipes differ only in the head.

Then the **fine-tuned recipes** (``--fine-tune-from``, :mod:`bench.fine_tuned_recipes`) beside
the frozen reference recipe: each is the whole ``python -m model_build.train`` command (its
backbone changes, so it cannot share the feature cache), evaluated on the same role splits, with
the paired interval of its held-out accuracy minus the reference's, training wall time and peak
memory, parameters, TFLite size and the worker latency ratio. ``--fine-tuned`` alone skips them;
``--reuse`` tabulates finished runs again.

Results: ``bench/results/real_photos.json`` and the tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

import keras
import numpy as np
from keras import layers

from bench import fine_tuned_recipes
from bench.real_material import GROCERY, REPOSITORY_ROOT, WEIGHTS, load_data, real_material_missing
from contracts.scoring import apply_temperature
from model_build.data.rowfile import RowFile
from model_build.evaluation.calibration import calibrate, clopper_pearson_interval, quality
from model_build.evaluation.metrics import classification_report, top_k_accuracy
from model_build.evaluation.unfamiliarity import (
    FAMILIAR_RECALL,
    NearestNeighbours,
    energy_score,
    fit_mahalanobis,
    generated_unfamiliar_pixels,
    msp_score,
    separation,
)
from model_build.release.export import convert_float32, convert_int8, keras_predict, tflite_predict
from model_build.release.int8_gate import gate_int8
from model_build.release.quality_gate import compare, outcome_of
from model_build.training.feature_cache import compute_features
from model_build.training.model import build_head, build_model, parts_of

RESULTS: Final[Path] = REPOSITORY_ROOT / "bench" / "results" / "real_photos.json"
RECIPES: Final[tuple[str, ...]] = ("reference", "gap", "gap_ls", "gap_mlp")
SMOOTHED: Final[frozenset[str]] = frozenset({"gap_ls", "gap_mlp"})


# --- heads -------------------------------------------------------------------------------------


def build_recipe_head(recipe: str, feature_shape: tuple[int, ...], classes: int):
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
    """Train a head on cached features; keep the weights of the best epoch on the *selection*
    features (``val_*`` in Keras' names): never the calibration or held-out photos."""

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
    try:
        layer = head.get_layer("logits")
    except ValueError:
        return None
    sub = keras.Model(head.inputs, layer.output)
    return predict(sub, features)


# --- data and features ---------------------------------------------------------------------------


def backbone_model(weights: Path, classes: int):
    return build_model("mobilenet_v2", num_classes=classes, weights=str(weights))


def features_for(model, pixels: np.ndarray, path: Path, *, views: int) -> np.ndarray:
    if path.is_file():
        return RowFile(path)
    return compute_features(model, pixels, path, views=views, seed=0, batch_size=32)


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
    fit_unfamiliar: np.ndarray | None = None,
    eval_unfamiliar: np.ndarray | None = None,
) -> tuple[dict[str, Any], Any]:
    """The held-out numbers of one head and its :class:`contracts.artifact.Calibration`."""
    calibration = calibrate(
        fit_probs, fit_labels, eval_probs, eval_labels,
        target_precision=target_precision, confidence=confidence,
        fit_unfamiliar=fit_unfamiliar, eval_unfamiliar=eval_unfamiliar,
    )  # fmt: skip
    report = classification_report(eval_labels, eval_probs.argmax(1), labels)
    ece = quality(eval_probs, eval_labels, calibration.temperature)
    return {
        "held_out_accuracy": report["accuracy"],
        "held_out_accuracy_interval": _interval(
            int((eval_probs.argmax(1) == eval_labels).sum()), len(eval_labels)
        ),
        "held_out_top3": top_k_accuracy(eval_probs, eval_labels, 3),
        "held_out_macro_f1": report["macro avg"]["f1-score"],
        "macro_definition": report["macro avg"]["definition"],
        "ece_before": ece["ece_before"],
        "ece_after": ece["ece_after"],
        "calibration": calibration.model_dump(mode="json"),
    }, calibration


def _interval(successes: int, total: int) -> list[float]:
    interval = clopper_pearson_interval(successes, total)
    return [interval.low, interval.high]


def int8_row(
    model, head, train_pixels, fit_pixels, fit_labels, eval_pixels, eval_labels, *, float32
) -> dict[str, Any]:
    """Full model (scaling + backbone + this head) → TFLite float32 and int8; held-out gate."""
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
    del float_fit  # float32's calibration is evaluation's (Keras); int8 gets its own here
    gate = gate_int8(
        float32=float32,
        float_eval=float_eval,
        int8_fit=int8_fit,
        int8_eval=int8_eval,
        fit_labels=fit_labels,
        eval_labels=eval_labels,
    )
    return {
        "float32_keras_agreement": float(np.mean(keras_eval.argmax(1) == float_eval.argmax(1))),
        "int8_agreement": gate["int8_agreement_held_out"],
        "int8_held_out_accuracy": gate["int8_held_out"]["accuracy"],
        "float32_held_out_accuracy": gate["float32_held_out"]["accuracy"],
        "int8_published": gate["int8_published"],
        "int8_rejected_because": gate["int8_rejected_because"],
        "int8_coverage": gate["int8_held_out"]["coverage"],
        "float32_coverage": gate["float32_held_out"]["coverage"],
        "int8_precision": gate["int8_held_out"]["precision_at_threshold"],
        "float32_precision": gate["float32_held_out"]["precision_at_threshold"],
        "int8_temperature": gate["int8_calibration"]["temperature"],
        "int8_threshold": gate["int8_calibration"]["review_threshold"],
        "old_gate_would_publish": gate["int8_agreement_held_out"] >= 0.99,
        "seconds": time.monotonic() - started,
    }


SCORES: Final[tuple[str, ...]] = ("msp", "energy", "mahalanobis", "mahalanobis_l2", "knn")


def pooled(maps: Any) -> np.ndarray:
    return np.asarray(maps, np.float32).mean(axis=(1, 2))


def unfamiliarity_folds(
    maps: dict[str, Any],
    labels_of: dict[str, np.ndarray],
    far_maps: np.ndarray,
    classes: int,
    *,
    folds: int,
    epochs: int,
    target_precision: float,
    confidence: float,
) -> dict[str, Any]:
    """Leave-labels-out folds: each fold trains the ``gap_ls`` head without ~1/``folds`` of the
    labels (selection chooses its epoch) and scores familiar held-out photos against the left-out
    labels' calibration and held-out photos (near) and generated drawings (far). End to end, the
    shipped rule (certified threshold, L2-Mahalanobis cut at 95 % of calibration photos) is
    applied to the near photos: everything it auto-catalogues is wrong by construction."""
    train_pooled = pooled(maps["train"])
    pooled_of = {name: pooled(maps[name]) for name in ("selection", "calibration", "held_out")}
    far_pooled = pooled(far_maps)
    per_fold = []
    for fold in range(folds):
        held = np.zeros(classes, bool)
        held[fold::folds] = True
        remap = -np.ones(classes, dtype=np.int64)
        remap[~held] = np.arange((~held).sum())
        keep = {name: ~held[labels] for name, labels in labels_of.items()}
        head, _ = train_head(
            "gap_ls",  # has a logits layer, for the energy score
            np.asarray(maps["train"])[keep["train"]],
            remap[labels_of["train"][keep["train"]]],
            np.asarray(maps["selection"])[keep["selection"]],
            remap[labels_of["selection"][keep["selection"]]],
            int((~held).sum()),
            epochs=epochs,
        )
        near_names = ("calibration", "held_out")
        near_maps = np.concatenate([np.asarray(maps[n])[~keep[n]] for n in near_names])
        near_pooled = np.concatenate([pooled_of[n][~keep[n]] for n in near_names])
        if not len(near_maps):
            continue
        familiar_maps = np.asarray(maps["held_out"])[keep["held_out"]]
        familiar_pooled = pooled_of["held_out"][keep["held_out"]]
        train_kept = train_pooled[keep["train"]]
        train_labels = labels_of["train"][keep["train"]]
        raw = fit_mahalanobis(train_kept, train_labels, normalised=False)
        normalised = fit_mahalanobis(train_kept, train_labels, normalised=True)
        knn = NearestNeighbours.fit(train_kept)
        scorers = {"mahalanobis": raw, "mahalanobis_l2": normalised, "knn": knn}

        def score(name: str, features: np.ndarray, feature_maps: np.ndarray) -> np.ndarray:
            if name == "msp":
                return msp_score(predict(head, feature_maps))  # noqa: B023 — used in this loop
            if name == "energy":
                return energy_score(logits_of(head, feature_maps))  # noqa: B023
            return scorers[name].score(features)  # noqa: B023

        row: dict[str, Any] = {"held_labels": int(held.sum()), "near": len(near_maps)}
        for name in SCORES:
            familiar = score(name, familiar_pooled, familiar_maps)
            row[name] = {
                "near": separation(familiar, score(name, near_pooled, near_maps)),
                "far": separation(familiar, score(name, far_pooled, far_maps)),
            }
        # End to end: the shipped rule on this fold's model.
        calibration_maps = np.asarray(maps["calibration"])[keep["calibration"]]
        cut = float(
            np.quantile(normalised.score(pooled_of["calibration"][keep["calibration"]]),
                        FAMILIAR_RECALL)
        )  # fmt: skip
        calibration = calibrate(
            predict(head, calibration_maps),
            remap[labels_of["calibration"][keep["calibration"]]],
            predict(head, familiar_maps),
            remap[labels_of["held_out"][keep["held_out"]]],
            target_precision=target_precision,
            confidence=confidence,
            fit_unfamiliar=normalised.score(pooled_of["calibration"][keep["calibration"]]) > cut,
            eval_unfamiliar=normalised.score(familiar_pooled) > cut,
        )
        near_confidence = predict(head, near_maps)

        near_confidence = apply_temperature(near_confidence, calibration.temperature).max(1)
        row["end_to_end"] = {
            "near_auto_catalogued": int(
                ((near_confidence >= calibration.review_threshold)
                 & (normalised.score(near_pooled) <= cut)).sum()
            ),
            "near_auto_catalogued_without_flag": int(
                (near_confidence >= calibration.review_threshold).sum()
            ),
            "near": len(near_maps),
            "threshold": calibration.review_threshold,
            "familiar_coverage": calibration.coverage,
        }  # fmt: skip
        per_fold.append(row)
        print(f"unfamiliarity fold {fold + 1}/{folds}: {json.dumps(row)}", flush=True)
    summary = {}
    rng = np.random.default_rng(0)
    for name in SCORES:
        summary[name] = {}
        for kind in ("near", "far"):
            for metric in ("auroc", "fpr_at_95_familiar_recall"):
                values = np.array([row[name][kind][metric] for row in per_fold])
                picks = rng.integers(0, len(values), (10_000, len(values)))
                low, high = np.quantile(values[picks].mean(axis=1), [0.025, 0.975])
                summary[name][f"{kind}_{metric}"] = {
                    "mean": float(values.mean()),
                    "min": float(values.min()),
                    "max": float(values.max()),
                    "bootstrap_95": [float(low), float(high)],
                }
    end_to_end = {
        key: int(sum(row["end_to_end"][key] for row in per_fold))
        for key in ("near_auto_catalogued", "near_auto_catalogued_without_flag", "near")
    }
    return {"folds": per_fold, "summary": summary, "end_to_end": end_to_end}


# --- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    _, labels, splits = load_data(Path(args.data), args.labels)
    timings["prepare_s"] = time.monotonic() - started
    classes = len(labels)
    sizes = {name: len(split) for name, split in splits.items()}
    print(f"real photos: {classes} labels, {sizes} (roles: model_build.data.splits)", flush=True)
    cache = Path(args.cache) / f"labels{args.labels or 'all'}"
    started = time.monotonic()
    model = backbone_model(Path(args.weights), classes)
    maps = {
        name: features_for(model, splits[name].pixels, cache / f"{name}.npy", views=0)
        for name in ("selection", "calibration", "held_out")
    }
    maps["train"] = features_for(
        model, splits["train"].pixels, cache / f"train_{args.views}.npy", views=args.views
    )
    timings["features_s"] = time.monotonic() - started
    labels_of = {name: split.label_indices for name, split in splits.items()}
    train_labels = np.tile(labels_of["train"], max(args.views, 1))
    calibration_labels, held_labels = labels_of["calibration"], labels_of["held_out"]

    # The shipped unfamiliarity cut: fitted on train, cut at 95 % of the calibration photos.
    scorer = fit_mahalanobis(pooled(maps["train"])[: len(labels_of["train"])], labels_of["train"])
    cut = float(np.quantile(scorer.score(pooled(maps["calibration"])), FAMILIAR_RECALL))
    flags = {name: scorer.score(pooled(maps[name])) > cut for name in ("calibration", "held_out")}

    results: dict[str, Any] = {
        "labels": classes,
        "images": sizes,
        "views": args.views,
        "epochs": args.epochs,
        "target_precision": args.target_precision,
        "threshold_confidence": args.confidence,
        "unfamiliar_flagged": {name: int(flag.sum()) for name, flag in flags.items()},
        "recipes": {},
        "timings": timings,
    }
    heads, outcomes, calibrations = {}, {}, {}
    for recipe in args.recipes:
        started = time.monotonic()
        head, epoch = train_head(
            recipe, maps["train"], train_labels, maps["selection"], labels_of["selection"],
            classes, epochs=args.epochs,
        )  # fmt: skip
        trained = time.monotonic() - started
        fit_probs, eval_probs = predict(head, maps["calibration"]), predict(head, maps["held_out"])
        row, calibration = recipe_row(
            fit_probs, calibration_labels, eval_probs, held_labels, labels,
            target_precision=args.target_precision, confidence=args.confidence,
            fit_unfamiliar=flags["calibration"], eval_unfamiliar=flags["held_out"],
        )  # fmt: skip
        row["selection_accuracy"] = float(
            np.mean(predict(head, maps["selection"]).argmax(1) == labels_of["selection"])
        )
        row.update(best_epoch=epoch, train_head_s=trained, trainable_parameters=head.count_params())
        heads[recipe], calibrations[recipe] = head, calibration
        outcomes[recipe] = outcome_of(eval_probs, held_labels, calibration, flags["held_out"])
        results["recipes"][recipe] = row
        print(f"{recipe}: {json.dumps(row)}", flush=True)
    first = args.recipes[0]
    for recipe in args.recipes[1:]:
        problems, comparison = compare(outcomes[recipe], outcomes[first], first)
        results["recipes"][recipe]["publish_gate_vs_" + first] = {
            "published": not problems,
            "refused_because": problems,
            **comparison,
        }
    if args.int8:
        for recipe in args.int8_recipes or args.recipes[:1]:
            row = int8_row(
                model, heads[recipe], splits["train"].pixels, splits["calibration"].pixels,
                calibration_labels, splits["held_out"].pixels, held_labels,
                float32=calibrations[recipe],
            )  # fmt: skip
            results["recipes"][recipe]["int8"] = row
            print(f"{recipe} int8: {json.dumps(row)}", flush=True)
    if args.unfamiliar:
        started = time.monotonic()
        far_pixels = generated_unfamiliar_pixels(args.far_images)
        far_maps = features_for(model, far_pixels, cache / f"far_{args.far_images}.npy", views=0)
        results["unfamiliarity"] = unfamiliarity_folds(
            {**maps, "train": np.asarray(maps["train"])[: len(labels_of["train"])]},
            labels_of, np.asarray(far_maps), classes, folds=args.folds, epochs=args.epochs,
            target_precision=args.target_precision, confidence=args.confidence,
        )  # fmt: skip
        results["unfamiliarity"]["far"] = f"{args.far_images} generated baby-product drawings"
        timings["unfamiliarity_s"] = time.monotonic() - started
    return results


def print_table(results: dict[str, Any]) -> None:
    def f(value: Any, digits: int = 3) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    def span(values: Any, digits: int = 3) -> str:
        return "—" if not values else f"[{values[0]:.{digits}f}, {values[1]:.{digits}f}]"

    target, confidence = results["target_precision"], results["threshold_confidence"]
    print(
        f"\nheld-out photos {results['images']['held_out']}, calibration "
        f"{results['images']['calibration']}, selection {results['images']['selection']}, train "
        f"{results['images']['train']}; target precision {target} at {confidence:.0%} confidence"
    )
    print(
        "\n| recipe | selection acc | held-out acc [95 %] | top-3 | macro-F1 | ECE before → after "
        "| threshold (certified?) | held-out coverage [95 %] | held-out precision [95 %] "
        "| target met | head train s |"
    )
    print("|" + "---|" * 11)
    for name, row in results["recipes"].items():
        c = row["calibration"]
        coverage = c.get("coverage_interval") or {}
        precision = c.get("precision_interval") or {}
        print(
            f"| {name} | {f(row['selection_accuracy'])} | {f(row['held_out_accuracy'])} "
            f"{span(row['held_out_accuracy_interval'])} | {f(row['held_out_top3'])} | "
            f"{f(row['held_out_macro_f1'])} | {f(row['ece_before'])} → {f(row['ece_after'])} | "
            f"{f(c['review_threshold'])} ({'yes' if c['target_reached'] else 'no'}) | "
            f"{f(c['coverage'])} {span([coverage.get('low'), coverage.get('high')])} | "
            f"{f(c['precision_at_threshold'])} "
            f"{span([precision.get('low'), precision.get('high')]) if precision else ''} | "
            f"{'yes' if c['target_met_on_held_out'] else 'no'} | {row['train_head_s']:.0f} |"
        )
    print("\ngates:")
    for name, row in results["recipes"].items():
        for key, gate in row.items():
            if key.startswith("publish_gate_vs_"):
                accuracy, coverage = gate["accuracy"], gate["coverage"]
                print(
                    f"  publish {name} over latest={gate['latest']}: "
                    f"{'published' if gate['published'] else 'REFUSED'} — accuracy "
                    f"{accuracy['difference']:+.3f} {span(accuracy['interval'])}, coverage "
                    f"{coverage['difference']:+.3f} {span(coverage['interval'])}, target met "
                    f"{gate['target_met']['candidate']} vs {gate['target_met']['latest']}"
                    + (f"; {'; '.join(gate['refused_because'])}" if gate["refused_because"] else "")
                )
        int8 = row.get("int8")
        if int8:
            print(
                f"  int8 {name}: {'published' if int8['int8_published'] else 'REFUSED'} — accuracy "
                f"{f(int8['int8_held_out_accuracy'])} vs {f(int8['float32_held_out_accuracy'])}, "
                f"coverage {f(int8['int8_coverage'])} vs {f(int8['float32_coverage'])}, "
                f"precision {f(int8['int8_precision'])} vs {f(int8['float32_precision'])}, "
                f"agreement {f(int8['int8_agreement'])}"
                + (f"; {int8['int8_rejected_because']}" if int8["int8_rejected_because"] else "")
            )
    unfamiliar = results.get("unfamiliarity")
    if unfamiliar:
        folds = len(unfamiliar["folds"])
        print(
            f"\nunfamiliarity over {folds} leave-labels-out folds (near: the left-out labels' "
            f"photos; far: {unfamiliar['far']}); mean [bootstrap 95 % over folds] (min … max)"
        )
        print("| score | near AUROC | near FPR@95 | far AUROC | far FPR@95 |")
        print("|---|---|---|---|---|")
        for name, row in unfamiliar["summary"].items():
            cells = []
            for key in ("near_auroc", "near_fpr_at_95_familiar_recall", "far_auroc",
                        "far_fpr_at_95_familiar_recall"):  # fmt: skip
                value = row[key]
                cells.append(
                    f"{value['mean']:.3f} {span(value['bootstrap_95'])} "
                    f"({value['min']:.3f} … {value['max']:.3f})"
                )
            print(f"| {name} | " + " | ".join(cells) + " |")
        end = unfamiliar["end_to_end"]
        print(
            f"end to end: {end['near_auto_catalogued']} of {end['near']} near-unfamiliar photos "
            f"auto-catalogued by the shipped rule (all wrong); "
            f"{end['near_auto_catalogued_without_flag']} without the unfamiliarity flag"
        )
    print(
        "timings (upper bounds, shared CPU):", {k: round(v) for k, v in results["timings"].items()}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_photos", description=__doc__)
    parser.add_argument("--data", default=str(GROCERY))
    parser.add_argument("--weights", default=str(WEIGHTS))
    parser.add_argument("--labels", type=int, default=None, help="first N labels only")
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--recipes", nargs="+", default=["reference", "gap", "gap_ls"], choices=RECIPES
    )
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--int8-recipes", nargs="*", default=None)
    parser.add_argument("--unfamiliar", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--folds", type=int, default=7, help="leave-labels-out folds")
    parser.add_argument("--far-images", type=int, default=100)
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--cache", default=str(REPOSITORY_ROOT / ".cache" / "real_photos"))
    parser.add_argument(
        "--fine-tuned", nargs="*", default=list(fine_tuned_recipes.DEFAULT_RECIPES),
        choices=list(fine_tuned_recipes.FINE_TUNE_RECIPES), metavar="RECIPE",
        help="whole training commands to tabulate beside the frozen heads, on the same role "
        "splits (bench/fine_tuned_recipes.py; default: the reference and the documented recipe; "
        "none: --fine-tuned alone)",
    )  # fmt: skip
    parser.add_argument(
        "--fine-tuned-runs", default=str(REPOSITORY_ROOT / ".cache" / "fine_tuned_runs")
    )
    parser.add_argument(
        "--reuse", action="store_true", help="tabulate the newest finished fine-tuned runs again"
    )
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
    if args.fine_tuned and args.labels:
        print("fine-tuned recipes: not run with --labels (each trains on the whole --data)")
    elif args.fine_tuned:
        # The fine-tuned rows are whole `python -m model_build.train` commands (the backbone
        # changes, so no shared feature cache), evaluated on the same role splits as above.
        print("\nFine-tuned recipes beside the frozen reference (whole training commands):")
        fine_tuned = fine_tuned_recipes.run(
            argparse.Namespace(
                data=args.data, weights=args.weights, recipes=args.fine_tuned,
                runs=args.fine_tuned_runs, reuse=args.reuse,
            )
        )  # fmt: skip
        results["fine_tuned"] = fine_tuned
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        fine_tuned_recipes.print_table(fine_tuned)
    return 0


if __name__ == "__main__":
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message="The structure of `inputs`")
    sys.exit(main())
