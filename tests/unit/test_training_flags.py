"""The evaluation settings can be given to ``train`` (not only to ``evaluate``), and a bad one is
refused before anything slow runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_build.config import UserError
from model_build.train import check_choices, parse_arguments


def test_train_takes_the_evaluation_settings(tmp_path: Path) -> None:
    data, unfamiliar = tmp_path / "data", tmp_path / "not-baby-products"
    data.mkdir()
    unfamiliar.mkdir()

    config = parse_arguments(
        [
            "--data",
            str(data),
            "--unfamiliar",
            str(unfamiliar),
            "--target-precision",
            "0.9",
            "--threshold-confidence",
            "0.9",
        ]
    )

    assert config.unfamiliar == str(unfamiliar)
    assert (config.target_precision, config.threshold_confidence) == (0.9, 0.9)
    check_choices(config.resolved())  # accepted
    assert parse_arguments(["--data", str(data)]).unfamiliar is None  # default: drawings


def test_a_missing_unfamiliar_folder_is_refused_before_training(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = parse_arguments(["--data", str(data), "--unfamiliar", str(tmp_path / "nowhere")])

    with pytest.raises(UserError, match=r"--unfamiliar .*nowhere does not exist"):
        check_choices(config.resolved())
