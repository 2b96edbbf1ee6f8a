"""Everything a container does once: settings, AWS clients, the model, a check of the table.

Any problem becomes one :class:`~handler.settings.ConfigurationError` whose message names the
setting and what is wrong with it. The invocation then fails as a whole before anything is
written, so Lambda leaves every SQS message in the queue (and, after the redrive limit, in the
dead-letter queue) instead of cataloguing with a broken model.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from contracts.artifact import Artifact, ArtifactError, load_artifact, worker_files
from contracts.unfamiliarity import UnfamiliarityScorer
from handler.classifier import Classifier
from handler.decode_pool import DecodePool
from handler.deploy_settings import check_deploy_settings
from handler.settings import ConfigurationError, WorkerSettings
from handler.worker import Worker

# Fail fast inside the function's timeout; the standard retry mode backs off on throttling.
CLIENT_CONFIG = Config(
    connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 3}
)


def load_model(settings: WorkerSettings, s3_client: Any = None) -> tuple[Classifier, Artifact]:
    """The artifact at ``MODEL_URI`` (sha256-checked) and an interpreter over the chosen variant."""
    where = f"MODEL_URI={settings.model_uri}"
    if settings.model_version:
        where += f" MODEL_VERSION={settings.model_version}"
    try:
        artifact = load_artifact(
            settings.model_uri,
            version=settings.model_version,
            # Fetch and verify only what this variant runs (the image holds exactly these files).
            only=worker_files(settings.model_variant),
            cache_dir=settings.model_cache_dir,
            s3_client=s3_client,
        )
    except ArtifactError as error:
        raise ConfigurationError(f"cannot load the model ({where}): {error}") from error
    path = artifact.model_path
    if settings.model_variant == "int8":
        if artifact.int8_model_path is None:
            raise ConfigurationError(
                f"MODEL_VARIANT=int8 but version {artifact.version} has no int8 model"
                " (it is published only when its held-out accuracy and precision pass its gate)"
            )
        path = artifact.int8_model_path
    unfamiliarity = None
    if artifact.unfamiliarity_path is not None:
        try:
            unfamiliarity = UnfamiliarityScorer.load(artifact.unfamiliarity_path)
        except (OSError, ValueError, KeyError) as error:
            raise ConfigurationError(
                f"cannot read {artifact.unfamiliarity_path} ({where}): {error}"
            ) from error
    try:
        classifier = Classifier(
            path,
            artifact.labels,
            unfamiliarity=unfamiliarity,
            # Each variant's own temperature: int8 outputs are not float32's.
            temperature=artifact.calibration_for(settings.model_variant).temperature,
        )
    except (ValueError, RuntimeError) as error:
        raise ConfigurationError(f"cannot open the model {path} ({where}): {error}") from error
    return classifier, artifact


def check_table(dynamodb_client: Any, table: str) -> None:
    where = f"CATALOGUE_TABLE={table}"
    try:
        dynamodb_client.describe_table(TableName=table)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise ConfigurationError(f"{where}: no such DynamoDB table") from error
        raise ConfigurationError(f"{where}: cannot describe it ({error})") from error
    except BotoCoreError as error:
        raise ConfigurationError(f"{where}: cannot reach DynamoDB ({error})") from error


def build_worker(
    settings: WorkerSettings, *, s3_client: Any = None, dynamodb_client: Any = None
) -> Worker:
    # First, before any AWS call: an image deployed with settings it was not built for.
    check_deploy_settings(settings)
    s3_client = s3_client or boto3.client("s3", config=CLIENT_CONFIG)
    dynamodb_client = dynamodb_client or boto3.client("dynamodb", config=CLIENT_CONFIG)
    check_table(dynamodb_client, settings.catalogue_table)
    classifier, artifact = load_model(settings, s3_client)
    certified = artifact.calibration_for(settings.model_variant).review_threshold
    review_threshold = settings.review_threshold
    if review_threshold is None:
        review_threshold = certified
    decoders = DecodePool(
        function_memory_mb=settings.aws_lambda_function_memory_size,
        decode_seconds=settings.decode_seconds,
    )
    decoders.start()  # in the init phase on Lambda, which runs at full CPU
    return Worker(
        classifier=classifier,
        model_version=artifact.version,
        review_threshold=review_threshold,
        table=settings.catalogue_table,
        s3_client=s3_client,
        dynamodb_client=dynamodb_client,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        decoders=decoders,
        threshold_certified=review_threshold == certified,
    )
