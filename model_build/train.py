"""Train the classifier: ``python -m model_build.train [--data DIR] [options]``.

Reads top to bottom: settings → data (discover, audit, decode once) → look at it (augmentation
preview) → model → train (optionally fine-tune) → evaluate → publish.

Without ``--data`` it runs the **embedded default**: a generated sample dataset (14 labels of
drawn shapes, ``data/sample``) and the *small stand-in CNN* trained from scratch, published to
``./artifacts`` for the local demo. The real model is ``--model mobilenet_v2`` (the default
whenever ``--data`` is given) with ImageNet weights.

**Resume.** Every completed epoch is backed up in ``<run>/backup`` (Keras ``BackupAndRestore``).
If the process dies (even SIGKILL), rerun *the same command*: with ``--out`` the run folder is
that one; without it, the newest unfinished run under ``runs/`` whose settings are identical is
picked up again (``--fresh`` starts a new run instead). Training continues from the last completed
epoch, ``history.csv`` keeps one row per epoch, and the best checkpoint keeps its best value.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

DEFAULT_RUNS_DIR: Final[Path] = Path("runs")
DEFAULT_SAMPLE_DIR: Final[Path] = Path("data/sample")
DEFAULT_ARTIFACTS: Final[str] = "artifacts"
SAMPLE_TRAIN_PER_LABEL: Final[int] = 60
SAMPLE_VAL_PER_LABEL: Final[int] = 15
RUN_STATE: Final[str] = "run_state.json"
EXIT_WEIGHTS_UNAVAILABLE: Final[int] = 2
EXIT_BAD_DATA: Final[int] = 2
# "running": killed while training; "trained": killed during evaluation or publishing.
_UNFINISHED: Final[tuple[str, ...]] = ("running", "trained")


@dataclass
class TrainConfig:
    """Every setting of a run; written to ``config.json``. Defaults mirror the reference."""

    data: str | None = None  # dataset folder; None = generated sample data (embedded default)
    val_fraction: float = 0.2  # only when val is split off by content hash
    holdout_fraction: float = 0.5  # of val, held out for evaluation when there is no test/
    out: str | None = None  # run folder; None = runs/<UTC timestamp> (or the run being resumed)
    model: str | None = None  # mobilenet_v2 | small; None = mobilenet_v2 with --data, else small
    head: str = "reference"  # mobilenet_v2 head: reference (exact) | gap (bench/real_photos.py)
    weights: str | None = None  # imagenet | PATH | none; None = imagenet for mobilenet_v2
    epochs: int | None = None  # None = 50 (real data) or 25 (sample data); threshold stop ends it
    batch_size: int = 32
    seed: int = 0
    learning_rate: float = 1e-3  # Adam, as the reference
    stop_train_accuracy: float = 0.96  # stop once train accuracy exceeds this ...
    stop_val_accuracy: float = 0.94  # ... and val accuracy exceeds this
    reduce_lr_patience: int = 3  # ReduceLROnPlateau on val_loss, factor 0.5
    early_stopping_patience: int = 10  # safety net on val_loss
    fine_tune_layers: int = 0  # unfreeze the top N backbone layers (BatchNorm stays frozen)
    fine_tune_learning_rate: float = 1e-5
    fine_tune_epochs: int = 10
    feature_cache_views: int = 0  # K > 0: train the head on K cached augmented views
    publish: str | None = None  # folder or s3://; None = ./artifacts for the sample, else none
    workers: int | None = None  # decode processes; None = one per CPU
    cache_dir: str | None = None  # prepare cache; None = .cache/prepared
    deterministic: bool = False  # op determinism also on GPU (always on for CPU-only runs)
    fresh: bool = False  # never resume an earlier unfinished run
    extra: dict = field(default_factory=dict)  # derived values (filled in at start)

    def resolved(self) -> TrainConfig:
        """Fill the defaults that depend on other settings."""
        sample = self.data is None
        model = self.model or ("small" if sample else "mobilenet_v2")
        weights = self.weights or ("imagenet" if model == "mobilenet_v2" else "none")
        epochs = self.epochs if self.epochs is not None else (25 if sample else 50)
        publish = self.publish
        if publish is None:
            publish = DEFAULT_ARTIFACTS if sample else "none"
        return TrainConfig(
            **{
                **asdict(self),
                "model": model,
                "weights": weights,
                "epochs": epochs,
                "publish": publish,
            }
        )

    def identity(self) -> dict:
        """The settings that define "the same command" for resuming (all but the output folder)."""
        values = asdict(self)
        for key in ("out", "fresh", "workers", "extra"):
            values.pop(key)
        return values


def parse_arguments(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m model_build.train",
        description=(
            "Train the product-image classifier. Without --data: generated sample data and the "
            "small stand-in model (the embedded default)."
        ),
    )
    add = parser.add_argument
    add("--data", help="dataset folder: train/ val/ [test/] of label folders, or label folders")
    add("--val-fraction", type=float, default=defaults.val_fraction)
    add(
        "--holdout-fraction",
        type=float,
        default=defaults.holdout_fraction,
        help="share of val held out for evaluation when there is no test/ (0 = none)",
    )
    add("--out", help="run folder (default runs/<UTC timestamp>; rerun with it to resume)")
    add("--model", choices=("mobilenet_v2", "small"))
    add(
        "--head",
        choices=("reference", "gap"),
        default=defaults.head,
        help="mobilenet_v2 head: the reference head, or global average pooling + dense",
    )
    add("--weights", help="imagenet | PATH to MobileNetV2 no-top weights | none")
    add("--epochs", type=int)
    add("--batch-size", type=int, default=defaults.batch_size)
    add("--seed", type=int, default=defaults.seed)
    add("--learning-rate", type=float, default=defaults.learning_rate)
    add("--stop-train-accuracy", type=float, default=defaults.stop_train_accuracy)
    add("--stop-val-accuracy", type=float, default=defaults.stop_val_accuracy)
    add("--reduce-lr-patience", type=int, default=defaults.reduce_lr_patience)
    add("--early-stopping-patience", type=int, default=defaults.early_stopping_patience)
    add("--fine-tune-layers", type=int, default=defaults.fine_tune_layers)
    add("--fine-tune-learning-rate", type=float, default=defaults.fine_tune_learning_rate)
    add("--fine-tune-epochs", type=int, default=defaults.fine_tune_epochs)
    add("--feature-cache-views", type=int, default=defaults.feature_cache_views)
    add("--publish", help="publish destination (folder or s3://bucket/prefix), or none")
    add("--workers", type=int)
    add("--cache-dir", help="prepare cache folder (default .cache/prepared)")
    add("--deterministic", action="store_true", help="op determinism on GPU too (slower)")
    add("--fresh", action="store_true", help="start a new run even if an unfinished one matches")
    arguments = parser.parse_args(argv)
    return TrainConfig(**vars(arguments))


# --- run folder and resume -----------------------------------------------------------------------


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resolve_run_dir(config: TrainConfig) -> tuple[Path, bool]:
    """The run folder, and whether it is an unfinished run being resumed."""
    if config.out:
        run_dir = Path(config.out)
        state = _read_json(run_dir / RUN_STATE) or {}
        if state.get("status") == "done":
            raise _UserError(
                f"{run_dir} already holds a finished run; choose another --out (or delete it)"
            )
        return run_dir, state.get("status") in _UNFINISHED
    if not config.fresh and DEFAULT_RUNS_DIR.is_dir():
        for candidate in sorted(DEFAULT_RUNS_DIR.iterdir(), reverse=True):
            state = _read_json(candidate / RUN_STATE) or {}
            if state.get("status") in _UNFINISHED and state.get("identity") == config.identity():
                return candidate, True
    return DEFAULT_RUNS_DIR / _utc_stamp(), False


def _write_state(run_dir: Path, config: TrainConfig, status: str, **extra) -> None:
    state = {"status": status, "identity": config.identity(), **extra}
    (run_dir / RUN_STATE).write_text(json.dumps(state, indent=2) + "\n")


def _history_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _trim_history(path: Path, completed_epochs: int) -> None:
    """Drop rows of epochs after the last backed-up one (written before a crash)."""
    rows = _history_rows(path)
    keep = [row for row in rows if int(row["epoch"]) < completed_epochs]
    if len(keep) == len(rows):
        return
    with path.open("w", newline="") as stream:
        if keep:
            writer = csv.DictWriter(stream, fieldnames=list(keep[0]))
            writer.writeheader()
            writer.writerows(keep)


def _backed_up_epochs(backup_dir: Path) -> int:
    """The completed epochs (counted from the run's start) a BackupAndRestore folder holds."""
    metadata = _read_json(backup_dir / "training_metadata.json") or {}
    return int(metadata.get("epoch", 0))


# --- the run ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    config = parse_arguments(argv).resolved()
    try:
        return run(config)
    except _UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status


class _UserError(Exception):
    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def check_choices(config: TrainConfig) -> None:
    """Refuse settings that cannot produce a useful model, before anything slow happens."""
    weights_none = str(config.weights).lower() == "none"
    if config.model == "mobilenet_v2" and weights_none and config.fine_tune_layers <= 0:
        raise _UserError(
            "--weights none with a frozen MobileNetV2 learns nothing (random backbone, features "
            "around 1e-12; 0.098 on the grocery photos, one class predicted): use --weights "
            "imagenet or PATH, or train the backbone too with --fine-tune-layers N"
        )


def run(config: TrainConfig) -> int:
    started = time.monotonic()
    check_choices(config)
    run_dir, resuming = resolve_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)

    # Imports after argument parsing, so --help and argument errors are instant.
    from model_build.audit import audit_dataset, print_report
    from model_build.dataset import DatasetError, discover
    from model_build.holdout import with_holdout
    from model_build.prepare import prepare_split
    from model_build.sample_data import generate_dataset

    cache_dir = Path(config.cache_dir) if config.cache_dir else None

    # 1. Data: generated sample or the given folder; audit; decode once.
    if config.data is None:
        print(f"no --data: generating the sample dataset in {DEFAULT_SAMPLE_DIR} (cached)")
        data_dir = generate_dataset(
            DEFAULT_SAMPLE_DIR,
            train_per_label=SAMPLE_TRAIN_PER_LABEL,
            val_per_label=SAMPLE_VAL_PER_LABEL,
        )
    else:
        data_dir = Path(config.data)
    try:
        dataset = discover(data_dir, val_fraction=config.val_fraction, seed=config.seed)
        dataset = with_holdout(dataset, config.holdout_fraction, config.seed)
    except (DatasetError, ValueError) as error:
        raise _UserError(str(error), EXIT_BAD_DATA) from error
    audit = audit_dataset(dataset, run_dir, cache_dir=cache_dir, workers=config.workers)
    print_report(audit.report)
    dataset = dataset.without(set(audit.unusable))
    train = prepare_split(dataset, "train", cache_dir=cache_dir, workers=config.workers)
    val = prepare_split(dataset, "val", cache_dir=cache_dir, workers=config.workers)
    if len(train) == 0 or len(val) == 0:
        raise _UserError(
            f"need usable images in train and val (have {len(train)} and {len(val)})",
            EXIT_BAD_DATA,
        )

    # 2. The plan, before anything slow happens.
    _print_plan(config, run_dir, resuming, data_dir, dataset, len(train), len(val))
    config.extra = {
        "run_dir": str(run_dir),
        "data_dir": str(data_dir),
        "dataset": dataset.summary(),
        "train_images": len(train),
        "val_images": len(val),
    }
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    (run_dir / "labels.json").write_text(json.dumps(list(dataset.labels), indent=2) + "\n")
    _write_state(run_dir, config, "running")

    # 3. TensorFlow: seeds, determinism, devices.
    import keras
    import numpy as np
    import tensorflow as tf

    from model_build.augment import save_preview
    from model_build.model import WeightsUnavailable, build_model

    keras.utils.set_random_seed(config.seed)
    gpus = tf.config.list_physical_devices("GPU")
    if config.deterministic or not gpus:
        tf.config.experimental.enable_op_determinism()
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if len(gpus) > 1:
        print(f"training on {len(gpus)} GPUs with MirroredStrategy")

    # One training image of each of the first labels, then its augmented views.
    _, first_of_label = np.unique(train.label_indices, return_index=True)
    save_preview(
        train.pixels[np.sort(first_of_label)[:6]],
        run_dir / "augmentation_preview.png",
        seed=config.seed,
    )

    # 4. Model.
    with strategy.scope():
        try:
            model = build_model(
                config.model,
                num_classes=len(dataset.labels),
                weights=config.weights,
                head=config.head,
            )
        except WeightsUnavailable as error:
            raise _UserError(
                f"{error}.\nNo network? Use --weights PATH (a local MobileNetV2 no-top .h5 file, "
                "e.g. copied into ~/.keras/models/) or --weights none --fine-tune-layers N "
                "(random start; learns little on real photos).",
                EXIT_WEIGHTS_UNAVAILABLE,
            ) from error
        except FileNotFoundError as error:
            raise _UserError(str(error), EXIT_WEIGHTS_UNAVAILABLE) from error

    # 5. Train: phase 1 (frozen backbone / the small CNN), then optional fine-tuning.
    from model_build.training import fine_tune, train_head_on_features, train_plain

    if config.feature_cache_views > 0 and config.model == "mobilenet_v2":
        history_epochs = train_head_on_features(config, run_dir, model, train, val, strategy)
    else:
        if config.feature_cache_views > 0:
            print("--feature-cache-views applies to mobilenet_v2 only; training on the fly")
        history_epochs = train_plain(config, run_dir, model, train, val, strategy)
    if config.fine_tune_layers > 0 and config.model == "mobilenet_v2":
        history_epochs = fine_tune(config, run_dir, train, val, strategy, history_epochs)

    # 6. Results: best val accuracy from the history, curves, evaluation, publishing.
    from model_build.training import plot_history, remove_backups

    rows = _history_rows(run_dir / "history.csv")
    best = max((float(row["val_accuracy"]) for row in rows), default=float("nan"))
    plot_history(rows, run_dir / "history.png")
    _write_state(run_dir, config, "trained")
    remove_backups(run_dir)
    version = _evaluate_and_publish(config, run_dir, data_dir)
    _write_state(run_dir, config, "done", published_version=version)

    wall = time.monotonic() - started
    published = f", published {version} to {config.publish}" if version else ""
    print(
        f"done: best val accuracy {best:.4f} after {len(rows)} epochs in {wall:.0f} s"
        f" — {run_dir}{published}"
    )
    return 0


def _print_plan(config, run_dir, resuming, data_dir, dataset, train_count, val_count) -> None:
    counts = dataset.counts()
    print("plan:")
    print(f"  data      {data_dir} ({dataset.layout} layout)")
    print(f"  labels    {len(dataset.labels)}: {', '.join(dataset.labels)}")
    print(
        f"  images    train {train_count}, val {val_count}"
        + (f", test {sum(counts['test'].values())}" if "test" in counts else "")
        + (
            f", held out for evaluation {sum(counts['holdout'].values())}"
            if "holdout" in counts
            else ""
        )
    )
    if config.model == "small":
        print(
            "  model     small — a small stand-in CNN trained from scratch for the demo, NOT the "
            "reference model; train the real one with --data DIR (MobileNetV2, ImageNet weights)"
        )
    else:
        print(f"  model     mobilenet_v2 — frozen MobileNetV2 + {config.head} head")
    print(f"  weights   {config.weights}")
    epochs = f"{config.epochs} (stops early at train > {config.stop_train_accuracy}"
    epochs += f" and val > {config.stop_val_accuracy})"
    print(f"  epochs    {epochs}, batch {config.batch_size}, Adam {config.learning_rate}")
    if config.feature_cache_views:
        print(f"  features  cached for {config.feature_cache_views} augmented views per image")
    if config.fine_tune_layers:
        print(
            f"  fine-tune top {config.fine_tune_layers} backbone layers for "
            f"{config.fine_tune_epochs} epochs at {config.fine_tune_learning_rate}"
        )
    print(f"  publish   {config.publish}")
    print(f"  run       {run_dir}" + (" (resuming an unfinished run)" if resuming else ""))
    sys.stdout.flush()


def _evaluate_and_publish(config: TrainConfig, run_dir: Path, data_dir: Path) -> str | None:
    """The one integration point with evaluation and publishing (model_build.evaluate, .publish)."""
    try:
        from model_build.evaluate import evaluate_run
    except ImportError:
        evaluate_run = None
    if evaluate_run is not None:
        evaluate_run(run_dir, data_dir=data_dir)
    if not config.publish or config.publish.lower() == "none":
        return None
    try:
        from model_build.publish import publish_run
    except ImportError:
        print("model_build.publish is not available: nothing published")
        return None
    from model_build.publish import PublishError

    try:
        return publish_run(run_dir, config.publish)
    except PublishError as error:
        print(
            f"not published: {error}; python -m model_build.publish {run_dir} --to "
            f"{config.publish} --force publishes it anyway"
        )
        return None


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
