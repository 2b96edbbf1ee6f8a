"""Worker settings: defaults, overrides and one clear message for everything wrong."""

from __future__ import annotations

import pytest

from contracts.image import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from handler.settings import ConfigurationError, load_settings

VARIABLES = (
    "CATALOGUE_TABLE",
    "MODEL_URI",
    "MODEL_VERSION",
    "MODEL_VARIANT",
    "REVIEW_THRESHOLD",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "LOG_LEVEL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOGUE_TABLE", "catalogue")
    monkeypatch.setenv("MODEL_URI", "/opt/model")
    settings = load_settings()
    assert settings.max_image_bytes == DEFAULT_MAX_IMAGE_BYTES == 20 * 1024 * 1024
    assert settings.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS == 50_000_000
    assert settings.review_threshold is None
    assert (settings.model_variant, settings.log_level) == ("float32", "INFO")


def test_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOGUE_TABLE", "catalogue")
    monkeypatch.setenv("MODEL_URI", "s3://models/cataloguer")
    monkeypatch.setenv("REVIEW_THRESHOLD", "0.7")
    monkeypatch.setenv("MODEL_VARIANT", "int8")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = load_settings()
    assert (settings.review_threshold, settings.model_variant, settings.log_level) == (
        0.7,
        "int8",
        "DEBUG",
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("REVIEW_THRESHOLD", "1.5", "REVIEW_THRESHOLD: Input should be less than or equal to 1"),
        ("MAX_IMAGE_BYTES", "0", "MAX_IMAGE_BYTES: Input should be greater than 0"),
        ("MAX_IMAGE_PIXELS", "many", "MAX_IMAGE_PIXELS: Input should be a valid integer"),
        ("MODEL_VARIANT", "float16", "MODEL_VARIANT: Input should be 'float32' or 'int8'"),
        ("CATALOGUE_TABLE", "bad name!", "CATALOGUE_TABLE: String should match pattern"),
    ],
)
def test_invalid_values_fail_with_one_clear_message(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("CATALOGUE_TABLE", "catalogue")
    monkeypatch.setenv("MODEL_URI", "/opt/model")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith("invalid worker settings: ")
    assert expected in message
    assert "\n" not in message


def test_missing_required_settings_are_all_named() -> None:
    with pytest.raises(ConfigurationError, match="CATALOGUE_TABLE: Field required; MODEL_URI"):
        load_settings()


def test_empty_variables_mean_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOGUE_TABLE", "catalogue")
    monkeypatch.setenv("MODEL_URI", "/opt/model")
    monkeypatch.setenv("REVIEW_THRESHOLD", "")  # a blank template parameter
    monkeypatch.setenv("MODEL_VERSION", "")
    settings = load_settings()
    assert (settings.review_threshold, settings.model_version) == (None, None)
