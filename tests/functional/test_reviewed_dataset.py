"""The reviewed dataset export on moto: layout, manifest, and what is left out and why."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from contracts.catalogue import CatalogueItem, LabelScore, Status, event_order, utc_now
from contracts.catalogue_table import write_item
from local_stack.resources import create_local_resources
from model_build.data.dataset import discover
from model_build.evaluation.review_agreement import agreement
from review.agreement import entries_from_catalogue
from review.decisions import NOT_A_PRODUCT, UNUSABLE, Shown, decide
from review.reviewed_dataset import export_reviewed, main

pytestmark = pytest.mark.functional
LABELS = {"bathtub", "stroller", "walkers"}


@pytest.fixture
def aws() -> Iterator[tuple[Any, Any, str, str]]:
    with mock_aws():
        s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
        resources = create_local_resources(
            s3_client=s3, sqs_client=boto3.client("sqs"), dynamodb_client=dynamodb
        )
        yield s3, dynamodb, resources.table_name, resources.bucket


def catalogue(aws: tuple[Any, Any, str, str], key: str, data: bytes, choice: str | None) -> str:
    """Upload ``data``, catalogue it as NEEDS_REVIEW, and let a person choose ``choice``."""
    s3, dynamodb, table, bucket = aws
    etag = s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
    item = CatalogueItem(
        bucket=bucket,
        key=key,
        status=Status.NEEDS_REVIEW,
        category="stroller",
        confidence=0.4,
        top3=(LabelScore("stroller", 0.4), LabelScore("walkers", 0.3)),
        model_version="v1",
        event_order=event_order("0A", None),
        processed_at=utc_now(),
        etag=etag,
    )
    assert write_item(dynamodb, table, item)
    if choice is not None:
        assert decide(dynamodb, table, Shown.of(item), choice, reviewer="ana", labels=LABELS)
    return etag


def test_export_layout_and_manifest(aws: tuple[Any, Any, str, str], tmp_path: Path) -> None:
    s3, dynamodb, table, bucket = aws
    decided = {
        "uploads/<b>a</b>/../x.JPG": (b"walkers-photo", "walkers"),  # corrected
        "uploads/b.jpeg": (b"stroller-photo", "stroller"),  # confirmed
        "uploads/b-copy.png": (b"stroller-photo", "stroller"),  # same bytes, same label
        "uploads/c.webp": (b"a-cat", NOT_A_PRODUCT),
        "uploads/d.jpg": (b"blurred", UNUSABLE),
        "uploads/e.jpg": (b"twice", "bathtub"),  # same bytes as f, another label: conflict
        "uploads/f.jpg": (b"twice", "walkers"),
        "uploads/g.jpg": (b"original", "bathtub"),  # replaced after the decision
        "uploads/h.jpg": (b"deleted", "bathtub"),  # deleted after the decision
    }
    etags = {key: catalogue(aws, key, data, choice) for key, (data, choice) in decided.items()}
    catalogue(aws, "uploads/waiting.jpg", b"undecided", None)  # not decided: not exported
    s3.put_object(Bucket=bucket, Key="uploads/g.jpg", Body=b"replaced")
    s3.delete_object(Bucket=bucket, Key="uploads/h.jpg")

    out = tmp_path / "reviewed"
    stats, manifest = export_reviewed(dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=out)

    digest = {key: hashlib.sha256(data).hexdigest() for key, (data, _) in decided.items()}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        [
            "manifest.json",
            f"labelled/walkers/{digest['uploads/<b>a</b>/../x.JPG']}.jpg",
            f"labelled/stroller/{digest['uploads/b.jpeg']}.jpeg",
            f"labelled/stroller/{digest['uploads/b.jpeg']}.png",
            f"not_a_baby_product/{digest['uploads/c.webp']}.webp",
        ]
    )
    assert stats.summary() == {
        "labelled": {"stroller": 2, "walkers": 1},
        "labelled_total": 3,
        "out_of_distribution": 1,
        "skipped": {
            "conflicting_labels": 2,
            "object_gone": 1,
            "object_replaced": 1,
            "unusable_photo": 1,
        },
    }
    written = json.loads((out / "manifest.json").read_text())
    assert written == manifest
    entries = {entry["key"]: entry for entry in manifest["items"]}
    assert set(entries) == set(decided)
    for key, entry in entries.items():
        assert entry["etag"] == etags[key]
        assert entry["reviewed_by"] == "ana"
        assert entry["model_label"] == "stroller"
        if "path" in entry:
            path = out / entry["path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"] == digest[key]
            assert entry["bytes"] == len(decided[key][0])
    assert entries["uploads/b.jpeg"]["outcome"] == "confirmed"
    assert entries["uploads/<b>a</b>/../x.JPG"]["outcome"] == "corrected"
    assert (entries["uploads/c.webp"]["label"], entries["uploads/c.webp"]["outcome"]) == (
        None,
        NOT_A_PRODUCT,
    )
    assert entries["uploads/g.jpg"]["skipped"] == "object_replaced"
    # The labelled folder is a dataset folder training reads as it is.
    dataset = discover(out / "labelled")
    assert dataset.labels == ("stroller", "walkers")
    # The same decisions, read from the catalogue, give the model-vs-reviewer table.
    agreed = agreement(entries_from_catalogue(dynamodb, table, bucket))
    assert agreed == agreement(manifest["items"])
    rows = {row["category"]: row for row in agreed["categories"]}
    assert (rows["stroller"]["model_said"], rows["stroller"]["confirmed"]) == (len(decided), 2)
    # An export never mixes into an existing one.
    with pytest.raises(FileExistsError):
        export_reviewed(dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=out)


def test_command_line(aws: tuple[Any, Any, str, str], tmp_path: Path, capsys: Any) -> None:
    _, _, table, bucket = aws
    catalogue(aws, "uploads/one.jpg", b"one", "walkers")
    out = tmp_path / "cli"
    assert main(["--table", table, "--bucket", bucket, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 labelled photos in 1 categories" in printed
    assert f"--data {out / 'labelled'}" in printed
    assert main(["--table", table, "--bucket", bucket, "--out", str(out)]) == 2
