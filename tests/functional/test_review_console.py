"""The review console over HTTP (on moto): the queue, decisions, and its security rules — CSRF,
Host and Origin checks, presigned URLs for ``uploads/`` only, data never turned into markup."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from contracts.catalogue import CatalogueItem, LabelScore, Status, event_order, utc_now
from contracts.catalogue_table import read_item, write_item
from local_stack.resources import create_local_resources
from review.console import Console, image_origin, photo_url, shortcuts
from review.server import ReviewServer

pytestmark = pytest.mark.functional
HOSTILE_KEY = 'uploads/<img src=x onerror="alert(1)">.jpg'
LABELS = ("bathtub", "stroller", "walkers")


def unsure(bucket: str, key: str, uploaded_at: str) -> CatalogueItem:
    return CatalogueItem(
        bucket=bucket,
        key=key,
        status=Status.NEEDS_REVIEW,
        category="stroller",
        confidence=0.4,
        top3=(LabelScore("stroller", 0.4), LabelScore("<b>walkers</b>", 0.3)),
        model_version="v1",
        event_order=event_order("0A", None),
        processed_at=utc_now(),
        uploaded_at=uploaded_at,
        etag="e1",
    )


@dataclass
class Running:
    server: ReviewServer
    console: Console
    dynamodb: Any
    table: str
    bucket: str

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        host, port = self.server.server_address[:2]
        connection = http.client.HTTPConnection(host, port, timeout=10)
        sent = {"Host": f"{host}:{port}", **(headers or {})}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        result = response.status, dict(response.getheaders()), response.read()
        connection.close()
        return result

    def decide(self, item: dict[str, Any], choice: str, **headers: str) -> tuple[int, Any]:
        body = {name: item[name] for name in ("bucket", "key", "etag", "event_order")}
        status, _, raw = self.request("POST", "/api/decide", {**body, "choice": choice}, headers)
        return status, json.loads(raw)


@pytest.fixture
def running() -> Iterator[Running]:
    with mock_aws():
        s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
        dynamodb = boto3.client("dynamodb")
        resources = create_local_resources(
            s3_client=s3, sqs_client=boto3.client("sqs"), dynamodb_client=dynamodb
        )
        table, bucket = resources.table_name, resources.bucket
        for index, key in enumerate((HOSTILE_KEY, "private/secret.jpg", "uploads/b.jpg")):
            write_item(dynamodb, table, unsure(bucket, key, f"2026-11-2{index}T00:00:00Z"))
        console = Console(
            dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, reviewer="ana", labels=LABELS
        )
        server = ReviewServer(console, port=0, image_origin=image_origin(s3, bucket))
        server.serve_in_thread()
        try:
            yield Running(server, console, dynamodb, table, bucket)
        finally:
            server.shutdown()
            server.server_close()


def queue(running: Running) -> dict[str, Any]:
    status, _, raw = running.request("GET", "/api/queue")
    assert status == 200
    return json.loads(raw)


def test_queue_oldest_first_with_top3_labels_and_progress(running: Running) -> None:
    data = queue(running)
    assert [item["key"] for item in data["items"]] == [
        HOSTILE_KEY,
        "private/secret.jpg",
        "uploads/b.jpg",
    ]
    assert data["remaining"] == 3
    assert data["reviewer"] == "ana"
    first = data["items"][0]
    assert first["category"] == "stroller"
    assert first["top3"][0] == {"label": "stroller", "score": 0.4}
    # The whole category list: the model's labels plus whatever the queue's top 3 named.
    assert [entry["label"] for entry in data["labels"]] == sorted([*LABELS, "<b>walkers</b>"])
    assert all(entry["key"] for entry in data["labels"])


def test_decision_changes_the_item_and_leaves_the_queue(running: Running) -> None:
    item = queue(running)["items"][2]
    status, result = running.decide(item, "walkers", **{"X-CSRF-Token": running.console.csrf_token})
    assert status == 200
    assert result["ok"]
    assert (result["outcome"], result["status"], result["remaining"]) == (
        "corrected",
        "CATALOGUED",
        2,
    )
    stored = read_item(running.dynamodb, running.table, running.bucket, "uploads/b.jpg")
    assert stored is not None
    assert (stored.category, stored.reviewed_by) == ("walkers", "ana")
    assert "uploads/b.jpg" not in [entry["key"] for entry in queue(running)["items"]]
    # Shown again later (a stale page): refused, and the page is told the photo changed.
    status, again = running.decide(item, "bathtub", **{"X-CSRF-Token": running.console.csrf_token})
    assert (status, again["ok"], again["changed"]) == (200, False, True)


def test_state_change_without_or_with_a_wrong_csrf_token_is_refused(running: Running) -> None:
    item = queue(running)["items"][2]
    assert running.decide(item, "walkers")[0] == 403
    assert running.decide(item, "walkers", **{"X-CSRF-Token": "guess"})[0] == 403
    body = {name: item[name] for name in ("bucket", "key", "etag", "event_order")}
    status, _, _ = running.request("POST", "/api/undo", {**body, "reviewed_at": "x"})
    assert status == 403
    # A form post (what another site could make a browser send) is refused even with the token.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    form["X-CSRF-Token"] = running.console.csrf_token
    assert running.decide(item, "walkers", **form)[0] == 415
    stored = read_item(running.dynamodb, running.table, running.bucket, "uploads/b.jpg")
    assert stored is not None
    assert stored.status is Status.NEEDS_REVIEW


def test_other_hosts_and_origins_are_refused(running: Running) -> None:
    assert running.request("GET", "/", headers={"Host": "evil.example:80"})[0] == 421
    item = queue(running)["items"][2]
    token = running.console.csrf_token
    status, _ = running.decide(item, "walkers", **{"X-CSRF-Token": token, "Origin": "http://evil"})
    assert status == 403


def test_presigned_urls_only_for_uploads(running: Running) -> None:
    items = {item["key"]: item for item in queue(running)["items"]}
    assert items["private/secret.jpg"]["photo_url"] is None
    url = urlsplit(items["uploads/b.jpg"]["photo_url"])
    assert url.path.endswith("/uploads/b.jpg")
    assert int(parse_qs(url.query)["X-Amz-Expires"][0]) <= 300
    s3 = running.console.s3
    for key in ("private/secret.jpg", "uploads/", "uploads/../private/secret.jpg", "upload.jpg"):
        with pytest.raises(ValueError, match="photo"):
            photo_url(s3, running.bucket, key)
    # No route signs or proxies a key the caller names.
    for path in ("/api/photo?key=private/secret.jpg", "/photo/private/secret.jpg", "/static/x"):
        assert running.request("GET", path)[0] == 404


def test_page_carries_no_data_and_never_builds_markup_from_it(running: Running) -> None:
    status, headers, page = running.request("GET", "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    text = page.decode()
    assert "<script>" not in text  # no inline script: the CSP would refuse it anyway
    assert running.console.csrf_token in text
    script = (Path(__file__).parents[2] / "review" / "static" / "app.js").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", code)
    # The API answers JSON only: the hostile key is a string in it, never HTML.
    status, headers, raw = running.request("GET", "/api/queue")
    assert headers["Content-Type"] == "application/json"
    assert b"<img" not in raw  # "<" travels as \\u003c
    assert json.loads(raw)["items"][0]["key"] == HOSTILE_KEY


def test_shortcut_letters_are_unique_and_leave_reserved_keys_free() -> None:
    labels = [
        "baby_bed", "baby_car_seat", "baby_folding_fence", "bathtub", "booster_seats", "bouncer",
        "breast_pump", "carrier", "earmuffs", "ride_ons", "rocking_horse", "sterilizer",
        "stroller", "walkers",
    ]  # fmt: skip
    keys = shortcuts(labels)
    assert set(keys) == set(labels)
    assert len(set(keys.values())) == len(labels)
    assert not {"n", "u", "z"} & set(keys.values())
    assert (keys["baby_bed"], keys["baby_car_seat"], keys["walkers"]) == ("b", "c", "w")


def test_remaining_is_recounted_every_few_seconds_and_adjusted_between(running: Running) -> None:
    now = [0.0]
    console = Console(
        dynamodb=running.dynamodb,
        s3=running.console.s3,
        table=running.table,
        bucket=running.bucket,
        reviewer="bo",
        labels=LABELS,
        clock=lambda: now[0],
    )
    calls = []
    running.dynamodb.meta.events.register(
        "provide-client-params.dynamodb.Query", lambda params, **_: calls.append(dict(params))
    )
    assert console.remaining() == 3
    item = console.queue()["items"][2]
    counted = len([c for c in calls if c.get("Select") == "COUNT"])
    now[0] = 10.0  # pace: one decision 10 s after the console started
    result = console.decide({**item, "choice": "walkers"})
    assert (result["remaining"], result["per_minute"], result["decided"]) == (2, 6.0, 1)
    assert len([c for c in calls if c.get("Select") == "COUNT"]) == counted  # no recount
    undone = console.undo({**item, "reviewed_at": result["reviewed_at"]})
    assert (undone["ok"], undone["remaining"], undone["decided"]) == (True, 3, 0)
    now[0] = 60.0
    assert console.remaining() == 3
    assert len([c for c in calls if c.get("Select") == "COUNT"]) == counted + 1
