"""Benchmark: our prepared input pipeline and feature cache vs the reference's ImageDataGenerator.

    python -m bench.training_pipeline [--scale 1.0] [--image-size 500] [--views 5]

Generates a dataset at the reference scale (14 × 1,200 train + 14 × 300 val JPEGs of about
500 px; ``--scale`` shrinks the counts) and measures, side by side in one process:

1. **input pipeline images/s** for one epoch of augmented training batches:
   * *ours*: decode once into the prepare cache (timed separately, a one-time cost), then exactly
     the pipeline training runs — :func:`model_build.data.pipeline.train_dataset` with an
     :class:`~model_build.data.pipeline.EpochRandomness` (per-epoch stateless shuffle and batch
     seeds),
     batches gathered from the memory-mapped uint8 split and augmented in the graph;
   * *reference-style*: Keras' legacy ``ImageDataGenerator.flow_from_directory`` (still shipped in
     Keras 3 as ``keras.src.legacy.preprocessing.image``) with the reference's settings — rescale
     1/255, rotation 20, brightness, zoom 0.2, horizontal flip, target 224×224 — which decodes and
     resizes every JPEG in every epoch (default single-worker iteration, as the notebook ran it);
2. **wall time of one training epoch** (train + val) of the reference model with each pipeline
   (ours compiled and fitted as training does: the same callback driving the randomness);
3. **a reference-length schedule (37 epochs)**, projected: plain training (prepare + 37 epochs) vs
   the feature-cache mode (prepare + backbone features for K views + val once + 37 head epochs),
   the features computed by :func:`model_build.training.feature_cache.cached_features` as training
   does.

An earlier version timed a pipeline branch training never ran (no ``EpochRandomness``: tf.data's
stateful shuffle and a random seed stream); its "646 images/s, 3.2×" was not training's number.

Backbone weights do not change the timings, so the model is built with ``weights=None`` (no
download). Results are printed and written to ``bench/results/training_pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from model_build.data.dataset import discover
from model_build.data.prepare import prepare_split
from sample_data.photos import generate_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REFERENCE_TRAIN_PER_LABEL = 1200
REFERENCE_VAL_PER_LABEL = 300
REFERENCE_EPOCHS = 37
RESULTS = Path("bench/results")


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training_pipeline")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the reference counts")
    parser.add_argument("--image-size", type=int, default=500)
    parser.add_argument("--views", type=int, default=5, help="K for the feature-cache mode")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS, help="schedule to project")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (prepare)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    arguments = parser.parse_args(argv)

    train_per_label = max(2, round(REFERENCE_TRAIN_PER_LABEL * arguments.scale))
    val_per_label = max(1, round(REFERENCE_VAL_PER_LABEL * arguments.scale))
    out = arguments.out
    data_dir = out / f"data_{train_per_label}_{val_per_label}_{arguments.image_size}"
    cache_dir = out / "prepare_cache"
    out.mkdir(parents=True, exist_ok=True)

    print(f"dataset: 14 × {train_per_label} train + 14 × {val_per_label} val, "
          f"{arguments.image_size} px JPEGs in {data_dir}")  # fmt: skip
    _, generate_seconds = _timed(
        generate_dataset,
        data_dir,
        train_per_label=train_per_label,
        val_per_label=val_per_label,
        image_size=arguments.image_size,
    )
    print(f"  generated (or reused) in {generate_seconds:.1f} s")

    import keras  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it
    import tensorflow as tf  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    from model_build.data.pipeline import EpochRandomness, compile_for, eval_dataset, train_dataset  # noqa: PLC0415 — model_build.data.pipeline loads TensorFlow; this module stays light without it
    from model_build.training.feature_cache import (  # noqa: PLC0415 — model_build.training.feature_cache loads TensorFlow; this module stays light without it
        cached_features,
        head_eval_dataset,
        head_train_dataset,
    )
    from model_build.training.model import build_model, parts_of  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    keras.utils.set_random_seed(0)
    batch = arguments.batch_size
    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "dataset": {
            "train_images": 14 * train_per_label,
            "val_images": 14 * val_per_label,
            "image_size": arguments.image_size,
            "scale": arguments.scale,
        },
        "batch_size": batch,
        "views": arguments.views,
        "schedule_epochs": arguments.epochs,
    }

    # --- ours: decode once (cold cache), then in-memory tf.data --------------------------------
    shutil.rmtree(cache_dir, ignore_errors=True)
    dataset = discover(data_dir)

    def prepare_both():
        return (
            prepare_split(dataset, "train", cache_dir=cache_dir, workers=arguments.workers),
            prepare_split(dataset, "val", cache_dir=cache_dir, workers=arguments.workers),
        )

    (train, val), prepare_seconds = _timed(prepare_both)
    _, warm_prepare_seconds = _timed(prepare_both)
    print(f"ours: prepare (decode once) {prepare_seconds:.1f} s cold, "
          f"{warm_prepare_seconds:.1f} s from the cache")  # fmt: skip
    randomness = EpochRandomness(0)  # what training passes: epoch e's randomness from (seed, e)
    ours_train = train_dataset(
        train.pixels, train.label_indices, batch_size=batch, seed=0, randomness=randomness
    )
    ours_val = eval_dataset(val.pixels, val.label_indices, batch_size=batch)
    randomness.set_epoch(0)
    for _ in ours_train.take(2):
        pass  # trace the graph once
    randomness.set_epoch(1)  # a fresh epoch, as fit's on_epoch_begin would set it
    _, ours_seconds = _timed(lambda: sum(1 for _ in ours_train))
    ours_rate = len(train) / ours_seconds

    # --- reference-style: ImageDataGenerator.flow_from_directory -------------------------------
    from keras.src.legacy.preprocessing.image import ImageDataGenerator  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    reference_train = ImageDataGenerator(
        rescale=1.0 / 255,
        rotation_range=20,
        brightness_range=(0.8, 1.2),
        zoom_range=0.2,
        horizontal_flip=True,
    ).flow_from_directory(
        data_dir / "train", target_size=(224, 224), batch_size=batch, class_mode="sparse", seed=0
    )
    reference_val = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        data_dir / "val", target_size=(224, 224), batch_size=batch, class_mode="sparse",
        shuffle=False,
    )  # fmt: skip

    def iterate_reference():
        for index in range(len(reference_train)):
            reference_train[index]

    _, reference_seconds = _timed(iterate_reference)
    reference_rate = len(train) / reference_seconds

    # Without augmentation: what decoding once saves per epoch (gather vs decode + resize).
    plain_randomness = EpochRandomness(0)
    plain_ours = train_dataset(
        train.pixels,
        train.label_indices,
        batch_size=batch,
        seed=0,
        augment=False,
        randomness=plain_randomness,
    )
    plain_randomness.set_epoch(0)
    for _ in plain_ours.take(2):
        pass
    _, plain_ours_seconds = _timed(lambda: sum(1 for _ in plain_ours))
    plain_reference = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        data_dir / "train", target_size=(224, 224), batch_size=batch, class_mode="sparse", seed=0
    )
    _, plain_reference_seconds = _timed(
        lambda: [plain_reference[i] for i in range(len(plain_reference))]
    )
    results["input_pipeline"] = {
        "ours_images_per_s": ours_rate,
        "reference_images_per_s": reference_rate,
        "ratio": ours_rate / reference_rate,
        "no_augmentation_ours_images_per_s": len(train) / plain_ours_seconds,
        "no_augmentation_reference_images_per_s": len(train) / plain_reference_seconds,
        "no_augmentation_ratio": plain_reference_seconds / plain_ours_seconds,
        "ours_prepare_cold_s": prepare_seconds,
        "ours_prepare_warm_s": warm_prepare_seconds,
    }
    print(f"input pipeline (augmented): ours {ours_rate:.0f} images/s, reference-style "
          f"{reference_rate:.0f} images/s → {ours_rate / reference_rate:.1f}×")  # fmt: skip
    print(f"input pipeline (no augmentation): ours {len(train) / plain_ours_seconds:.0f} "
          f"images/s, reference-style {len(train) / plain_reference_seconds:.0f} images/s → "
          f"{plain_reference_seconds / plain_ours_seconds:.1f}×")  # fmt: skip

    # --- one training epoch of the reference model with each pipeline ---------------------------
    def fresh_model():
        model = build_model("mobilenet_v2", num_classes=14, weights=None)
        compile_for(model, 1e-3)  # what training compiles
        return model

    model = fresh_model()
    model.fit(ours_train.take(2), epochs=1, verbose=0, callbacks=[randomness])  # trace
    _, ours_epoch = _timed(
        model.fit,
        ours_train,
        validation_data=ours_val,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[randomness],
    )
    model = fresh_model()
    model.fit(ours_train.take(2), epochs=1, verbose=0)
    _, reference_epoch = _timed(
        model.fit, reference_train, validation_data=reference_val, epochs=1, verbose=0
    )
    results["epoch_seconds"] = {
        "ours": ours_epoch,
        "reference": reference_epoch,
        "ratio": reference_epoch / ours_epoch,
    }
    print(f"training epoch: ours {ours_epoch:.1f} s, reference-style {reference_epoch:.1f} s → "
          f"{reference_epoch / ours_epoch:.1f}×")  # fmt: skip

    # --- feature cache: K views once, then head epochs ------------------------------------------
    views = arguments.views
    feature_dir = out / "feature_cache"
    shutil.rmtree(feature_dir, ignore_errors=True)
    model = fresh_model()

    def compute_all():
        settings = {"seed": 0, "batch_size": batch, "cache_dir": feature_dir}
        return (
            cached_features(model, train, views=views, name="train", **settings),
            cached_features(model, val, views=0, name="val", **settings),
        )

    (train_features, val_features), features_seconds = _timed(compute_all)
    head = parts_of(model).head
    compile_for(head, 1e-3)
    head_train, steps = head_train_dataset(
        train_features, train.label_indices, views=views, batch_size=batch, seed=0
    )
    head_val = head_eval_dataset(val_features, val.label_indices, batch_size=batch)
    head_randomness = [EpochRandomness(0)]  # as training fits the head
    head.fit(head_train, steps_per_epoch=2, epochs=1, verbose=0, callbacks=head_randomness)
    _, head_epoch = _timed(
        head.fit,
        head_train,
        validation_data=head_val,
        steps_per_epoch=steps,
        epochs=1,
        verbose=0,
        callbacks=head_randomness,
    )
    epochs = arguments.epochs
    plain_total = prepare_seconds + epochs * ours_epoch
    reference_total = epochs * reference_epoch
    cached_total = prepare_seconds + features_seconds + epochs * head_epoch
    results["schedule"] = {
        "feature_seconds": features_seconds,
        "head_epoch_seconds": head_epoch,
        "plain_ours_total_s": plain_total,
        "plain_reference_total_s": reference_total,
        "feature_cache_total_s": cached_total,
        "plain_ours_over_feature_cache": plain_total / cached_total,
        "plain_reference_over_feature_cache": reference_total / cached_total,
        "feature_disk_bytes": int(sum(part.nbytes for part in (*train_features, *val_features))),
    }
    print(f"feature cache: {views} views computed in {features_seconds:.1f} s, "
          f"head epoch {head_epoch:.2f} s")  # fmt: skip
    print(f"{epochs}-epoch schedule: plain (ours) {plain_total / 60:.1f} min, plain "
          f"(reference-style) {reference_total / 60:.1f} min, feature cache K={views} "
          f"{cached_total / 60:.1f} min → {plain_total / cached_total:.1f}× / "
          f"{reference_total / cached_total:.1f}× less time")  # fmt: skip
    shutil.rmtree(feature_dir, ignore_errors=True)

    path = out / "training_pipeline.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
