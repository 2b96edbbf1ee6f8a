"""Train the classifier: ``python -m model_build.train [--data DIR] [options]``.

:func:`run` is the whole path, one step after the other, each module visited once:

1. settings checked (:mod:`model_build.config`), run folder chosen and proven writable
   (:mod:`model_build.run_folder`);
2. data discovered — every file hashed once (:mod:`model_build.data.dataset`,
   :mod:`model_build.data.splits`: one role per split — train, selection, calibration, held_out);
3. **the plan printed**, then the weights checked (downloaded if need be) — all before the slow
   part;
4. audit, which is the decode-once step (:mod:`model_build.data.audit`,
:mod:`model_build.data.prepare`),
   and the splits prepared as row files read on demand; the splits' content hashes recorded
   (``data.json``);
5. model (:mod:`model_build.training.model`) and training (:mod:`model_build.training.fit`), which
hands back the
   model holding its best weights;
6. evaluate (:mod:`model_build.evaluation.evaluate`) → export (:mod:`model_build.release.export`) →
publish
   (:mod:`model_build.release.publish`, only with ``--publish``), each given what the step before
   holds
   in memory.

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
import os
import sys
import time
from pathlib import Path
from typing import Final

import numpy as np

from model_build.config import Plan, TrainConfig, UserError
from model_build.data.audit import audit_dataset, print_report
from model_build.data.dataset import DatasetError, add_training_data, discover
from model_build.data.prepare import DEFAULT_CACHE_DIR, prepare_split
from model_build.data.splits import (
    CALIBRATION,
    HELD_OUT,
    SELECTION,
    TRAIN,
    assign_roles,
    check_roles,
    dataset_contents,
    reported_split,
)
from model_build.evaluation.evaluate import evaluate
from model_build.evaluation.review_agreement import agreement, entries_from_manifests
from model_build.progress import interactive
from model_build.quiet import tensorflow_quietly
from model_build.release.export import export_model
from model_build.release.publish import PublishError, publish_run
from model_build.run_folder import RunFolder, resolve_run_dir
from model_build.training.backbones import BACKBONES, fine_tune_block_problem
from sample_data.photos import generate_dataset

DEFAULT_SAMPLE_DIR: Final[Path] = Path("data/sample")
SAMPLE_TRAIN_PER_LABEL: Final[int] = 60
# 30, not 15: half of val is held out, and the bounded review threshold needs about 150
# fitting images to reach 0.98 precision at 95 % confidence (model_build/evaluation/calibration.py).
SAMPLE_VAL_PER_LABEL: Final[int] = 30
EXIT_WEIGHTS_UNAVAILABLE: Final[int] = 2
EXIT_BAD_DATA: Final[int] = 2
EXIT_NOT_PUBLISHED: Final[int] = 3  # trained and exported, but the publish gate refused it


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
    add(
        "--data",
        action="append",
        help="dataset folder: train/ val/ [test/] of label folders, or label folders; given again "
        "(e.g. a reviewed-photos export), each further folder is added to train only "
        "(default: generated sample data and the small stand-in model)",
    )
    add(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="share of each label split off as val by content hash when the dataset has no val/ "
        "(default: %(default)s)",
    )
    add(
        "--selection-fraction",
        type=float,
        default=defaults.selection_fraction,
        help="share of each label's train/ photos that chooses the checkpoint, learning-rate "
        "drops and stopping (never the calibration or held-out photos) (default: %(default)s)",
    )
    add(
        "--holdout-fraction",
        type=float,
        default=defaults.holdout_fraction,
        help="share of val held out for evaluation when there is no test/ (0 = none) "
        "(default: %(default)s)",
    )
    add("--out", help="run folder; rerun with it to resume (default: runs/<UTC timestamp>)")
    add(
        "--model",
        choices=(*BACKBONES, "small"),
        help="the reference backbone or the small stand-in CNN "
        "(default: mobilenet_v2 with --data, small without)",
    )
    add(
        "--head",
        choices=("reference", "gap"),
        default=defaults.head,
        help="backbone models' head: the reference head, or global average pooling + dense "
        "(default: %(default)s)",
    )
    add(
        "--weights",
        help="imagenet | PATH to the backbone's no-top weights | none "
        "(default: imagenet for mobilenet_v2)",
    )
    add(
        "--epochs",
        type=int,
        help="most epochs; the accuracy thresholds usually stop training earlier "
        "(default: 50 with --data, 25 on the sample data)",
    )
    add(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="per device (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seeds the splits, shuffling, augmentation and dropout (default: %(default)s)",
    )
    add(
        "--learning-rate",
        type=float,
        default=defaults.learning_rate,
        help="Adam's rate for one device, scaled with the devices (default: %(default)s)",
    )
    add(
        "--stop-train-accuracy",
        type=float,
        default=defaults.stop_train_accuracy,
        help="stop once train accuracy exceeds this and val accuracy --stop-val-accuracy "
        "(default: %(default)s)",
    )
    add(
        "--stop-val-accuracy",
        type=float,
        default=defaults.stop_val_accuracy,
        help="see --stop-train-accuracy (default: %(default)s)",
    )
    add(
        "--reduce-lr-patience",
        type=int,
        default=defaults.reduce_lr_patience,
        help="epochs without a better val loss before the learning rate is halved "
        "(default: %(default)s)",
    )
    add(
        "--early-stopping-patience",
        type=int,
        default=defaults.early_stopping_patience,
        help="epochs without a better val loss before training stops (default: %(default)s)",
    )
    add(
        "--fine-tune-layers",
        type=int,
        default=defaults.fine_tune_layers,
        help="second phase: unfreeze the backbone's top N layers, BatchNorm stays frozen "
        "(default: %(default)s, no second phase)",
    )
    add(
        "--fine-tune-learning-rate",
        type=float,
        default=defaults.fine_tune_learning_rate,
        help="the second phase's learning rate (default: %(default)s)",
    )
    add(
        "--fine-tune-epochs",
        type=int,
        default=defaults.fine_tune_epochs,
        help="the second phase's epochs (default: %(default)s)",
    )
    add(
        "--feature-cache-views",
        type=int,
        default=defaults.feature_cache_views,
        help="K > 0: compute the frozen backbone's features of K augmented views once and train "
        "the head on them; far faster on CPU, 5 is a good choice; with --fine-tune-from the "
        "activations at the block of K views (default: %(default)s, off; 2 with --fine-tune-from)",
    )
    add(
        "--publish",
        help="publish destination (folder or s3://bucket/prefix), or none "
        "(default: ./artifacts on the sample data, none with --data)",
    )
    add(
        "--fine-tune-from",
        metavar="BLOCK",
        help="fine-tune the backbone from this block up (block_1_expand … block_16_expand, e.g. "
        "block_13_expand) on activations cached below it, after the head trained on the frozen "
        "features (default: off, the backbone stays frozen)",
    )
    add(
        "--fine-tune-head-learning-rate",
        type=float,
        default=defaults.fine_tune_head_learning_rate,
        help="the head's rate while --fine-tune-from trains the top; the backbone's is "
        "--fine-tune-learning-rate (default: %(default)s)",
    )
    add(
        "--label-smoothing",
        type=float,
        default=defaults.label_smoothing,
        help="ε in [0, 1): train every phase on targets 1 - ε + ε/K for the label and ε/K for "
        "each other label (default: %(default)s, none)",
    )
    add(
        "--target-precision",
        type=float,
        default=defaults.target_precision,
        help="precision the auto-catalogued photos must reach, the review threshold's target "
        "(default: %(default)s)",
    )
    add(
        "--threshold-confidence",
        type=float,
        default=defaults.threshold_confidence,
        help="confidence that the target holds, Clopper-Pearson, fixed-sequence "
        "(default: %(default)s)",
    )
    add(
        "--unfamiliar",
        help="folder of your own photos unlike every label (not baby products), for the "
        "unfamiliarity report (default: generated drawings)",
    )
    add("--workers", type=int, help="decode processes (default: one per CPU)")
    add("--cache-dir", help="prepare and feature cache folder (default: .cache/prepared)")
    add(
        "--deterministic",
        action="store_true",
        help="op determinism on GPU too, slower (default: off; always on for CPU)",
    )
    add(
        "--fresh",
        action="store_true",
        help="start a new run even if an unfinished one matches (default: off, resume it)",
    )
    values = vars(parser.parse_args(argv))
    folders = values.pop("data") or []
    return TrainConfig(**values, data=folders[0] if folders else None, extra_data=folders[1:])


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ log lines are noise to the user (the start-up ones are captured by
    # model_build.quiet); set TF_CPP_MIN_LOG_LEVEL yourself to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    config = parse_arguments(argv).resolved()
    try:
        return run(config)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status


# --- the run ----------------------------------------------------------------------------------


def run(config: TrainConfig) -> int:
    started = time.monotonic()

    # 1. Settings and the run folder: everything that can fail without touching the data.
    check_choices(config)
    run_folder, resuming = resolve_run_dir(config)
    run_folder.ensure_writable()
    _check_publish_destination(config)

    # 2. Data: discover (hashes every file once) and set the held-out part aside.
    dataset = discover_data(config)

    # 3. The plan, then the weights (downloaded now if needed): before anything slow happens.
    strategy, replicas = distribution(config)
    plan = make_plan(config, run_folder, resuming, dataset, replicas)
    print("\n".join(plan.lines()), flush=True)
    check_weights(config)

    # 4. Audit = decode once (into the prepare cache), then the splits as row files.

    audit = audit_dataset(
        dataset, run_folder.path, cache_dir=plan.cache_dir, workers=config.workers
    )
    print_report(audit.report)
    dataset = dataset.without(set(audit.unusable))
    splits = {
        name: prepare_split(dataset, name, cache_dir=plan.cache_dir, results=audit.results)
        for name in dataset.splits
    }
    train, selection = splits[TRAIN], splits[SELECTION]
    calibration_split = splits[CALIBRATION]
    if not (len(train) and len(selection) and len(calibration_split)):
        raise UserError(
            f"need usable images in train, selection and calibration (have {len(train)}, "
            f"{len(selection)} and {len(calibration_split)}): add photos to train/ and val/",
            EXIT_BAD_DATA,
        )
    run_folder.write_config(config)
    run_folder.write_labels(dataset.labels)
    run_folder.write_data(dataset)
    run_folder.write_state(config, "running")

    # 5. Model and training (optionally fine-tuning); the model comes back with its best weights.
    from model_build.data.augment import save_preview  # noqa: PLC0415 — model_build.data.augment loads TensorFlow; this module stays light without it
    from model_build.training.fit import train as train_model  # noqa: PLC0415 — model_build.training.fit loads TensorFlow; this module stays light without it
    from model_build.training.model import build_model  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    save_preview(_first_of_each_label(train), run_folder.preview_figure, seed=config.seed)
    with strategy.scope():
        model = build_model(
            config.model, num_classes=len(dataset.labels), weights=config.weights, head=config.head
        )
    # The checkpoint, learning-rate drops and stopping see the selection split only.
    trained = train_model(plan, run_folder, model, train, selection, strategy)
    run_folder.write_state(config, "trained")
    run_folder.remove_backups()

    # 6. Evaluate → export → publish, each with what the step before holds in memory.

    held_out = splits[HELD_OUT] if plan.evaluation_split == HELD_OUT else None
    val = calibration_split
    evaluation = evaluate(
        trained.model,
        run_folder,
        labels=list(dataset.labels),
        val=val,
        evaluation_name=plan.evaluation_split,
        evaluation=held_out,
        train=train,
        context={
            "model": config.model,
            "weights": config.weights,
            **_review_agreement(dataset),
        },
        target_precision=config.target_precision,
        threshold_confidence=config.threshold_confidence,
        unfamiliar_dir=Path(config.unfamiliar) if config.unfamiliar else None,
        batch_size=plan.global_batch_size,
        verbose=1 if plan.verbose == 1 else 0,
    )
    export_model(
        trained.model,
        plan.export_dir,
        calibration_split=val,
        representative_images=train.pixels,
        evaluation=evaluation,
        held_out=held_out,
    )
    version = None
    if config.publishes:
        try:
            version = publish_run(run_folder.path, config.publish)
        except PublishError as error:  # the quality gate (near chance, worse than latest)
            run_folder.write_state(config, "refused")
            print(
                f"not published: {error}; python -m model_build.publish {run_folder.path} --to "
                f"{config.publish} --force publishes it anyway (recorded in the manifest)",
                file=sys.stderr,
            )
            # A pipeline must be able to tell: the model was trained but not published.
            return EXIT_NOT_PUBLISHED
    run_folder.write_state(config, "done", published_version=version)

    wall = time.monotonic() - started
    published = f", published {version} to {config.publish}" if version else ""
    best = trained.best_val_accuracy
    print(
        f"done: best selection accuracy {best if best is not None else float('nan'):.4f} after "
        f"{trained.epochs} epochs in {wall:.0f} s — {run_folder.path}{published}"
    )
    return 0


# --- the steps --------------------------------------------------------------------------------


def check_choices(config: TrainConfig) -> None:
    """Refuse settings that cannot work or cannot produce a useful model, before anything slow."""
    weights_none = str(config.weights).lower() == "none"
    if config.model in BACKBONES and weights_none and config.fine_tune_layers <= 0:
        raise UserError(
            "--weights none with a frozen MobileNetV2 learns nothing (random backbone, features "
            "around 1e-12; 0.098 on the grocery photos, one class predicted): use --weights "
            "imagenet or PATH, or train the backbone too with --fine-tune-layers N"
        )
    problems = []
    if config.fine_tune_from:
        problem = fine_tune_block_problem(config.model, config.fine_tune_from)
        if problem:
            problems.append(problem)
        if config.fine_tune_layers:
            problems.append("--fine-tune-from and --fine-tune-layers are two ways to do one thing")
    if not 0.0 <= config.label_smoothing < 1.0:
        problems.append(f"--label-smoothing must be in [0, 1), got {config.label_smoothing}")
    if not 0.0 < config.selection_fraction < 1.0:
        problems.append(
            f"--selection-fraction must be between 0 and 1, got {config.selection_fraction}"
        )
    if not 0.0 < config.val_fraction < 1.0:
        problems.append(f"--val-fraction must be between 0 and 1, got {config.val_fraction}")
    if not 0.0 <= config.holdout_fraction < 1.0:
        problems.append(f"--holdout-fraction must be in [0, 1), got {config.holdout_fraction}")
    for name in ("batch_size", "epochs"):
        if getattr(config, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 < config.target_precision <= 1.0:
        problems.append(f"--target-precision must be in (0, 1], got {config.target_precision}")
    if not 0.0 < config.threshold_confidence < 1.0:
        problems.append(
            f"--threshold-confidence must be in (0, 1), got {config.threshold_confidence}"
        )
    for name in ("feature_cache_views", "fine_tune_layers", "fine_tune_epochs"):
        if getattr(config, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must not be negative")
    if config.unfamiliar is not None and not Path(config.unfamiliar).is_dir():
        problems.append(f"--unfamiliar {config.unfamiliar} does not exist or is not a folder")
    if config.data is not None and not Path(config.data).is_dir():
        problems.append(f"data folder {config.data} does not exist or is not a folder")
    if problems:
        raise UserError("; ".join(problems))


def _check_publish_destination(config: TrainConfig) -> None:
    if not config.publishes or "://" in str(config.publish):
        return  # s3:// is checked when publishing (it needs credentials and the network)
    RunFolder(config.publish).ensure_writable()


def discover_data(config: TrainConfig):
    if config.data is None and config.extra_data:
        raise UserError("more --data folders need a first one (the dataset to evaluate on)")
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
        dataset = assign_roles(
            dataset,
            selection_fraction=config.selection_fraction,
            held_out_fraction=config.holdout_fraction,
        )
        # After the roles: more folders only ever add to train (never to another role).
        dataset = add_training_data(dataset, [Path(folder) for folder in config.extra_data])
        check_roles(dataset_contents(dataset))
        return dataset
    except (DatasetError, ValueError) as error:
        raise UserError(str(error), EXIT_BAD_DATA) from error


def _review_agreement(dataset) -> dict:
    """Model vs reviewer per category, from the manifests of the reviewed exports trained on
    (the production model's first choices against people's decisions; a report section)."""
    reviewed = [extra.root for extra in dataset.extra if extra.reviewed]
    entries = entries_from_manifests(reviewed)
    if not entries:
        return {}
    source = ", ".join(str(root) for root in reviewed)
    return {"review_agreement": {"source": source, **agreement(entries)}}


def distribution(config: TrainConfig):
    """The distribution strategy and its replicas; seeds and op determinism set (imports TF).

    Several GPUs: ``MirroredStrategy`` (one replica per GPU). Otherwise the default strategy.
    """
    tf = tensorflow_quietly()
    import keras  # noqa: PLC0415 — after tensorflow_quietly, so TensorFlow starts without its noise

    keras.utils.set_random_seed(config.seed)
    gpus = tf.config.list_physical_devices("GPU")
    if config.deterministic or not gpus:
        tf.config.experimental.enable_op_determinism()
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return strategy, strategy.num_replicas_in_sync
    return tf.distribute.get_strategy(), 1


def make_plan(config: TrainConfig, run: RunFolder, resuming: bool, dataset, replicas: int) -> Plan:
    """Every derived value, from the settings, the run folder, the dataset and the devices.

    With ``replicas`` devices the global batch is ``batch_size × replicas`` (each replica gets
    ``batch_size``) and the learning rates are scaled by ``replicas`` (the linear scaling rule).
    """
    return Plan(
        config=config,
        run_dir=run.path,
        resuming=resuming,
        data_dir=Path(dataset.root),
        sample_data=config.data is None,
        layout=dataset.layout,
        labels=tuple(dataset.labels),
        files={split: len(samples) for split, samples in dataset.splits.items()},
        export_dir=run.path,
        cache_dir=Path(config.cache_dir) if config.cache_dir else DEFAULT_CACHE_DIR,
        replicas=replicas,
        global_batch_size=config.batch_size * replicas,
        learning_rate=config.learning_rate * replicas,
        fine_tune_learning_rate=config.fine_tune_learning_rate * replicas,
        fine_tune_head_learning_rate=config.fine_tune_head_learning_rate * replicas,
        evaluation_split=reported_split(dataset.splits),
        verbose=1 if interactive() and sys.stdout.isatty() else 2,
    )


def check_weights(config: TrainConfig) -> None:
    from model_build.training.model import WeightsUnavailable, ensure_weights  # noqa: PLC0415 — model_build.training.model loads TensorFlow; this module stays light without it

    try:
        ensure_weights(config.model, config.weights)
    except WeightsUnavailable as error:
        raise UserError(
            f"{error}.\nNo network? Use --weights PATH (a local MobileNetV2 no-top .h5 file, "
            "e.g. copied into ~/.keras/models/) or --weights none --fine-tune-layers N "
            "(random start; learns little on real photos).",
            EXIT_WEIGHTS_UNAVAILABLE,
        ) from error
    except FileNotFoundError as error:
        raise UserError(str(error), EXIT_WEIGHTS_UNAVAILABLE) from error


def _first_of_each_label(split):
    """One training image of each of the first six labels (for the augmentation preview)."""
    _, first = np.unique(split.label_indices, return_index=True)
    return np.asarray(split.pixels[np.sort(first)[:6]])


if __name__ == "__main__":
    sys.exit(main())
