"""A team of reviewers on one queue (moto): leases split the work, expire and return photos; the
audit trail and the counters record every decision; a second opinion measures agreement; the
cost of a decision does not grow with the backlog; a HEIC upload is shown as a JPEG."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config
from moto import mock_aws
from PIL import Image

from contracts.catalogue import CatalogueItem, LabelScore, Status, event_order, utc_now
from contracts.catalogue_table import read_item, scan_items, write_item
from local_stack.resources import create_local_resources
from review import audit
from review.console import Console
from review.decisions import needs_second_opinion

pytestmark = pytest.mark.functional
LABELS = ("bathtub", "stroller", "walkers")
READS = ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems")


class Team:
    def __init__(self, s3: Any, dynamodb: Any, table: str, bucket: str) -> None:
        self.s3, self.dynamodb, self.table, self.bucket = s3, dynamodb, table, bucket
        self.now = [1_800_000_000.0]

    def console(self, reviewer: str, **options: Any) -> Console:
        return Console(
            dynamodb=self.dynamodb,
            s3=self.s3,
            table=self.table,
            bucket=self.bucket,
            reviewer=reviewer,
            labels=LABELS,
            clock=lambda: self.now[0],
            **options,
        )

    def upload(self, count: int, *, start: int = 0, data: bytes | None = None) -> None:
        for index in range(start, start + count):
            key = f"uploads/{index:05d}.jpg"
            etag = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data or jpeg(index))[
                "ETag"
            ].strip('"')
            write_item(self.dynamodb, self.table, unsure(self.bucket, key, index, etag))


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def unsure(bucket: str, key: str, index: int, etag: str) -> CatalogueItem:
    return CatalogueItem(
        bucket=bucket,
        key=key,
        status=Status.NEEDS_REVIEW,
        category="stroller",
        confidence=0.4,
        top3=(LabelScore("stroller", 0.4), LabelScore("walkers", 0.3)),
        model_version="v1",
        event_order=event_order(f"{index + 1:04X}", None),
        processed_at=utc_now(),
        uploaded_at=f"2026-11-20T00:00:00.{index:06d}Z",
        etag=etag,
    )


@pytest.fixture
def team() -> Iterator[Team]:
    with mock_aws():
        s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
        dynamodb = boto3.client("dynamodb")
        resources = create_local_resources(
            s3_client=s3, sqs_client=boto3.client("sqs"), dynamodb_client=dynamodb
        )
        yield Team(s3, dynamodb, resources.table_name, resources.bucket)


def decide_all(console: Console, choice: str = "walkers") -> list[str]:
    """Decide every photo of the console's batch as the page does (shown first); the keys."""
    keys = []
    for view in console.queue()["items"]:
        console.photo(view["id"])
        result = console.decide({"id": view["id"], "choice": choice})
        if result["ok"]:
            keys.append(view["key"])
    return keys


def test_two_reviewers_get_disjoint_photos_and_both_make_progress(team: Team) -> None:
    team.upload(20)
    ana, bo = team.console("ana", batch=6), team.console("bo", batch=6)
    ana_batch = {item["key"] for item in ana.queue()["items"]}
    bo_batch = {item["key"] for item in bo.queue()["items"]}
    assert len(ana_batch) == len(bo_batch) == 6
    assert not ana_batch & bo_batch  # the same oldest photos, claimed once each
    ana_done, bo_done = decide_all(ana), decide_all(bo)
    assert len(ana_done) == len(bo_done) == 6  # nothing refused: every decision counted
    assert {item["key"] for item in ana.queue()["items"]}.isdisjoint(bo_batch | ana_batch)


def test_an_expired_lease_returns_its_photos_to_the_queue(team: Team) -> None:
    team.upload(4)
    ana = team.console("ana", batch=4, lease_seconds=300)
    held = {item["key"] for item in ana.queue()["items"]}
    assert len(held) == 4
    bo = team.console("bo", batch=4)
    assert bo.queue()["items"] == []  # all four are Ana's
    team.now[0] += 301  # Ana walked away
    returned = {item["key"] for item in bo.queue()["items"]}
    assert returned == held
    # Ana comes back: her page's decision on a photo Bo now holds is refused, Bo's goes through.
    first = next(iter(ana._held))
    ana.photo(first)
    assert ana.decide({"id": first, "choice": "walkers"})["changed"]
    assert len(decide_all(bo)) == 4


def test_a_stopped_console_gives_its_photos_back_at_once(team: Team) -> None:
    team.upload(3)
    ana = team.console("ana", batch=3)
    assert len(ana.queue()["items"]) == 3
    assert ana.release_all() == 3
    assert len(team.console("bo", batch=3).queue()["items"]) == 3


def test_audit_trail_and_counters_record_decisions_refusals_and_undos(team: Team) -> None:
    team.upload(3)
    ana = team.console("ana")
    views = ana.queue()["items"]
    for view in views:
        ana.photo(view["id"])
    ana.decide({"id": views[0]["id"], "choice": "stroller"})  # confirmed
    result = ana.decide({"id": views[1]["id"], "choice": "walkers"})  # corrected
    with pytest.raises(ValueError, match="not one of the model's labels"):
        ana.decide({"id": views[2]["id"], "choice": "playpen"})
    ana.undo({"id": views[1]["id"]})
    assert result["ok"]
    events = audit.trail(team.dynamodb, team.table)
    assert [(e["event"], e.get("choice"), e.get("outcome")) for e in events] == [
        ("decided", "stroller", "confirmed"),
        ("decided", "walkers", "corrected"),
        ("refused", "playpen", None),
        ("undone", None, "corrected"),
    ]
    first = events[0]
    assert first["reviewer"] == "ana"
    assert first["at"]
    assert first["shown"]["key"] == views[0]["key"]
    assert first["shown"]["model_version"] == "v1"
    assert first["shown"]["model_label"] == "stroller"
    assert [entry["label"] for entry in first["shown"]["top3"]] == ["stroller", "walkers"]
    stats = audit.team_stats(team.dynamodb, team.table)
    (row,) = stats["reviewers"]
    assert (row["reviewer"], row["decided"], row["confirmed"], row["corrected"]) == ("ana", 1, 1, 0)
    assert (row["undone"], row["refused"], row["agreement_with_model"]) == (1, 1, 1.0)
    # The records never show up as catalogue items, in a scan or in either index.
    assert len(scan_items(team.dynamodb, team.table)) == 3
    assert team.dynamodb.scan(TableName=team.table, IndexName="by_category")["Count"] == 1
    assert ana.queue()["remaining"] == 2


def test_a_second_opinion_takes_two_reviewers_and_measures_agreement(team: Team) -> None:
    team.upload(6)
    ana = team.console("ana", batch=6, second_opinion_rate=1.0)
    bo = team.console("bo", batch=6, second_opinion_rate=1.0)
    decide_all(ana, "walkers")  # first opinions: the photos stay in the queue
    assert all(
        item.status is Status.NEEDS_REVIEW and item.first_opinion_by == "ana"
        for item in scan_items(team.dynamodb, team.table)
    )
    assert ana.queue()["items"] == []  # never Ana's own first opinions again
    views = bo.queue()["items"]
    assert len(views) == 6
    assert all(view["second_opinion"] for view in views)
    for index, view in enumerate(views):
        bo.photo(view["id"])
        bo.decide({"id": view["id"], "choice": "walkers" if index < 4 else "bathtub"})
    settled = scan_items(team.dynamodb, team.table)
    assert all(item.status is Status.CATALOGUED and item.reviewed_by == "bo" for item in settled)
    stats = audit.team_stats(team.dynamodb, team.table)
    assert stats["pairs"] == [
        {"first": "ana", "second": "bo", "photos": 6, "agreed": 4, "agreement": 4 / 6}
    ]
    assert stats["reviewer_agreement"] == pytest.approx(4 / 6)
    assert sum(needs_second_opinion(item, 0.05) for item in settled) <= 6


def test_a_heic_upload_is_shown_as_a_jpeg(team: Team) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(buffer, format="HEIF")
    team.upload(1, data=buffer.getvalue())
    ana = team.console("ana")
    (view,) = ana.queue()["items"]
    preview = Image.open(io.BytesIO(ana.photo(view["id"])))
    assert (preview.format, max(preview.size)) == ("JPEG", 2048)  # 12 MP at review size
    assert ana.decide({"id": view["id"], "choice": "walkers"})["ok"]


def count_reads(dynamodb: Any) -> dict[str, int]:
    """Read calls and the index/table entries they read, counted with a botocore event hook."""
    counts = {"calls": 0, "entries": 0, "counts": 0, "counted_entries": 0}

    def after(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name not in READS:
            return
        entries = int(parsed.get("ScannedCount", parsed.get("Count", 1)) or 0)
        if model.name == "Query" and "Items" not in parsed:  # the "left" count (Select=COUNT)
            counts["counts"] += 1
            counts["counted_entries"] += entries
        else:
            counts["calls"] += 1
            counts["entries"] += entries

    dynamodb.meta.events.register("after-call.dynamodb", after)
    return counts


def fill(team: Team, pending: int) -> None:
    """``pending`` NEEDS_REVIEW items, written 25 at a time (no S3 objects: previews unused)."""
    serializer = TypeSerializer()
    items = [unsure(team.bucket, f"uploads/{i:05d}.jpg", i, f"e{i}") for i in range(pending)]
    for start in range(0, pending, 25):
        team.dynamodb.batch_write_item(
            RequestItems={
                team.table: [
                    {
                        "PutRequest": {
                            "Item": {
                                name: serializer.serialize(value)
                                for name, value in item.to_attributes().items()
                            }
                        }
                    }
                    for item in items[start : start + 25]
                ]
            }
        )


@pytest.mark.parametrize("pending", [10, 5000])
def test_reads_per_decision_do_not_grow_with_the_backlog(
    team: Team, pending: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN 10 or 5,000 photos waiting WHEN a reviewer decides 8 (10 pending) or 30 through
    the console as the page does (a queue request after each decision, two seconds a photo)
    THEN the reads per decision are the same small number: a decision reads nothing, the batch
    is topped up from the index's oldest entries, and the "left" count reads at most 1,000
    entries, at most every 30 s."""
    fill(team, pending)
    ana = team.console("ana", batch=8)
    counts = count_reads(team.dynamodb)
    decided, wanted = 0, min(pending - 2, 30)
    while decided < wanted:
        view = ana.queue()["items"][0]
        ana._previews[view["id"]] = b"shown"  # the preview is not what is measured here
        assert ana.decide({"id": view["id"], "choice": "walkers"})["ok"]
        decided += 1
        team.now[0] += 2.0
    calls, entries = counts["calls"] / decided, counts["entries"] / decided
    with capsys.disabled():
        print(
            f"\n{pending} pending, {decided} decisions: {calls:.2f} read calls and "
            f"{entries:.1f} entries read per decision for the batch (decisions: 0), plus "
            f"{counts['counts']} capped counts of {counts['counted_entries']} entries in all"
        )
    assert calls <= 1.0  # at most one query per decision, when the queue runs dry
    assert entries <= 8.0
    assert counts["counts"] <= 1 + decided * 2 // 30  # once, then every 30 s
    assert counts["counted_entries"] <= counts["counts"] * 1000
    assert read_item(team.dynamodb, team.table, team.bucket, "uploads/00000.jpg").status is (
        Status.CATALOGUED
    )
