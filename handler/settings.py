"""The worker's settings, read once from the environment at cold start (pydantic-settings).

Environment variables (names are the field names upper-cased):

* ``CATALOGUE_TABLE``  DynamoDB table name (required; ``template.yaml`` passes it by ``!Ref``).
* ``MODEL_URI``        published model: a folder or ``s3://bucket/prefix`` (required).
* ``MODEL_VERSION``    a version under ``MODEL_URI``; default: the one ``latest.json`` names.
* ``MODEL_VARIANT``    ``float32`` (default) or ``int8`` (only if the artifact has one).
* ``MODEL_CACHE_DIR``  where an ``s3://`` model is downloaded (default: the loader's, under /tmp).
* ``REVIEW_THRESHOLD`` override of the manifest's certified review threshold (0..1); every item
  the worker writes then records it as ``uncertified_threshold`` (the manifest's precision
  guarantee covers its own threshold only).
* ``MAX_IMAGE_BYTES``  objects above this are REJECTED unread (default 20 MiB).
* ``MAX_IMAGE_PIXELS`` images above this pixel count are REJECTED before decoding (default 50 MP).
* ``DECODE_SECONDS``   per-file decode deadline, wall clock and CPU (default 20; issue 17,
  :mod:`handler.decode_pool`).
* ``LOG_LEVEL``        Powertools logger level (default INFO).
* ``DEPLOY_SETTINGS``  the settings ``sam deploy`` gave this version (template.yaml); and
* ``IMAGE_DEPLOY_SETTINGS`` the ones ``sam build`` baked into the image (infra/Dockerfile). When the
  image has them, the two must agree (:mod:`handler.deploy_settings`).
* ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``  the function's memory in MB, set by Lambda itself (default
  1024, the template's ``FunctionMemorySize``); the decode memory budget is this minus what the
  process and its decoders hold, measured (:mod:`handler.decode_pool`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.image import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from handler.decode_pool import DECODE_SECONDS


class ConfigurationError(RuntimeError):
    """The worker cannot start. The message says what to fix, in one line."""


class WorkerSettings(BaseSettings):
    # An empty variable counts as unset: a blank CloudFormation parameter (say, no
    # REVIEW_THRESHOLD override) arrives as "" and means "use the default".
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", protected_namespaces=(), env_ignore_empty=True
    )

    catalogue_table: str = Field(min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_.\-]+$")
    model_uri: str = Field(min_length=1)
    model_version: str | None = None
    model_variant: Literal["float32", "int8"] = "float32"
    model_cache_dir: str | None = None
    review_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    max_image_bytes: int = Field(default=DEFAULT_MAX_IMAGE_BYTES, gt=0)
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, gt=0)
    decode_seconds: float = Field(default=DECODE_SECONDS, gt=0, le=900)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    aws_lambda_function_memory_size: int = Field(default=1024, ge=128)
    deploy_settings: str | None = None
    image_deploy_settings: str | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def load_settings() -> WorkerSettings:
    """Read the settings, or raise :class:`ConfigurationError` naming every bad variable."""
    try:
        return WorkerSettings()  # type: ignore[call-arg] - values come from the environment
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']).upper()}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ConfigurationError(f"invalid worker settings: {problems}") from None
