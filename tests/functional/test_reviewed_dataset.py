"""The reviewed dataset export on moto: layout, manifest, and what is left out and why."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws

from contracts.catalogue import CatalogueItem, LabelScore, Status, event_order, utc_now
from contracts.catalogue_table import read_item, tombstone, write_item, write_tombstone
from local_stack.resources import create_local_resources
from model_build.data.dataset import add_training_data, discover
from model_build.evaluation.review_agreement import agreement
from review.agreement import entries_from_catalogue
from review.console import Console
from review.decisions import NOT_A_PRODUCT, UNUSABLE, decide, decided_item
from review.leases import claim_one
from review.reviewed_dataset import export_reviewed, main
from sample_data.photos import generate_dataset

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
        held = claim_one(dynamodb, table, item, "ana#1", now=0, until=2_000_000_000)
        assert held is not None
        assert decide(dynamodb, table, held, choice, reviewer="ana", holder="ana#1", labels=LABELS)
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
    stats, manifest = export_reviewed(
        dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=out, labels=LABELS
    )

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
    main = generate_dataset(
        tmp_path / "main", train_per_label=2, val_per_label=1, image_size=32, labels=sorted(LABELS)
    )
    dataset = add_training_data(discover(main), [out / "labelled"])
    assert dataset.extra[0].added == {"stroller": 2, "walkers": 1}
    # The same decisions, read from the catalogue, give the model-vs-reviewer table.
    agreed = agreement(entries_from_catalogue(dynamodb, table, bucket))
    assert agreed == agreement(manifest["items"])
    rows = {row["category"]: row for row in agreed["categories"]}
    assert (rows["stroller"]["model_said"], rows["stroller"]["confirmed"]) == (len(decided), 2)
    # An export never mixes into an existing one.
    with pytest.raises(FileExistsError):
        export_reviewed(
            dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=out, labels=LABELS
        )


def test_command_line(
    aws: tuple[Any, Any, str, str], tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, table, bucket = aws
    catalogue(aws, "uploads/one.jpg", b"one", "walkers")
    out = tmp_path / "cli"
    # Without the model's labels nothing is exported: one line says why.
    monkeypatch.setattr("review.reviewed_dataset.model_labels", lambda uri, s3_client: [])
    assert main(["--table", table, "--bucket", bucket, "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err
    monkeypatch.setattr("review.reviewed_dataset.model_labels", lambda uri, s3_client: LABELS)
    assert main(["--table", table, "--bucket", bucket, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 labelled photos in 1 categories" in printed
    assert f"--data {out / 'labelled'}" in printed
    assert main(["--table", table, "--bucket", bucket, "--out", str(out)]) == 2


def decided_by_an_older_console(aws: tuple[Any, Any, str, str], key: str, label: str) -> None:
    """A decision written before labels were checked (or by hand): any string as the label."""
    _s3, dynamodb, table, bucket = aws
    catalogue(aws, key, key.encode(), None)
    item = read_item(dynamodb, table, bucket, key)
    assert item is not None
    decided = decided_item(item, "stroller", reviewer="old", reviewed_at=utc_now())
    assert write_item_as_is(dynamodb, table, dataclasses.replace(decided, category=label))


def write_item_as_is(dynamodb: Any, table: str, item: CatalogueItem) -> bool:
    dynamodb.put_item(
        TableName=table,
        Item={k: TypeSerializer().serialize(v) for k, v in item.to_attributes().items()},
    )
    return True


def test_export_refuses_labels_outside_the_model_set(
    aws: tuple[Any, Any, str, str], tmp_path: Path
) -> None:
    """GIVEN decisions naming "playpen" (not a model label) and "../.." (a path)
    WHEN the reviewed set is exported THEN neither becomes a folder: both are listed as
    ``label_not_in_model``, and nothing is written outside the export folder."""
    s3, dynamodb, table, bucket = aws
    catalogue(aws, "uploads/ok.jpg", b"ok", "walkers")
    decided_by_an_older_console(aws, "uploads/playpen.jpg", "playpen")
    decided_by_an_older_console(aws, "uploads/escape.jpg", "../..")
    out = tmp_path / "deep" / "reviewed"
    stats, manifest = export_reviewed(
        dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=out, labels=LABELS
    )
    assert stats.summary()["labelled"] == {"walkers": 1}
    assert stats.summary()["skipped"] == {"label_not_in_model": 2}
    assert sorted(p.name for p in (out / "labelled").iterdir()) == ["walkers"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        ["manifest.json", hashlib.sha256(b"ok").hexdigest() + ".jpg"]
    )
    assert manifest["labels"] == sorted(LABELS)
    # A path-like label is refused even when someone put it in the label set.
    with pytest.raises(ValueError, match="--model"):
        export_reviewed(
            dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=tmp_path / "x",
            labels={"../.."},
        )  # fmt: skip


def test_same_bytes_as_a_category_and_as_not_a_product_are_a_conflict(
    aws: tuple[Any, Any, str, str], tmp_path: Path
) -> None:
    s3, dynamodb, table, bucket = aws
    catalogue(aws, "uploads/a.jpg", b"same", "walkers")
    catalogue(aws, "uploads/b.jpg", b"same", NOT_A_PRODUCT)
    catalogue(aws, "uploads/c.jpg", b"other", NOT_A_PRODUCT)
    stats, _manifest = export_reviewed(
        dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=tmp_path / "r", labels=LABELS
    )
    assert stats.summary()["skipped"] == {"conflicting_labels": 2}
    assert (stats.summary()["labelled_total"], stats.out_of_distribution) == (0, 1)
    assert not (tmp_path / "r" / "labelled").exists()


def test_a_deleted_photos_decision_stays_in_the_manifest(
    aws: tuple[Any, Any, str, str], tmp_path: Path
) -> None:
    """GIVEN a photo decided in the console WHEN it is deleted and the worker writes the
    tombstone (which replaces the item) THEN the export still lists the decision, from the
    audit trail, as ``object_gone``."""
    s3, dynamodb, table, bucket = aws
    etag = s3.put_object(Bucket=bucket, Key="uploads/gone.jpg", Body=b"gone")["ETag"].strip('"')
    item = dataclasses.replace(unsure_item(bucket, "uploads/gone.jpg"), etag=etag)
    assert write_item(dynamodb, table, item)
    console = Console(
        dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, reviewer="ana", labels=LABELS
    )
    (view,) = console.queue()["items"]
    console._previews[view["id"]] = b"shown"
    assert console.decide({"id": view["id"], "choice": "walkers"})["ok"]
    s3.delete_object(Bucket=bucket, Key="uploads/gone.jpg")
    grave = tombstone(
        bucket, "uploads/gone.jpg", order=event_order("FF", None), sequencer="FF",
        model_version="v1",
    )  # fmt: skip
    assert write_tombstone(dynamodb, table, grave)
    _, manifest = export_reviewed(
        dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=tmp_path / "r", labels=LABELS
    )
    (entry,) = manifest["items"]
    assert (entry["key"], entry["label"], entry["outcome"]) == (
        "uploads/gone.jpg",
        "walkers",
        "corrected",
    )
    assert (entry["skipped"], entry["reviewed_by"], entry["etag"]) == ("object_gone", "ana", etag)


def unsure_item(bucket: str, key: str) -> CatalogueItem:
    return CatalogueItem(
        bucket=bucket,
        key=key,
        status=Status.NEEDS_REVIEW,
        category="stroller",
        confidence=0.4,
        top3=(LabelScore("stroller", 0.4), LabelScore("walkers", 0.3)),
        model_version="v1",
        event_order=event_order("0A", None),
        processed_at=utc_now(),
    )


def test_export_memory_stays_flat(
    aws: tuple[Any, Any, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN 24 decided photos of 2 MiB each (48 MiB) WHEN they are exported THEN the Python
    heap's peak during the export stays a few MiB (the photos stream to disk)."""
    s3, dynamodb, table, bucket = aws
    rng = random.Random(0)
    for index in range(24):
        catalogue(aws, f"uploads/{index}.jpg", rng.randbytes(2 * 2**20), "walkers")
    tracemalloc.start()
    try:
        stats, _ = export_reviewed(
            dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, out=tmp_path / "r",
            labels=LABELS,
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.summary()["labelled_total"] == 24
    with capsys.disabled():
        print(f"\nexport of 24 x 2 MiB photos (48 MiB): peak {peak / 2**20:.1f} MiB")
    assert peak < 12 * 2**20
