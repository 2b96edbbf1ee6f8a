"""The training loops behind ``python -m model_build.train``: callbacks, phases, resume.

Callbacks, in the order they run at the end of an epoch:

* :class:`LogLearningRate` — adds the epoch's learning rate to the logs (a ``history.csv`` column);
* ``CSVLogger`` → ``history.csv`` (appending, so a resumed run keeps one row per epoch);
* ``ModelCheckpoint`` → ``model.keras``, the best epoch by val accuracy (on resume it starts from
  the best value already in ``history.csv``, so a worse epoch never replaces it);
* ``ReduceLROnPlateau`` on val loss, factor 0.5 (the reference's 1e-3 → … → 6.25e-5);
* :class:`ThresholdStop` — the reference's stop once train accuracy > 0.96 and val > 0.94;
* ``EarlyStopping`` on val loss, a safety net when the thresholds are never reached;
* ``BackupAndRestore`` → ``backup/``: model, optimizer (learning rate included) and epoch after
  every epoch; a rerun after a crash (even SIGKILL mid-epoch) continues from the last completed
  epoch.

A resumed run ends exactly where an uninterrupted one with the same seed would (on CPU, where op
determinism is on): :class:`model_build.pipeline.EpochRandomness` (first in the list) makes each
epoch's shuffle, augmentation and dropout a function of ``(seed, epoch)``, and the plateau and
early-stopping callbacks (:class:`ResumableReduceLROnPlateau`, :class:`ResumableEarlyStopping`)
rebuild their patience bookkeeping from the phase's rows of ``history.csv`` instead of starting
afresh. Not covered: a kill in the instant after the epoch that stops training early was backed
up but before the phase was marked complete; the rerun then trains one more epoch.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
from pathlib import Path

import keras
import numpy as np

from model_build.prepare import PreparedSplit

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
KILL_HOOK = "MODEL_BUILD_TEST_KILL_AT"


class ThresholdStop(keras.callbacks.Callback):
    """Stop once train accuracy > ``train_accuracy`` and val accuracy > ``val_accuracy``."""

    def __init__(self, train_accuracy: float, val_accuracy: float) -> None:
        super().__init__()
        self.train_accuracy = train_accuracy
        self.val_accuracy = val_accuracy

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if (
            logs.get("accuracy", 0.0) > self.train_accuracy
            and logs.get("val_accuracy", 0.0) > self.val_accuracy
        ):
            print(
                f"\nthreshold stop: train accuracy {logs['accuracy']:.4f} > "
                f"{self.train_accuracy} and val accuracy {logs['val_accuracy']:.4f} > "
                f"{self.val_accuracy}"
            )
            self.model.stop_training = True


class LogLearningRate(keras.callbacks.Callback):
    """Add ``learning_rate`` (the rate this epoch trained with) to the epoch logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class _StandInOptimizer:
    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate


class _StandInModel:
    """What a replayed callback sees instead of the model: a logged learning rate, no weights."""

    def __init__(self, learning_rate: float) -> None:
        self.optimizer = _StandInOptimizer(learning_rate)
        self.stop_training = False


class _ReplayHistory:
    """Mixin: after the usual reset in ``on_train_begin``, feed the phase's completed epochs
    (rows of ``history.csv`` from ``first_epoch`` on) through the callback's own ``on_epoch_end``,
    against a stand-in model, so its state (best, wait, cooldown) is what it was when the previous
    process stopped. The real optimizer is not touched: its learning rate comes back with the
    backup."""

    history_path: Path
    first_epoch: int

    def on_train_begin(self, logs: dict | None = None) -> None:
        from model_build.train import _history_rows

        super().on_train_begin(logs)
        rows = [
            row for row in _history_rows(self.history_path) if int(row["epoch"]) >= self.first_epoch
        ]
        if not rows:
            return
        model = self._model
        current = float(np.asarray(model.optimizer.learning_rate))
        try:
            for row in rows:
                learning_rate = float(row.get("learning_rate") or current)
                self.set_model(_StandInModel(learning_rate))
                super().on_epoch_end(int(row["epoch"]), {k: float(v) for k, v in row.items() if v})
        finally:
            self.set_model(model)


class ResumableReduceLROnPlateau(_ReplayHistory, keras.callbacks.ReduceLROnPlateau):
    def __init__(self, history_path: Path, first_epoch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history_path, self.first_epoch = Path(history_path), first_epoch


class ResumableEarlyStopping(_ReplayHistory, keras.callbacks.EarlyStopping):
    def __init__(self, history_path: Path, first_epoch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history_path, self.first_epoch = Path(history_path), first_epoch


def _history_best(run_dir: Path) -> float:
    from model_build.train import _history_rows

    values = [float(row["val_accuracy"]) for row in _history_rows(run_dir / HISTORY_FILE)]
    return max(values) if values else -math.inf


class _KillAt(keras.callbacks.Callback):
    """Test hook (``MODEL_BUILD_TEST_KILL_AT=EPOCH:BATCH``): SIGKILL this process mid-epoch."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        epoch, batch = spec.split(":")
        self.epoch, self.batch = int(epoch), int(batch)
        self.current = -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.current = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.current == self.epoch and batch == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def _callbacks(config, run_dir: Path, backup_name: str, randomness, checkpoint=None) -> list:
    from model_build.train import _backed_up_epochs, _trim_history

    backup_dir = run_dir / backup_name
    completed = _backed_up_epochs(backup_dir) or _phase_offset(run_dir)
    _trim_history(run_dir / HISTORY_FILE, completed)
    best = _history_best(run_dir)
    if checkpoint is None:
        checkpoint = keras.callbacks.ModelCheckpoint(
            run_dir / MODEL_FILE,
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=None if best == -math.inf else best,
        )
    elif best != -math.inf:
        checkpoint.best = best
    history = run_dir / HISTORY_FILE
    first_epoch = _phase_offset(run_dir)  # this phase's first epoch
    callbacks = [
        randomness,
        LogLearningRate(),
        keras.callbacks.CSVLogger(history, append=True),
        checkpoint,
        ResumableReduceLROnPlateau(
            history,
            first_epoch,
            monitor="val_loss",
            mode="min",
            factor=0.5,
            patience=config.reduce_lr_patience,
            min_lr=1e-6,
        ),
        ThresholdStop(config.stop_train_accuracy, config.stop_val_accuracy),
        ResumableEarlyStopping(
            history,
            first_epoch,
            monitor="val_loss",
            mode="min",
            patience=config.early_stopping_patience,
        ),
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
    ]
    if os.environ.get(KILL_HOOK):
        callbacks.append(_KillAt(os.environ[KILL_HOOK]))
    return callbacks


def _phase_offset(run_dir: Path) -> int:
    """Epochs of phase 1 once it is complete (fine-tuning continues its epoch count)."""
    marker = run_dir / "phase1_epochs.txt"
    return int(marker.read_text()) if marker.is_file() else 0


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        # Integer labels; identical to the reference's categorical cross-entropy on one-hot.
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _phase1_done(run_dir: Path) -> int | None:
    marker = run_dir / "phase1_epochs.txt"
    return int(marker.read_text()) if marker.is_file() else None


def _finish_phase1(run_dir: Path) -> int:
    from model_build.train import _history_rows

    epochs = len(_history_rows(run_dir / HISTORY_FILE))
    (run_dir / "phase1_epochs.txt").write_text(f"{epochs}\n")
    return epochs


def train_plain(config, run_dir: Path, model, train: PreparedSplit, val: PreparedSplit, strategy):
    """Phase 1 on the fly: augmented batches from the prepared arrays through the whole model."""
    from model_build.pipeline import EpochRandomness, eval_dataset, train_dataset

    done = _phase1_done(run_dir)
    if done is not None:
        print(f"phase 1 already complete ({done} epochs); skipping it")
        return done
    with strategy.scope():
        _compile(model, config.learning_rate)
    randomness = EpochRandomness(config.seed)
    train_data = train_dataset(
        train.pixels,
        train.label_indices,
        batch_size=config.batch_size,
        seed=config.seed,
        randomness=randomness,
    )
    val_data = eval_dataset(val.pixels, val.label_indices, batch_size=config.batch_size)
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        callbacks=_callbacks(config, run_dir, "backup", randomness),
        shuffle=False,  # the tf.data pipeline shuffles (seeded)
        verbose=2,
    )
    return _finish_phase1(run_dir)


def train_head_on_features(
    config, run_dir: Path, model, train: PreparedSplit, val: PreparedSplit, strategy
):
    """Phase 1 with ``--feature-cache-views K``: the head alone on cached backbone features."""
    from model_build.feature_cache import (
        HEAD_NAME,
        SaveFullModel,
        compute_features,
        head_eval_dataset,
        head_train_dataset,
    )
    from model_build.pipeline import EpochRandomness
    from model_build.train import _backed_up_epochs

    done = _phase1_done(run_dir)
    if done is not None:
        print(f"phase 1 already complete ({done} epochs); skipping it")
        return done
    views = config.feature_cache_views
    cache = run_dir / "feature_cache"
    train_path, val_path = cache / f"train_{views}_views.npy", cache / "val.npy"
    if train_path.is_file():
        train_features = np.load(train_path, mmap_mode="r")
    else:
        print(f"computing backbone features for {views} augmented views of {len(train)} images")
        train_features = compute_features(
            model, train.pixels, train_path, views=views, seed=config.seed,
            batch_size=config.batch_size,
        )  # fmt: skip
    if val_path.is_file():
        val_features = np.load(val_path, mmap_mode="r")
    else:
        val_features = compute_features(
            model, val.pixels, val_path, views=0, seed=config.seed, batch_size=config.batch_size
        )
    head = model.get_layer(HEAD_NAME)
    with strategy.scope():
        _compile(head, config.learning_rate)
    train_data, steps = head_train_dataset(
        train_features,
        train.label_indices,
        views=views,
        batch_size=config.batch_size,
        seed=config.seed,
        first_epoch=_backed_up_epochs(run_dir / "backup"),
    )
    val_data = head_eval_dataset(val_features, val.label_indices, batch_size=config.batch_size)
    checkpoint = SaveFullModel(model, run_dir / MODEL_FILE)
    head.fit(
        train_data,
        validation_data=val_data,
        epochs=config.epochs,
        steps_per_epoch=steps,
        callbacks=_callbacks(
            config, run_dir, "backup", EpochRandomness(config.seed), checkpoint=checkpoint
        ),
        shuffle=False,
        verbose=2,
    )
    return _finish_phase1(run_dir)


def fine_tune(
    config, run_dir: Path, train: PreparedSplit, val: PreparedSplit, strategy, epochs_done: int
) -> int:
    """Phase 2: from the best phase-1 checkpoint, unfreeze the top N backbone layers.

    BatchNorm layers stay frozen (and the backbone is called with training=False), so their
    moving statistics are not wrecked by small batches — the keras-io transfer-learning recipe.
    """
    from model_build.model import BACKBONE_NAME
    from model_build.pipeline import EpochRandomness, eval_dataset, train_dataset

    with strategy.scope():
        model = keras.models.load_model(run_dir / MODEL_FILE)
        unfreeze_top_layers(model.get_layer(BACKBONE_NAME), config.fine_tune_layers)
        _compile(model, config.fine_tune_learning_rate)
    randomness = EpochRandomness(config.seed + 1)
    train_data = train_dataset(
        train.pixels,
        train.label_indices,
        batch_size=config.batch_size,
        seed=config.seed + 1,
        randomness=randomness,
    )
    val_data = eval_dataset(val.pixels, val.label_indices, batch_size=config.batch_size)
    model.fit(
        train_data,
        validation_data=val_data,
        initial_epoch=epochs_done,
        epochs=epochs_done + config.fine_tune_epochs,
        callbacks=_callbacks(config, run_dir, "backup_fine_tune", randomness),
        shuffle=False,
        verbose=2,
    )
    from model_build.train import _history_rows

    return len(_history_rows(run_dir / HISTORY_FILE))


def unfreeze_top_layers(backbone: keras.Model, count: int) -> None:
    """Make the top ``count`` layers of ``backbone`` trainable, except BatchNormalization."""
    if count <= 0:
        raise ValueError(f"the number of layers to unfreeze must be positive, got {count}")
    backbone.trainable = True
    for index, layer in enumerate(backbone.layers):
        in_top = index >= len(backbone.layers) - count
        layer.trainable = in_top and not isinstance(layer, keras.layers.BatchNormalization)


def plot_history(rows: list[dict], path: Path) -> None:
    """Accuracy and loss curves, train and val, per epoch (the reference's training plots)."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4))
    for axis, metric in ((left, "accuracy"), (right, "loss")):
        axis.plot(epochs, [float(row[metric]) for row in rows], label=f"train {metric}")
        axis.plot(epochs, [float(row[f"val_{metric}"]) for row in rows], label=f"val {metric}")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def remove_backups(run_dir: Path) -> None:
    """Delete the resume backups and cached features once a run has finished."""
    for name in ("backup", "backup_fine_tune", "feature_cache"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
