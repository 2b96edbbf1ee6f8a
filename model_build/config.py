"""The settings of a training run (:class:`TrainConfig`) and what follows from them (:class:`Plan`).

``TrainConfig`` is what the user chose (every command-line flag; written to ``config.json``).
``Plan`` is frozen and holds every derived value a run needs — the run folder, whether it
resumes, the dataset actually used, where the exported model will be, the replicas and the batch
size and learning rate scaled for them — so no function reads a setting from a side channel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from model_build.training.backbones import backbone_spec, default_weights, describe_model

DEFAULT_ARTIFACTS: Final[str] = "artifacts"
EXIT_USER_ERROR: Final[int] = 2
# Augmented views per training photo whose activations --fine-tune-from caches by default.
DEFAULT_FINE_TUNE_VIEWS: Final[int] = 2


class UserError(Exception):
    """Something the user can fix (a flag, the data, the weights); exits with ``status``."""

    def __init__(self, message: str, status: int = EXIT_USER_ERROR) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class TrainConfig:
    """Every setting of a run; written to ``config.json``. Defaults mirror the reference."""

    data: str | None = None  # dataset folder; None = generated sample data (embedded default)
    # More dataset folders (--data given again, e.g. a reviewed-photos export): train only.
    extra_data: list[str] = field(default_factory=list)
    val_fraction: float = 0.2  # only when val is split off by content hash
    # Of train/, per label: the selection split (checkpoint, LR drops, stopping; data.splits).
    selection_fraction: float = 0.1
    holdout_fraction: float = 0.5  # of val, held out for evaluation when there is no test/
    out: str | None = None  # run folder; None = runs/<UTC timestamp> (or the run being resumed)
    model: str | None = None  # a backbone registry name or small; None = mobilenet_v2 with --data
    head: str = "reference"  # backbone models' head: reference (exact) | gap (bench/real_photos.py)
    weights: str | None = None  # imagenet | PATH | none; None = imagenet for a pretrained backbone
    epochs: int | None = None  # None = 50 (real data) or 25 (sample data); threshold stop ends it
    batch_size: int = 32  # per replica (one device: the batch)
    seed: int = 0
    learning_rate: float = 1e-3  # Adam, as the reference (one replica; scaled with replicas)
    stop_train_accuracy: float = 0.96  # stop once train accuracy exceeds this ...
    stop_val_accuracy: float = 0.94  # ... and val accuracy exceeds this
    reduce_lr_patience: int = 3  # ReduceLROnPlateau on val_loss, factor 0.5
    early_stopping_patience: int = 10  # safety net on val_loss
    fine_tune_layers: int = 0  # unfreeze the top N backbone layers (BatchNorm stays frozen)
    fine_tune_learning_rate: float = 1e-5  # the backbone's rate while fine-tuning
    fine_tune_epochs: int = 10
    # Fine-tune the backbone from this block up (e.g. block_14_expand) on activations cached
    # below it (model_build/training/fine_tune.py); the head warm-starts from the frozen phase.
    fine_tune_from: str | None = None
    fine_tune_head_learning_rate: float = 1e-4  # the head's rate in that phase
    # ε > 0: every phase trains on smoothed targets (1 - ε + ε/K for the label, ε/K otherwise).
    label_smoothing: float = 0.0
    feature_cache_views: int = 0  # K > 0: train the head on K cached augmented views
    publish: str | None = None  # folder or s3://; None = ./artifacts for the sample, else none
    # The review rule (model_build.evaluation.calibration): auto-catalogued precision ≥ target
    # with this confidence, certified on the calibration split.
    target_precision: float = 0.98
    threshold_confidence: float = 0.95
    # Photos unlike every label (not baby products) for the unfamiliarity report; None = drawings.
    unfamiliar: str | None = None
    workers: int | None = None  # decode processes; None = one per CPU
    cache_dir: str | None = None  # prepare and feature caches; None = .cache/prepared
    deterministic: bool = False  # op determinism also on GPU (always on for CPU-only runs)
    fresh: bool = False  # never resume an earlier unfinished run

    def resolved(self) -> TrainConfig:
        """Fill the defaults that depend on other settings."""
        sample = self.data is None
        model = self.model or ("small" if sample else "mobilenet_v2")
        weights = self.weights or default_weights(model)
        epochs = self.epochs if self.epochs is not None else (25 if sample else 50)
        publish = self.publish
        if publish is None:
            publish = DEFAULT_ARTIFACTS if sample else "none"
        values = {**asdict(self), "model": model, "weights": weights}
        return TrainConfig(**{**values, "epochs": epochs, "publish": publish})

    def identity(self) -> dict:
        """The settings that define "the same command" for resuming (all but the output folder)."""
        values = asdict(self)
        for key in ("out", "fresh", "workers"):
            values.pop(key)
        return values

    @property
    def publishes(self) -> bool:
        return bool(self.publish) and str(self.publish).lower() != "none"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from ``config.json`` (unknown keys, e.g. of older runs, are ignored)."""
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass(frozen=True)
class Plan:
    """Every derived value of a run, fixed before anything slow happens."""

    config: TrainConfig
    run_dir: Path
    resuming: bool
    data_dir: Path
    sample_data: bool  # the generated sample dataset (no --data)
    layout: str
    labels: tuple[str, ...]
    files: dict[str, int]  # split -> files found (before the audit removes unusable ones)
    export_dir: Path  # where model.tflite (and model_int8.tflite) are written
    cache_dir: Path  # prepare cache (decoded pixels) and feature caches
    replicas: int = 1  # devices in the distribution strategy
    global_batch_size: int = 32  # batch_size x replicas
    learning_rate: float = 1e-3  # learning_rate x replicas (linear scaling rule)
    fine_tune_learning_rate: float = 1e-5
    fine_tune_head_learning_rate: float = 1e-4
    evaluation_split: str = "held_out"  # held_out | calibration: where the numbers are reported
    verbose: int = 2  # Keras progress: 1 = a live bar (terminal), 2 = one line per epoch (logs)

    @property
    def uses_backbone(self) -> bool:
        return backbone_spec(self.config.model) is not None

    @property
    def fine_tunes_from_block(self) -> bool:
        return bool(self.config.fine_tune_from) and self.uses_backbone

    @property
    def activation_views(self) -> int:
        """Augmented views per training photo whose activations ``--fine-tune-from`` caches."""
        return self.config.feature_cache_views or DEFAULT_FINE_TUNE_VIEWS

    @property
    def uses_feature_cache(self) -> bool:
        return self.config.feature_cache_views > 0 and backbone_spec(self.config.model) is not None

    def lines(self) -> list[str]:
        """The plan as the run prints it, first thing."""
        config = self.config

        counts = ", ".join(f"{split} {count}" for split, count in self.files.items())
        lines = [
            "plan:",
            f"  data      {self.data_dir} ({self.layout} layout)",
            *(f"  + data    {extra} (added to train only)" for extra in config.extra_data),
            f"  labels    {len(self.labels)}: {', '.join(self.labels)}",
            f"  images    {counts} (files found; the audit lists any it cannot use)",
            f"  model     {describe_model(config.model, config.head)}",
            f"  weights   {config.weights}",
        ]
        epochs = f"{config.epochs} (stops early at train > {config.stop_train_accuracy}"
        epochs += f" and selection > {config.stop_val_accuracy})"
        batch = f"batch {self.global_batch_size}, Adam {self.learning_rate:g}"
        if self.replicas > 1:
            batch += f" ({self.replicas} replicas × batch {config.batch_size}, rate scaled)"
        if config.label_smoothing:
            batch += f", label smoothing {config.label_smoothing:g}"
        lines.append(f"  epochs    {epochs}, {batch}")
        if config.feature_cache_views and not self.uses_feature_cache:
            lines.append("  features  --feature-cache-views needs a backbone; training on the fly")
        elif config.feature_cache_views and not self.fine_tunes_from_block:
            lines.append(
                f"  features  cached for {config.feature_cache_views} augmented views per image"
                f" in {self.cache_dir} (kept across runs)"
            )
        if self.fine_tunes_from_block:
            lines.append(
                f"  fine-tune from {config.fine_tune_from} up, on its activations cached for "
                f"{self.activation_views} augmented views per image in {self.cache_dir}: "
                f"{config.fine_tune_epochs} epochs, backbone {self.fine_tune_learning_rate:g}, "
                f"head {self.fine_tune_head_learning_rate:g} (BatchNorm in inference mode)"
            )
        if config.fine_tune_layers:
            lines.append(
                f"  fine-tune top {config.fine_tune_layers} backbone layers for "
                f"{config.fine_tune_epochs} epochs at {self.fine_tune_learning_rate:g}"
            )
        lines.append(
            "  roles     train fits; selection chooses checkpoint and schedule; calibration fits "
            "temperature, threshold, int8 and unfamiliarity"
        )
        lines.append(f"  evaluate  on {self.evaluation_split} (reports only)")
        lines.append(f"  export    {self.export_dir} (model.tflite, model_int8.tflite)")
        lines.append(f"  publish   {config.publish}")
        resuming = " (resuming an unfinished run)" if self.resuming else ""
        lines.append(f"  run       {self.run_dir}{resuming}")
        return lines
