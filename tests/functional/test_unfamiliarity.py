"""The unfamiliarity score: fitted on training features, shipped as a file, computed by the worker
from the exported model's second (pooled features) output; an unfamiliar photo is NEEDS_REVIEW
with reason ``unfamiliar`` however confident the classifier is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from contracts import catalogue_table
from contracts.catalogue import Status
from contracts.image import DecodedImage
from contracts.unfamiliarity import REASON_UNFAMILIAR, UnfamiliarityScorer
from handler.classifier import Classifier
from handler.events import S3Record
from handler.worker import Worker, _Fetched
from model_build.evaluation.unfamiliarity import (
    auroc,
    fit_mahalanobis,
    fit_scorer,
    fpr_at_familiar_recall,
    pooled_feature_model,
    pooled_features,
)
from model_build.release.export import convert_float32, keras_predict, tflite_predict

pytestmark = pytest.mark.functional
LABELS = ("red", "green", "blue")


def _colour_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.integers(0, 60, (count, 224, 224, 3)).astype(np.uint8)
    for index, label in enumerate(labels):
        images[index, :, :, label] += 150
    return images, labels


def test_mahalanobis_score_and_file_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (300, 8))
    labels = rng.integers(0, 3, 300)
    features[np.arange(300), labels] += 4
    point = features[:5].astype(np.float32)
    for normalised in (False, True):
        scorer = fit_mahalanobis(features, labels, normalised=normalised)
        scored = point / np.linalg.norm(point, axis=1, keepdims=True) if normalised else point
        naive = [
            min(float((x - m) @ scorer.precision @ (x - m)) for m in scorer.means.astype(float))
            for x in scored.astype(np.float64)
        ]
        assert scorer.score(point) == pytest.approx(naive, rel=1e-3)
    fitted = fit_scorer(features, labels, features[:100])
    assert np.mean(fitted.unfamiliar(features[:100])) == pytest.approx(0.05, abs=0.02)
    fitted.save(tmp_path / "u.npz")
    loaded = UnfamiliarityScorer.load(tmp_path / "u.npz")
    assert loaded.threshold == fitted.threshold
    assert loaded.normalised == fitted.normalised
    assert np.array_equal(loaded.precision, fitted.precision)


def test_auroc_and_fpr_match_their_definitions() -> None:
    rng = np.random.default_rng(1)
    familiar, unfamiliar = rng.normal(0, 1, 400), rng.normal(1.5, 1, 300)
    truth = np.r_[np.zeros(400), np.ones(300)]
    assert auroc(familiar, unfamiliar) == pytest.approx(
        roc_auc_score(truth, np.r_[familiar, unfamiliar])
    )
    threshold, fpr = fpr_at_familiar_recall(familiar, unfamiliar)
    assert np.mean(familiar <= threshold) == pytest.approx(0.95, abs=0.01)
    assert fpr == pytest.approx(np.mean(unfamiliar <= threshold))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    keras = pytest.importorskip("keras")
    from keras import layers  # noqa: PLC0415 — TensorFlow takes seconds to load; only the steps that use it pay for it

    keras.utils.set_random_seed(0)
    backbone_in = keras.Input((224, 224, 3))
    x = layers.AveragePooling2D(16)(backbone_in)
    x = layers.Conv2D(12, 3, activation="relu")(x)
    backbone = keras.Model(backbone_in, x, name="mobilenet_v2_backbone")
    head_in = keras.Input(tuple(backbone.outputs[0].shape[1:]))
    head = keras.Model(
        head_in,
        layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(head_in)),
        name="head",
    )
    inputs = keras.Input((224, 224, 3), name="image")
    scaled = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_minus1_1")(inputs)
    model = keras.Model(inputs, head(backbone(scaled)))
    train_images, train_labels = _colour_images(90, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="sparse_categorical_crossentropy")
    model.fit(train_images, train_labels, epochs=8, verbose=0)

    path = tmp_path_factory.mktemp("unfamiliar") / "model.tflite"
    path.write_bytes(convert_float32(model, features=True))
    extractor = pooled_feature_model(model)
    val_images, _val_labels = _colour_images(30, seed=1)
    scorer = fit_scorer(
        pooled_features(extractor, train_images),
        train_labels,
        pooled_features(extractor, val_images),
    )
    # The exported model's two outputs: probabilities as Keras computes them, and the features.
    assert np.allclose(
        tflite_predict(path, val_images), keras_predict(model, val_images), atol=1e-4
    )
    assert np.allclose(
        tflite_predict(path, val_images, output="features"),
        pooled_features(extractor, val_images),
        atol=1e-3,
    )
    return path, scorer, val_images


def test_worker_sends_unfamiliar_photos_to_review_with_the_reason(exported, monkeypatch) -> None:
    path, scorer, familiar = exported
    rng = np.random.default_rng(5)
    unfamiliar = rng.integers(0, 255, (10, 224, 224, 3)).astype(np.uint8)  # noise, not a colour
    classifier = Classifier(path, LABELS, unfamiliarity=scorer)
    familiar_predictions = classifier.predict(familiar[:10])
    unfamiliar_predictions = classifier.predict(unfamiliar)
    assert sum(p.unfamiliar for p in familiar_predictions) <= 2
    assert all(p.unfamiliar for p in unfamiliar_predictions)
    assert all(p.unfamiliarity is not None for p in familiar_predictions)

    written = []
    monkeypatch.setattr(
        catalogue_table, "write_item", lambda *args, **kwargs: written.append(args[2]) or True
    )
    worker = Worker(
        classifier=classifier,
        model_version="v",
        review_threshold=0.0,  # every photo would be catalogued on confidence alone
        table="t",
        s3_client=None,
        dynamodb_client=None,
        max_image_bytes=1 << 20,
        max_image_pixels=1 << 24,
    )
    record = S3Record(
        bucket="b",
        key="uploads/x.jpg",
        event_name="ObjectCreated:Put",
        event_time=None,
        sequencer="01",
    )
    decoded = DecodedImage(pixels=unfamiliar[0], width=224, height=224, format="JPEG")
    outcome = worker._write(
        record, _Fetched(etag="e", size=1, decoded=decoded), unfamiliar_predictions[0]
    )
    assert outcome.action == "needs_review"
    assert written[0].status is Status.NEEDS_REVIEW
    assert written[0].reason == REASON_UNFAMILIAR
    worker.close()
