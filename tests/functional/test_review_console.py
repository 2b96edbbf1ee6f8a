"""The review console over HTTP (on moto): the batch, decisions, previews, and its security rules:
CSRF, Host and Origin checks, photos only of the console's own batch, data never turned into
markup, malformed requests answered with 4xx, loopback only."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from PIL import Image

from contracts.catalogue import CatalogueItem, LabelScore, Status, event_order, utc_now
from contracts.catalogue_table import read_item, write_item
from local_stack.resources import create_local_resources
from review import server as server_module
from review.__main__ import main
from review.console import Console, check_photo_key, shortcuts
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


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


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
        body = {"id": item["id"], "choice": choice}
        status, _, raw = self.request("POST", "/api/decide", body, headers)
        return status, json.loads(raw)

    def raw_request(self, data: bytes) -> bytes:
        """Send ``data`` as it is on a socket; what came back (b"" when nothing did)."""
        host, port = self.server.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as connection:
            try:
                connection.sendall(data)
                connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server answered and closed before reading everything
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


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
            etag = s3.put_object(Bucket=bucket, Key=key, Body=jpeg())["ETag"].strip('"')
            item = unsure(bucket, key, f"2026-11-2{index}T00:00:00Z")
            write_item(dynamodb, table, dataclasses.replace(item, etag=etag))
        console = Console(
            dynamodb=dynamodb, s3=s3, table=table, bucket=bucket, reviewer="ana", labels=LABELS
        )
        server = ReviewServer(console, port=0)
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


def shown(running: Running, item: dict[str, Any]) -> int:
    """Fetch the photo as the page does (what lets a decision through); the HTTP status."""
    return running.request("GET", item["photo"])[0]


def test_batch_oldest_first_with_reason_top3_and_fixed_labels(running: Running) -> None:
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
    assert first["top3"][0] == {"label": "stroller", "score": 0.4, "known": True}
    # A top-3 label outside the model's set is shown as such, and is no category to choose.
    assert first["top3"][1] == {"label": "<b>walkers</b>", "score": 0.3, "known": False}
    assert [entry["label"] for entry in data["labels"]] == sorted(LABELS)
    assert first["reason_text"].startswith("below the review threshold")
    assert first["photo"].startswith("/api/photo/")
    assert "uploads" not in first["photo"]


def test_decision_changes_the_item_and_leaves_the_queue(running: Running) -> None:
    item = queue(running)["items"][2]
    token = {"X-CSRF-Token": running.console.csrf_token}
    assert shown(running, item) == 200
    status, result = running.decide(item, "walkers", **token)
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
    # Sent again (a stale page): this console no longer holds it, the page must reload.
    status, again = running.decide(item, "bathtub", **token)
    assert (status, again["reload"]) == (409, True)


def test_no_decision_on_a_photo_the_page_did_not_show(running: Running) -> None:
    items = {item["key"]: item for item in queue(running)["items"]}
    token = {"X-CSRF-Token": running.console.csrf_token}
    # Never fetched: not seen.
    status, answer = running.decide(items["uploads/b.jpg"], "walkers", **token)
    assert status == 400
    assert "not shown" in answer["error"]
    # Cannot be shown (outside uploads/): only "unusable" is accepted.
    secret = items["private/secret.jpg"]
    assert shown(running, secret) == 422
    assert queue(running)["items"][1]["unviewable"] == "not_an_image"
    assert running.decide(secret, "walkers", **token)[0] == 400
    assert running.decide(secret, "not_a_baby_product", **token)[0] == 400
    status, answer = running.decide(secret, "unusable_photo", **token)
    assert (status, answer["ok"]) == (200, True)


def test_state_change_without_or_with_a_wrong_csrf_token_is_refused(running: Running) -> None:
    item = queue(running)["items"][2]
    shown(running, item)
    assert running.decide(item, "walkers")[0] == 403
    status, answer = running.decide(item, "walkers", **{"X-CSRF-Token": "guess"})
    assert (status, answer["reload"]) == (403, True)  # also a tab from before a restart
    status, _, _ = running.request("POST", "/api/undo", {"id": item["id"]})
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


def test_photos_only_from_the_consoles_own_batch(running: Running) -> None:
    items = {item["key"]: item for item in queue(running)["items"]}
    status, headers, body = running.request("GET", items["uploads/b.jpg"]["photo"])
    assert (status, headers["Content-Type"], body[:2]) == (200, "image/jpeg", b"\xff\xd8")
    for key in ("private/secret.jpg", "uploads/", "uploads/../private/secret.jpg", "upload.jpg"):
        with pytest.raises(ValueError, match="photo"):
            check_photo_key(key)
    # No route fetches or signs a key (or an id) the caller makes up.
    for path in (
        "/api/photo/uploads/b.jpg",
        "/api/photo/guess",
        "/api/photo?key=private/secret.jpg",
        "/photo/private/secret.jpg",
        "/static/x",
    ):
        assert running.request("GET", path)[0] == 404


def test_page_carries_no_data_and_never_builds_markup_from_it(running: Running) -> None:
    status, headers, page = running.request("GET", "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "img-src 'self'" in csp
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
    assert b"<img" not in raw
    assert b"<b>" not in raw
    assert json.loads(raw)["items"][0]["key"] == HOSTILE_KEY


def test_malformed_requests_get_a_4xx_answer(running: Running) -> None:
    """Requests no browser sends: each is answered (4xx), none leaves the client hanging."""
    host, port = running.server.server_address[:2]
    token = running.console.csrf_token
    start = (
        f"POST /api/decide HTTP/1.1\r\nHost: {host}:{port}\r\nX-CSRF-Token: {token}\r\n"
        "Content-Type: application/json\r\n"
    )
    for request, expected in (
        (start + "\r\n{}", b"411"),  # no Content-Length
        (start + "Content-Length: -5\r\n\r\n{}", b"411"),
        (start + "Content-Length: ten\r\n\r\n{}", b"411"),
        (start + "Content-Length: 99999999\r\n\r\n{}", b"413"),
        (start + 'Content-Length: 7\r\n\r\n{"id":', b"400"),  # truncated JSON
        (start + "Content-Length: 2\r\n\r\n[]", b"400"),  # not an object
    ):
        answer = running.raw_request(request.encode())
        assert answer.split(b" ")[1] == expected, request
    nested = b"[" * 10_000 + b"]" * 10_000
    answer = running.raw_request(
        (start + f"Content-Length: {len(nested)}\r\n\r\n").encode() + nested
    )
    assert answer.split(b" ")[1] == b"413"  # over 16 KiB
    nested = b'{"id":' * 1000 + b"1" + b"}" * 1000
    answer = running.raw_request(
        (start + f"Content-Length: {len(nested)}\r\n\r\n").encode() + nested
    )
    assert answer.split(b" ")[1] == b"400"
    assert b"too deep" in answer


def test_an_idle_connection_is_closed(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    assert server_module.ReviewHandler.timeout == server_module.CONNECTION_TIMEOUT
    monkeypatch.setattr(server_module.ReviewHandler, "timeout", 0.5)
    host, port = running.server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(b"POST /api/decide HTTP/1.1\r\n")  # and then nothing
        assert connection.recv(1024) == b""  # closed by the server, not after 10 s


def test_console_serves_loopback_only(running: Running) -> None:
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="loopback only"):
            ReviewServer(running.console, host=host, port=0)


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


def test_letters_never_change_when_an_unknown_label_appears(running: Running) -> None:
    """GIVEN a console whose letters the page learned WHEN a photo whose top 3 names a label
    outside the model's set joins the batch THEN every letter stays, and the label gets none."""
    before = queue(running)["labels"]
    later = dataclasses.replace(
        unsure(running.bucket, "uploads/new.jpg", "2026-11-29T00:00:00Z"),
        top3=(LabelScore("playpen", 0.6), LabelScore("stroller", 0.2)),
    )
    write_item(running.dynamodb, running.table, later)
    data = queue(running)
    assert data["labels"] == before
    assert "playpen" not in [entry["label"] for entry in data["labels"]]


def test_against_aws_the_reviewer_is_not_self_chosen(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--table", "t", "--bucket", "b", "--reviewer", "someone-else"])
    assert stopped.value.code == 2
    assert "your identity decides" in capsys.readouterr().err
