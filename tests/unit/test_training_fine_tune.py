"""Fine-tuning the top of the backbone from cached activations (``--fine-tune-from BLOCK``).

Tiny inputs (64 px: MobileNetV2 accepts them with random weights) and the ``gap`` head keep each
test a few seconds; random BatchNorm parameters make the random backbone's outputs non-trivial.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from model_build import train
from model_build.release.export import convert_float32, tflite_predict
from model_build.training import feature_cache
from model_build.training.feature_cache import augmented_views, cached_views
from model_build.training.fine_tune import (
    cached_activations,
    compile_two_rates,
    fine_tuning_model,
    freeze_for_fine_tuning,
    split_backbone,
)
from model_build.training.model import FEATURES, PROBABILITIES, build_classifier, parts_of

SIZE = 64
BLOCK = "block_15_expand"


def _classifier(seed: int = 42):
    """A random MobileNetV2 whose BatchNorm statistics are those of random photos (one batch in
    training mode with momentum 0): with Keras' fresh statistics a random backbone's output
    hardly depends on its input, which would make every comparison below vacuous."""
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(
        "mobilenet_v2", num_classes=3, weights=None, image_size=SIZE, head="gap"
    )
    normalisation = [
        layer
        for layer in classifier.backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    classifier.backbone.trainable = True  # a frozen BatchNorm runs in inference mode
    for layer in normalisation:
        layer.momentum = 0.0
    photos = classifier.scaling(_pixels(16, seed=seed).astype(np.float32))
    classifier.backbone(photos, training=True)
    for layer in normalisation:
        layer.momentum = 0.99
    classifier.backbone.trainable = False
    return classifier


def _pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


def test_parts_are_found_by_structure_after_saving_and_loading(tmp_path: Path) -> None:
    classifier = _classifier()
    classifier.model.save(tmp_path / "model.keras")
    loaded = parts_of(keras.models.load_model(tmp_path / "model.keras", compile=False))

    assert loaded.has_backbone
    assert loaded.backbone.count_params() == classifier.backbone.count_params()
    assert loaded.head.count_params() == classifier.head.count_params()
    assert not parts_of(build_classifier("small", num_classes=3).model).has_backbone


def test_cached_activation_model_gives_the_full_models_outputs(tmp_path: Path) -> None:
    """GIVEN the same weights, WHEN a view's activations are cached at the block and the
    fine-tuning model (top + head) runs on them, THEN it gives the full model's probabilities for
    that augmented view (float16 storage: to a small tolerance)."""
    classifier = _classifier()
    below, top = split_backbone(classifier.backbone, BLOCK)
    pixels = _pixels(6)
    split = SimpleNamespace(pixels=pixels, content_hash="six-photos")

    activations = cached_activations(
        classifier, below, split, block=BLOCK, views=2, seed=3, batch_size=4,
        cache_dir=tmp_path, name="train",
    )  # fmt: skip

    trainer = fine_tuning_model(top, classifier.head)
    for view, rows in enumerate(activations):
        full = np.concatenate(
            [
                classifier.model(batch, training=False).numpy()
                for batch in augmented_views(pixels, view=view, seed=3, batch_size=4)
            ]
        )
        cached = trainer(np.asarray(rows, np.float32), training=False).numpy()
        assert np.allclose(cached, full, atol=2e-3)
    assert not np.array_equal(np.asarray(activations[0]), np.asarray(activations[1]))
    # The two-output model: the same probabilities, and the pooled backbone features.
    both = classifier.with_features()(pixels.astype(np.float32))
    assert np.allclose(both[PROBABILITIES], classifier.model(pixels), atol=1e-6)
    assert both[FEATURES].shape == (6, 1280)


def test_batch_norm_statistics_do_not_move_and_the_backbone_steps_slower() -> None:
    """One fine-tuning epoch: every BatchNorm variable of the top is unchanged; the top's
    convolutions move by at most the backbone's rate per step, the head by more."""
    classifier = _classifier()
    _, top = split_backbone(classifier.backbone, BLOCK)
    freeze_for_fine_tuning(top)
    trainer = fine_tuning_model(top, classifier.head)
    compile_two_rates(trainer, top, head_learning_rate=1e-2, backbone_learning_rate=1e-4)
    normalisation = [
        layer for layer in top.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    before_bn = [np.array(w) for layer in normalisation for w in layer.weights]
    kernel = top.get_layer("block_16_project").kernel
    before_kernel, before_head = np.array(kernel), [np.array(w) for w in classifier.head.weights]
    activations = np.random.default_rng(1).normal(size=(8, *top.inputs[0].shape[1:]))

    trainer.fit(activations.astype(np.float32), np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)

    after_bn = [np.array(w) for layer in normalisation for w in layer.weights]
    assert normalisation
    assert all(np.array_equal(a, b) for a, b in zip(before_bn, after_bn, strict=True))
    kernel_step = np.abs(np.array(kernel) - before_kernel).max()
    head_step = max(
        np.abs(np.array(w) - b).max()
        for w, b in zip(classifier.head.weights, before_head, strict=True)
    )
    assert 0 < kernel_step <= 2 * 1e-4 * 1.01  # two Adam steps of at most the backbone rate
    assert head_step > 10 * kernel_step


def test_exported_tflite_of_a_fine_tuned_model_equals_keras() -> None:
    classifier = _classifier()
    _, top = split_backbone(classifier.backbone, BLOCK)
    freeze_for_fine_tuning(top)
    trainer = fine_tuning_model(top, classifier.head)
    compile_two_rates(trainer, top, head_learning_rate=1e-2, backbone_learning_rate=1e-3)
    activations = np.random.default_rng(2).normal(size=(8, *top.inputs[0].shape[1:]))
    trainer.fit(activations.astype(np.float32), np.arange(8) % 3, batch_size=8, verbose=0)
    pixels = _pixels(5, seed=7)

    tflite = convert_float32(classifier.model, image_size=SIZE, features=True)

    keras_outputs = classifier.with_features().predict(pixels.astype(np.float32), verbose=0)
    probabilities = tflite_predict(tflite, pixels)
    features = tflite_predict(tflite, pixels, output="features")
    assert np.allclose(probabilities, keras_outputs[PROBABILITIES], atol=1e-5)
    assert np.allclose(features, keras_outputs[FEATURES], rtol=1e-4, atol=1e-4)
    assert (probabilities.argmax(1) == keras_outputs[PROBABILITIES].argmax(1)).all()


def test_a_killed_activation_pass_resumes_without_recomputing_finished_views(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a pass killed in the second view's third batch (progress recorded every batch),
    WHEN it runs again, THEN view 1 and view 2's first two batches are not computed again and the
    files equal an uninterrupted pass's."""
    monkeypatch.setattr(feature_cache, "_FLUSH_EVERY", 1)
    pixels = _pixels(10)
    computed: list[int] = []

    def extract(batch):
        if len(computed) == 5 and kill["armed"]:  # view 0: 3 batches, view 1: 2 done
            raise KeyboardInterrupt("killed")
        computed.append(int(batch.shape[0]))
        return np.asarray(batch, np.float32)[:, ::16, ::16, :]

    kill = {"armed": True}
    settings = {"shape": (4, 4, 3), "views": 2, "seed": 1, "batch_size": 4, "name": "test"}
    with pytest.raises(KeyboardInterrupt):
        cached_views(extract, tmp_path / "resumed", pixels, **settings)
    kill["armed"], computed[:] = False, []

    resumed = cached_views(extract, tmp_path / "resumed", pixels, **settings)

    assert computed == [2]  # only the last batch of view 2 (rows 8–9)
    fresh = cached_views(extract, tmp_path / "fresh", pixels, **settings)
    for left, right in zip(resumed, fresh, strict=True):
        assert np.array_equal(np.asarray(left), np.asarray(right))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--fine-tune-from", "block_99"], "not a block of MobileNetV2"),
        (["--fine-tune-from", "block_14_expand", "--model", "small"], "needs a pretrained"),
        (["--fine-tune-from", "block_14_expand", "--fine-tune-layers", "3"], "two ways"),
    ],
)
def test_a_bad_block_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, arguments: list[str], message: str
) -> None:
    status = train.main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), *arguments])

    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert "Traceback" not in err
