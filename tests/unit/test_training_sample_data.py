"""The generated sample dataset: Kaggle layout, deterministic, images the contract accepts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from contracts.image import image_to_tensor
from sample_data.photos import LABELS, draw_sample_image, generate_dataset


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.jpg"))
    }


def test_writes_kaggle_layout_with_the_14_labels(tmp_path: Path) -> None:
    generate_dataset(tmp_path, train_per_label=2, val_per_label=1, image_size=64)

    for split, count in (("train", 2), ("val", 1)):
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == sorted(LABELS)
        for label in LABELS:
            files = list((tmp_path / split / label).glob("*.jpg"))
            assert len(files) == count
    sample = next((tmp_path / "train" / LABELS[0]).glob("*.jpg")).read_bytes()
    assert image_to_tensor(sample).shape == (224, 224, 3)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = generate_dataset(tmp_path / "a", train_per_label=1, val_per_label=1, image_size=48)
    second = generate_dataset(tmp_path / "b", train_per_label=1, val_per_label=1, image_size=48)
    other = generate_dataset(
        tmp_path / "c", train_per_label=1, val_per_label=1, image_size=48, seed=1
    )

    assert _digests(first) == _digests(second)
    assert _digests(first) != _digests(other)


def test_parallel_and_serial_generation_agree(tmp_path: Path) -> None:
    serial = generate_dataset(
        tmp_path / "s", train_per_label=2, val_per_label=1, image_size=32, workers=1
    )
    parallel = generate_dataset(
        tmp_path / "p", train_per_label=2, val_per_label=1, image_size=32, workers=2
    )
    assert _digests(serial) == _digests(parallel)


def test_a_matching_manifest_keeps_the_files(tmp_path: Path) -> None:
    generate_dataset(tmp_path, train_per_label=1, val_per_label=1, image_size=32)
    marker = tmp_path / "train" / LABELS[0] / f"{LABELS[0]}_00000.jpg"
    before = marker.stat().st_mtime_ns
    generate_dataset(tmp_path, train_per_label=1, val_per_label=1, image_size=32)
    assert marker.stat().st_mtime_ns == before


def test_pictures_vary_within_a_label_and_differ_between_labels() -> None:
    def mean_picture(label: str) -> np.ndarray:
        pictures = [
            np.asarray(draw_sample_image(label, np.random.default_rng(i), 64), dtype=float)
            for i in range(8)
        ]
        assert np.std([p.mean() for p in pictures]) > 0.5  # not one fixed picture
        return np.mean(pictures, axis=0)

    assert not np.allclose(mean_picture("stroller"), mean_picture("bathtub"), atol=5)


def test_unknown_label_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        draw_sample_image("spaceship", np.random.default_rng(0), 32)
