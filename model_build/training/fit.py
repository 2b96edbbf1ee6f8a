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
determinism is on): :class:`model_build.data.pipeline.EpochRandomness` (first in the list) makes
each
epoch's shuffle, augmentation and dropout a function of ``(seed, epoch)``, and the plateau and
early-stopping callbacks (:class:`ResumableReduceLROnPlateau`, :class:`ResumableEarlyStopping`)
rebuild their patience bookkeeping from the phase's rows of ``history.csv`` instead of starting
afresh. Not covered: a kill in the instant after the epoch that stops training early was backed
up but before the phase was marked complete; the rerun then trains one more epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from model_build.config import Plan
from model_build.data.pipeline import (
    EpochRandomness,
    compile_for,
    eval_dataset,
    pad_for_replicas,
    train_dataset,
)
from model_build.data.prepare import PreparedSplit
from model_build.run_folder import RunFolder
from model_build.training.feature_cache import (
    cached_features,
    head_eval_dataset,
    head_train_dataset,
)
from model_build.training.fine_tune import (
    cached_activations,
    compile_two_rates,
    features_from_activations,
    fine_tuning_model,
    freeze_for_fine_tuning,
    split_backbone,
)
from model_build.training.model import parts_of


@dataclass
class Trained:
    """What training hands to evaluation and export: the model holding the best weights."""

    model: keras.Model
    epochs: int  # rows of history.csv
    best_val_accuracy: float | None


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


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best epoch (val accuracy) in memory, beside the checkpoint file,
    so the model handed to evaluation and export needs no reload of ``model.keras``."""

    def __init__(self, model: keras.Model, best: float) -> None:
        super().__init__()
        self.target = model
        self.best = best
        self.weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get("val_accuracy")
        if value is not None and value > self.best:
            self.best = float(value)
            self.weights = self.target.get_weights()


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

    run: RunFolder
    first_epoch: int

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        rows = [row for row in self.run.history_rows() if int(row["epoch"]) >= self.first_epoch]
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
    def __init__(self, run: RunFolder, first_epoch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run, self.first_epoch = run, first_epoch


class ResumableEarlyStopping(_ReplayHistory, keras.callbacks.EarlyStopping):
    def __init__(self, run: RunFolder, first_epoch: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run, self.first_epoch = run, first_epoch


class SaveFullModel(keras.callbacks.Callback):
    """While the head trains on cached features, save the *full* model on val-accuracy gains."""

    def __init__(self, full_model: keras.Model, path, initial_best: float = -math.inf):
        super().__init__()
        self.full_model = full_model
        self.path = path
        self.best = initial_best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get("val_accuracy")
        if value is not None and value > self.best:
            self.best = float(value)
            self.full_model.save(self.path)


def _callbacks(
    plan: Plan,
    run: RunFolder,
    phase: str,
    randomness,
    best: BestWeights,
    checkpoint=None,
    *,
    threshold_stop: bool = True,
) -> list:
    config = plan.config
    first_epoch = run.phase1_epochs() or 0  # this phase's first epoch
    completed = run.backed_up_epochs(phase) or first_epoch
    run.trim_history(completed)
    history_best = run.best_val_accuracy()
    if checkpoint is None:
        checkpoint = keras.callbacks.ModelCheckpoint(
            run.model_file,
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=history_best,
        )
    elif history_best is not None:
        checkpoint.best = history_best
    if history_best is not None:
        best.best = history_best
    return [
        randomness,
        LogLearningRate(),
        keras.callbacks.CSVLogger(run.history_file, append=True),
        checkpoint,
        best,
        ResumableReduceLROnPlateau(
            run,
            first_epoch,
            monitor="val_loss",
            mode="min",
            factor=0.5,
            patience=config.reduce_lr_patience,
            min_lr=1e-6,
        ),
        *(
            [ThresholdStop(config.stop_train_accuracy, config.stop_val_accuracy)]
            if threshold_stop
            else []
        ),
        ResumableEarlyStopping(
            run,
            first_epoch,
            monitor="val_loss",
            mode="min",
            patience=config.early_stopping_patience,
        ),
        keras.callbacks.BackupAndRestore(run.backup_dir(phase), delete_checkpoint=False),
    ]


def _compile(model: keras.Model, plan: Plan, learning_rate: float) -> None:
    compile_for(model, learning_rate, plan.replicas, label_smoothing=plan.config.label_smoothing)


def train(
    plan: Plan,
    run: RunFolder,
    model: keras.Model,
    train_split: PreparedSplit,
    val_split: PreparedSplit,
    strategy,
) -> Trained:
    """Phase 1 (on the fly, or the head on cached features), then optional fine-tuning.

    Returns the model holding its best weights (val accuracy), as saved in ``model.keras``.
    """
    inputs = PhaseInputs(plan, run, model, train_split, val_split, strategy)
    if plan.fine_tunes_from_block:
        return train_from_activations(inputs)
    best = BestWeights(model, -math.inf)
    done = run.phase1_epochs()
    if done is not None:
        print(f"phase 1 already complete ({done} epochs); skipping it")
    elif plan.uses_feature_cache:
        train_head_on_features(inputs, best)
    else:
        train_plain(inputs, best)
    if plan.config.fine_tune_layers > 0 and plan.uses_backbone:
        _restore_best(run, model, best)
        best = BestWeights(model, -math.inf)
        fine_tune(inputs, best)
    _restore_best(run, model, best)
    return Trained(model=model, epochs=len(run.history_rows()), best_val_accuracy=best.best)


def _restore_best(run: RunFolder, model: keras.Model, best: BestWeights) -> None:
    """Put the best epoch's weights into ``model``: from memory, or (when that epoch ran in an
    earlier, interrupted process) from ``model.keras``."""
    history_best = run.best_val_accuracy()
    if best.weights is not None and (history_best is None or best.best >= history_best):
        model.set_weights(best.weights)
    elif run.model_file.is_file():
        model.load_weights(run.model_file)


@dataclass(frozen=True)
class PhaseInputs:
    """What every training phase works on: the plan, the run folder, the model, the prepared
    splits (``train`` fits, ``val`` chooses the checkpoint) and the distribution strategy."""

    plan: Plan
    run: RunFolder
    model: keras.Model
    train_split: PreparedSplit
    val_split: PreparedSplit
    strategy: Any


def train_plain(inputs: PhaseInputs, best: BestWeights) -> int:
    """Phase 1 on the fly: augmented batches from the prepared arrays through the whole model."""
    plan = inputs.plan
    with inputs.strategy.scope():
        _compile(inputs.model, plan, plan.learning_rate)
    _fit_on_pixels(
        inputs, best, phase="phase1", seed=plan.config.seed, epochs=(0, plan.config.epochs)
    )
    return inputs.run.finish_phase1()


def train_head_on_features(
    inputs: PhaseInputs,
    best: BestWeights,
    features: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
) -> int:
    """Phase 1 with ``--feature-cache-views K``: the head alone on cached backbone features
    (``features``: the train views' and val's, when already computed — from activations)."""
    plan, run, model = inputs.plan, inputs.run, inputs.model
    config = plan.config
    batch_size = plan.global_batch_size
    if features is None:
        views = config.feature_cache_views
        settings = {
            "seed": config.seed,
            "batch_size": batch_size,
            "cache_dir": plan.cache_dir,
            "strategy": inputs.strategy,
        }
        train_features = cached_features(
            model, inputs.train_split, views=views, name="train", **settings
        )
        val_features = cached_features(model, inputs.val_split, views=0, name="val", **settings)
    else:
        train_features, val_features = features
        views = len(train_features)
    head = parts_of(model).head
    with inputs.strategy.scope():
        _compile(head, plan, plan.learning_rate)
    train_data, steps = head_train_dataset(
        train_features,
        inputs.train_split.label_indices,
        views=views,
        batch_size=batch_size,
        seed=config.seed,
        first_epoch=run.backed_up_epochs("phase1"),
    )
    val_data = head_eval_dataset(
        val_features, inputs.val_split.label_indices, batch_size=batch_size
    )
    checkpoint = SaveFullModel(model, run.model_file)
    best.target = model
    head.fit(
        pad_for_replicas(train_data, plan.replicas),
        validation_data=pad_for_replicas(val_data, plan.replicas),
        epochs=config.epochs,
        steps_per_epoch=steps,
        callbacks=_callbacks(
            plan, run, "phase1", EpochRandomness(config.seed), best, checkpoint=checkpoint
        ),
        shuffle=False,
        verbose=plan.verbose,
    )
    return run.finish_phase1()


def fine_tune(inputs: PhaseInputs, best: BestWeights) -> int:
    """Phase 2: from the best phase-1 weights, unfreeze the top N backbone layers.

    BatchNorm layers stay frozen (and the backbone is called with training=False), so their
    moving statistics are not wrecked by small batches — the keras-io transfer-learning recipe.
    """
    plan = inputs.plan
    config = plan.config
    epochs_done = inputs.run.phase1_epochs() or 0
    with inputs.strategy.scope():
        unfreeze_top_layers(parts_of(inputs.model).backbone, config.fine_tune_layers)
        _compile(inputs.model, plan, plan.fine_tune_learning_rate)
    _fit_on_pixels(
        inputs,
        best,
        phase="fine_tune",
        seed=config.seed + 1,
        epochs=(epochs_done, epochs_done + config.fine_tune_epochs),
    )
    return len(inputs.run.history_rows())


def _fit_on_pixels(
    inputs: PhaseInputs, best: BestWeights, *, phase: str, seed: int, epochs: tuple[int, int]
) -> None:
    """Fit the whole (compiled) model on augmented batches of the prepared arrays, from epoch
    ``epochs[0]`` up to ``epochs[1]``, with the phase's callbacks: phase 1 on the fly and
    fine-tuning both train this way."""
    plan = inputs.plan
    randomness = EpochRandomness(seed)
    train_data = train_dataset(
        inputs.train_split.pixels,
        inputs.train_split.label_indices,
        batch_size=plan.global_batch_size,
        seed=seed,
        randomness=randomness,
    )
    val_data = eval_dataset(
        inputs.val_split.pixels, inputs.val_split.label_indices, batch_size=plan.global_batch_size
    )
    inputs.model.fit(
        pad_for_replicas(train_data, plan.replicas),
        validation_data=pad_for_replicas(val_data, plan.replicas),
        initial_epoch=epochs[0],
        epochs=epochs[1],
        callbacks=_callbacks(plan, inputs.run, phase, randomness, best),
        shuffle=False,  # the tf.data pipeline shuffles (seeded)
        verbose=plan.verbose,
    )


def unfreeze_top_layers(backbone: keras.Model, count: int) -> None:
    """Make the top ``count`` layers of ``backbone`` trainable, except BatchNormalization."""
    if count <= 0:
        raise ValueError(f"the number of layers to unfreeze must be positive, got {count}")
    backbone.trainable = True
    for index, layer in enumerate(backbone.layers):
        in_top = index >= len(backbone.layers) - count
        layer.trainable = in_top and not isinstance(layer, keras.layers.BatchNormalization)


def train_from_activations(inputs: PhaseInputs) -> Trained:
    """``--fine-tune-from BLOCK``: activations at the block cached once per view, the head on the
    frozen features derived from them, then the top blocks and the head fine-tuned on them
    (:mod:`model_build.training.fine_tune`). Returns the whole model with its best weights."""
    plan, run, model = inputs.plan, inputs.run, inputs.model
    config = plan.config
    parts = parts_of(model)
    block = config.fine_tune_from
    below, top = split_backbone(parts.backbone, block)
    settings = {
        "block": block,
        "seed": config.seed,
        "batch_size": plan.global_batch_size,
        "cache_dir": plan.cache_dir,
        "strategy": inputs.strategy,
    }
    train_activations = cached_activations(
        parts, below, inputs.train_split, views=plan.activation_views, name="train", **settings
    )
    val_activations = cached_activations(
        parts, below, inputs.val_split, views=0, name="selection", **settings
    )
    best = BestWeights(model, -math.inf)
    done = run.phase1_epochs()
    if done is not None:
        print(f"phase 1 already complete ({done} epochs); skipping it")
    else:
        derived = {
            "block": block,
            "batch_size": plan.global_batch_size,
            "cache_dir": plan.cache_dir,
            "strategy": inputs.strategy,
        }
        features = (
            features_from_activations(
                parts, top, train_activations, content_hash=inputs.train_split.content_hash,
                name="train", **derived,
            ),
            features_from_activations(
                parts, top, val_activations, content_hash=inputs.val_split.content_hash,
                name="selection", **derived,
            ),
        )  # fmt: skip
        train_head_on_features(inputs, best, features=features)
    _restore_best(run, model, best)
    best = BestWeights(model, -math.inf)
    fine_tune_top(
        inputs, top, (train_activations, inputs.train_split.label_indices),
        (val_activations, inputs.val_split.label_indices), best,
    )  # fmt: skip
    _restore_best(run, model, best)
    return Trained(model=model, epochs=len(run.history_rows()), best_val_accuracy=best.best)


def fine_tune_top(
    inputs: PhaseInputs,
    top: keras.Model,
    train: tuple[list[np.ndarray], np.ndarray],
    val: tuple[list[np.ndarray], np.ndarray],
    best: BestWeights,
) -> int:
    """Phase 2 of ``--fine-tune-from``: the top blocks (BatchNorm in inference mode) and the
    warm-started head on the cached activations, two learning rates; checkpoints the whole
    model."""
    plan, run, model = inputs.plan, inputs.run, inputs.model
    config = plan.config
    (train_activations, train_labels), (val_activations, val_labels) = train, val
    epochs_done = run.phase1_epochs() or 0
    with inputs.strategy.scope():
        freeze_for_fine_tuning(top)
        trainer = fine_tuning_model(top, parts_of(model).head)
        compile_two_rates(
            trainer,
            top,
            head_learning_rate=plan.fine_tune_head_learning_rate,
            backbone_learning_rate=plan.fine_tune_learning_rate,
            replicas=plan.replicas,
            label_smoothing=config.label_smoothing,
        )
    completed = max(run.backed_up_epochs("fine_tune") - epochs_done, 0)
    train_data, steps = head_train_dataset(
        train_activations,
        train_labels,
        views=len(train_activations),
        batch_size=plan.global_batch_size,
        seed=config.seed + 1,
        first_epoch=completed,
    )
    val_data = head_eval_dataset(val_activations, val_labels, batch_size=plan.global_batch_size)
    best.target = model
    trainer.fit(
        pad_for_replicas(train_data, plan.replicas),
        validation_data=pad_for_replicas(val_data, plan.replicas),
        initial_epoch=epochs_done,
        epochs=epochs_done + config.fine_tune_epochs,
        steps_per_epoch=steps,
        callbacks=_callbacks(
            plan,
            run,
            "fine_tune",
            EpochRandomness(config.seed + 1),
            best,
            checkpoint=SaveFullModel(model, run.model_file),
            # The warm-started head already crosses the reference's thresholds (measured: the
            # first fine-tuning epochs did on the grocery photos), so they would end the phase
            # after one or two epochs; it runs its --fine-tune-epochs, the checkpoint keeping
            # the best selection accuracy and early stopping the safety net.
            threshold_stop=False,
        ),
        shuffle=False,
        verbose=plan.verbose,
    )
    return len(run.history_rows())
