"""What the review page asks for, as plain methods: the queue, a decision, an undo.

:class:`Console` holds the clients, the table and bucket, the reviewer's name, the category list
and the page's CSRF token; :mod:`review.server` only turns HTTP requests into these calls, so
everything here is tested without a web server.

Photos reach the browser as short-lived presigned GET URLs (:func:`photo_url`), made only for keys
under ``uploads/`` of the console's own bucket; nothing else can be signed, and the page never
proxies object bytes.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from contracts.catalogue import CatalogueItem
from review import decisions

PHOTO_PREFIX: Final[str] = "uploads/"
# A presigned URL lives this long; the page re-reads the queue before its photos' URLs expire.
PHOTO_URL_SECONDS: Final[int] = 300
# How many queue items one page request returns (the page keeps a few ahead, preloaded).
QUEUE_PAGE: Final[int] = 12
# Pace over the last this many decisions (decisions per minute, as the page shows it).
PACE_WINDOW: Final[int] = 20
# The queue's length is counted (a COUNT query over the whole index) at most this often; in
# between, this console's own decisions and undos adjust the last count.
RECOUNT_SECONDS: Final[float] = 15.0
# Keys with a fixed meaning on the page: never given to a category.
RESERVED_KEYS: Final[dict[str, str]] = {
    "n": decisions.NOT_A_PRODUCT,
    "u": decisions.UNUSABLE,
    "z": "undo",
}
_FIELD_LIMIT: Final[int] = 2048


class BadRequest(ValueError):
    """A request the page would never send (missing or malformed fields)."""


def photo_url(s3_client: Any, bucket: str, key: str, *, expires_in: int = PHOTO_URL_SECONDS) -> str:
    """A presigned GET URL for an uploaded photo; ``ValueError`` for any key outside
    ``uploads/`` (or with ``.``/``..`` path segments, which some tools resolve)."""
    if not key.startswith(PHOTO_PREFIX) or len(key) <= len(PHOTO_PREFIX):
        raise ValueError(f"only photos under {PHOTO_PREFIX} can be shown, not {key!r}")
    if any(segment in (".", "..") for segment in key.split("/")):
        raise ValueError(f"a photo key has no relative path segments: {key!r}")
    return s3_client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in
    )


def shortcuts(labels: Sequence[str]) -> dict[str, str]:
    """One letter per category, for one-keystroke decisions: the first free initial of the
    label's words, else the first free letter of the label, else any free letter. Letters in
    :data:`RESERVED_KEYS` and digits (the model's top 3) are never used."""
    taken = set(RESERVED_KEYS)
    keys: dict[str, str] = {}
    for label in labels:
        words = [word for word in re.split(r"[^a-z]+", label.lower()) if word]
        candidates = [word[0] for word in words] + [c for c in label.lower() if "a" <= c <= "z"]
        candidates += [chr(code) for code in range(ord("a"), ord("z") + 1)]
        letter = next((c for c in candidates if c not in taken), None)
        if letter is not None:
            keys[label] = letter
            taken.add(letter)
    return keys


class Console:
    """The review console's state for one reviewer (one server process)."""

    def __init__(
        self,
        *,
        dynamodb: Any,
        s3: Any,
        table: str,
        bucket: str,
        reviewer: str,
        labels: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dynamodb = dynamodb
        self.s3 = s3
        self.table = table
        self.bucket = bucket
        self.reviewer = reviewer
        self.labels = sorted(set(labels))
        self.csrf_token = secrets.token_urlsafe(32)
        self._clock = clock
        self._times: deque[float] = deque([clock()], maxlen=PACE_WINDOW + 1)
        self.decided = 0
        self._remaining: tuple[float, int] | None = None  # (when counted, count)

    # ----------------------------------------------------------------------------- reading ---

    def queue(self, limit: int = QUEUE_PAGE) -> dict[str, Any]:
        """The oldest photos waiting for a person, with everything the page shows."""
        items, _ = decisions.review_queue(self.dynamodb, self.table, limit=max(1, min(limit, 50)))
        for item in items:  # a label the model artifact did not list still gets a button
            for label in [score.label for score in item.top3] + [item.category]:
                if label and label not in self.labels:
                    self.labels = sorted({*self.labels, label})
        return {
            "items": [self._view(item) for item in items],
            "url_seconds": PHOTO_URL_SECONDS,
            **self.progress(),
            "labels": [
                {"label": label, "key": shortcuts(self.labels).get(label)} for label in self.labels
            ],
        }

    def progress(self) -> dict[str, Any]:
        """How many are left, how many this reviewer decided, and the pace per minute."""
        elapsed = self._times[-1] - self._times[0]
        pace = (len(self._times) - 1) * 60.0 / elapsed if len(self._times) > 1 and elapsed else None
        return {
            "remaining": self.remaining(),
            "decided": self.decided,
            "per_minute": None if pace is None else round(pace, 1),
            "reviewer": self.reviewer,
        }

    def remaining(self, change: int = 0) -> int:
        """Photos waiting: counted every :data:`RECOUNT_SECONDS`, else the last count adjusted."""
        now = self._clock()
        if self._remaining is None or now - self._remaining[0] >= RECOUNT_SECONDS:
            self._remaining = (now, decisions.queue_length(self.dynamodb, self.table))
        elif change:
            self._remaining = (self._remaining[0], max(0, self._remaining[1] + change))
        return self._remaining[1]

    def _view(self, item: CatalogueItem) -> dict[str, Any]:
        url: str | None
        try:
            url = photo_url(self.s3, self.bucket, item.key) if item.bucket == self.bucket else None
        except ValueError:
            url = None  # shown without a photo: the reviewer can still call it unusable
        return {
            "bucket": item.bucket,
            "key": item.key,
            "etag": item.etag,
            "event_order": item.event_order,
            "uploaded_at": item.uploaded_at,
            "model_version": item.model_version,
            "category": decisions.model_choice(item),
            "top3": [{"label": score.label, "score": score.score} for score in item.top3],
            "width": item.width,
            "height": item.height,
            "photo_url": url,
        }

    # ----------------------------------------------------------------------------- writing ---

    def decide(self, body: dict[str, Any]) -> dict[str, Any]:
        shown = self._shown(body)
        choice = _text(body, "choice")
        try:
            written = decisions.decide(
                self.dynamodb,
                self.table,
                shown,
                choice,
                reviewer=self.reviewer,
                labels=set(self.labels),
            )
        except ValueError as error:
            raise BadRequest(str(error)) from error
        if written is None:
            return {"ok": False, "changed": True, **self.progress()}
        self.decided += 1
        self._times.append(self._clock())
        self.remaining(-1)
        return {
            "ok": True,
            "outcome": written.review_outcome.value if written.review_outcome else None,
            "status": written.status.value,
            "reviewed_at": written.reviewed_at,
            **self.progress(),
        }

    def undo(self, body: dict[str, Any]) -> dict[str, Any]:
        restored = decisions.undo(
            self.dynamodb,
            self.table,
            self._shown(body),
            reviewer=self.reviewer,
            reviewed_at=_text(body, "reviewed_at"),
        )
        if restored is None:
            return {"ok": False, "changed": True, **self.progress()}
        self.decided = max(0, self.decided - 1)
        self.remaining(+1)
        return {"ok": True, "item": self._view(restored), **self.progress()}

    def _shown(self, body: dict[str, Any]) -> decisions.Shown:
        shown = _shown(body)
        if shown.bucket != self.bucket:
            raise BadRequest("this console reviews one bucket")
        return shown


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > _FIELD_LIMIT:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def _shown(body: dict[str, Any]) -> decisions.Shown:
    if not isinstance(body, dict):
        raise BadRequest("a JSON object is expected")
    etag = body.get("etag")
    if etag is not None and not isinstance(etag, str):
        raise BadRequest("etag must be a string or null")
    return decisions.Shown(
        bucket=_text(body, "bucket"),
        key=_text(body, "key"),
        etag=etag,
        event_order=_text(body, "event_order"),
    )


def image_origin(s3_client: Any, bucket: str) -> str:
    """The scheme and host presigned photo URLs point at (the page's CSP allows images only
    from there)."""
    parts = urlsplit(photo_url(s3_client, bucket, PHOTO_PREFIX + "origin-probe"))
    return f"{parts.scheme}://{parts.netloc}"
