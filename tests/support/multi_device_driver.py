"""Run in a fresh process by tests/functional/test_training_multi_device.py: two logical CPU
devices (they must be configured before TensorFlow initialises its devices), a MirroredStrategy
over them, and the training path's multi-device pieces."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from model_build.config import TrainConfig  # noqa: E402
from model_build.data.dataset import Dataset  # noqa: E402
from model_build.data.pipeline import predict  # noqa: E402
from model_build.data.prepare import PreparedSplit  # noqa: E402
from model_build.run_folder import RunFolder  # noqa: E402
from model_build.train import make_plan  # noqa: E402
from model_build.training.feature_cache import feature_extractor  # noqa: E402
from model_build.training.fit import train  # noqa: E402
from model_build.training.model import build_model, parts_of  # noqa: E402

out = Path(sys.argv[1])
result: dict = {}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result["replicas"] = strategy.num_replicas_in_sync

# Feature computation through the strategy equals the single-device computation, in order
# (5 images: the replicas get 3 and 2).
keras.utils.set_random_seed(0)
with strategy.scope():
    backbone_model = build_model("mobilenet_v2", num_classes=3, weights=None, image_size=128)
rng = np.random.default_rng(0)
for layer in parts_of(backbone_model).backbone.layers:  # random BatchNorm statistics
    if isinstance(layer, keras.layers.BatchNormalization):
        shape = layer.gamma.shape
        layer.moving_mean.assign(rng.normal(0.0, 0.1, shape))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
        layer.beta.assign(rng.uniform(0.0, 0.5, shape))
pixels = rng.integers(0, 256, (5, 128, 128, 3), dtype=np.uint8)
single = np.asarray(feature_extractor(backbone_model)(pixels))
distributed = np.asarray(feature_extractor(backbone_model, strategy)(pixels))
result["features_max_abs_diff"] = float(np.abs(single - distributed).max())
result["features_mean_abs"] = float(np.abs(single).mean())

# The plan scales the batch and the learning rate with the replicas, and training runs an epoch
# through the strategy (Keras splits each global batch across the replicas).
labels = ("a", "b", "c")
dataset = Dataset(root=out, layout="kaggle", labels=labels, splits={"train": (), "val": ()})
config = TrainConfig(data=str(out), model="small", epochs=1, batch_size=4, seed=1).resolved()
run = RunFolder(out / "run")
run.ensure_writable()
plan = make_plan(config, run, False, dataset, strategy.num_replicas_in_sync)
result["global_batch_size"] = plan.global_batch_size
result["learning_rate"] = plan.learning_rate


def split(count: int, seed: int) -> PreparedSplit:
    generator = np.random.default_rng(seed)
    return PreparedSplit(
        pixels=generator.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
        label_indices=np.arange(count) % 3,
        paths=tuple(Path(f"{i}.jpg") for i in range(count)),
        labels=labels,
        sha256=tuple(f"{seed}-{i}" for i in range(count)),
    )


with strategy.scope():
    model = build_model("small", num_classes=3, weights=None, image_size=32)
val = split(7, 2)  # 7 images: the last global batch (8) does not divide evenly: padded
trained = train(plan, run, model, split(21, 1), val, strategy)
result["epochs"] = trained.epochs
result["val_accuracy_logged"] = float(run.history_rows()[-1]["val_accuracy"])
probabilities = predict(trained.model, val.pixels, batch_size=plan.global_batch_size)
result["predictions_shape"] = list(probabilities.shape)
result["val_accuracy_recomputed"] = float(np.mean(probabilities.argmax(1) == val.label_indices))
result["optimizer_learning_rate"] = float(np.asarray(model.optimizer.learning_rate))
variable = model.trainable_variables[0]
result["variable_replicas"] = len(strategy.experimental_local_results(variable.value))

# --fine-tune-from through the strategy: activations cached by both replicas, the frozen phase
# and the two-rate fine-tuning phase fitted under MirroredStrategy (64 px, random weights).
config = TrainConfig(
    data=str(out), model="mobilenet_v2", head="gap", epochs=1, fine_tune_epochs=1, batch_size=4,
    seed=1, fine_tune_from="block_15_expand", feature_cache_views=1, cache_dir=str(out / "cache"),
).resolved()  # fmt: skip
run = RunFolder(out / "fine_tune_run")
run.ensure_writable()
plan = make_plan(config, run, False, dataset, strategy.num_replicas_in_sync)
with strategy.scope():
    model = build_model("mobilenet_v2", num_classes=3, weights=None, image_size=64, head="gap")


def photos(count: int, seed: int) -> PreparedSplit:
    prepared = split(count, seed)
    generator = np.random.default_rng(seed)
    pixels = generator.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
    return PreparedSplit(
        pixels=pixels,
        label_indices=prepared.label_indices,
        paths=prepared.paths,
        labels=labels,
        sha256=prepared.sha256,
    )


trained = train(plan, run, model, photos(10, 3), photos(5, 4), strategy)
result["fine_tune_epochs"] = trained.epochs
top_kernel = parts_of(model).backbone.get_layer("block_16_project").kernel
result["fine_tune_variable_replicas"] = len(strategy.experimental_local_results(top_kernel.value))
(out / "result.json").write_text(json.dumps(result))
