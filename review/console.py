"""What the review page asks for, as plain methods: the reviewer's batch, a photo, a decision, an
undo.

:class:`Console` holds the clients, the table and bucket, the reviewer, the model's label set and
the page's CSRF token; :mod:`review.server` only turns HTTP requests into these calls, so
everything here is tested without a web server.

* **A batch of its own.** The console claims a few photos at a time under a lease
  (:mod:`review.leases`), so several consoles work through one queue on disjoint photos. The page
  names a photo by an opaque id the console gave it, never by its S3 key.
* **Every decided photo is seen.** The console fetches a held photo's object version (``IfMatch``
  on its ETag) and turns it into a JPEG preview with the worker's own decoder under the worker's
  limits (:func:`contracts.image.preview_jpeg`), so a HEIC or a 16-bit TIFF is a picture in any
  browser, at review size. A photo the console could not show accepts only "unusable photo". Why
  here and not a preview written by the worker: only the few photos a person looks at pay for it,
  the worker and its IAM role stay as they are, and existing items need no backfill.
* **Stable, safe labels.** The categories and their letters come from the model's label set when
  the console starts and never change; a label outside it (in a top 3, the table or a request) is
  shown as such and refused.
* **Costs that do not grow with the backlog.** A decision writes the item, one audit item and the
  counters, and reads nothing; the batch is topped up by one query of the index's oldest entries
  when it runs low; the "left" count is a capped COUNT, at most every :data:`RECOUNT_SECONDS`.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from botocore.exceptions import ClientError

from contracts.catalogue import CatalogueItem
from contracts.image import DEFAULT_MAX_IMAGE_BYTES, ImageRejected, preview_jpeg
from contracts.unfamiliarity import REASON_UNFAMILIAR
from review import audit, decisions, leases

PHOTO_PREFIX: Final[str] = "uploads/"
# Previews: the longer side in pixels (a 12 MP photo at about half size; the page zooms to 100 %
# of the preview), and the decoder's memory budget (the worker's default on 1024 MB).
PREVIEW_SIDE: Final[int] = 2048
PREVIEW_MEMORY: Final[int] = 512 * 2**20
_PREVIEWS_KEPT: Final[int] = 24
# Two decodes at a time at most: the page preloads a few photos ahead, memory stays bounded.
_DECODES: Final[threading.BoundedSemaphore] = threading.BoundedSemaphore(2)
# Pace over the last this many decisions (decisions per minute, as the page shows it).
PACE_WINDOW: Final[int] = 20
# The queue's length and the team's counters are read at most this often, on the page's queue
# request, never in a decision; in between, this console's own decisions adjust the count.
RECOUNT_SECONDS: Final[float] = 30.0
# The count reads at most this many index entries ("1000+ left" beyond): bounded cost.
COUNT_CAP: Final[int] = 1000
# Keys with a fixed meaning on the page: never given to a category.
RESERVED_KEYS: Final[dict[str, str]] = {
    "n": decisions.NOT_A_PRODUCT,
    "u": decisions.UNUSABLE,
    "z": "undo",
}
_FIELD_LIMIT: Final[int] = 2048
_UNDO_KEPT: Final[int] = 50
_REASONS: Final[dict[str, str]] = {
    REASON_UNFAMILIAR: "unfamiliar: unlike anything the model was trained on",
}


class BadRequest(ValueError):
    """A request the page would never send (missing or malformed fields)."""


class NotHeld(LookupError):
    """The photo is not held by this console (a page from before a restart, or a guess)."""


def check_photo_key(key: str) -> None:
    """``ValueError`` for any key outside ``uploads/`` (or with ``.``/``..`` segments)."""
    if not key.startswith(PHOTO_PREFIX) or len(key) <= len(PHOTO_PREFIX):
        raise ValueError(f"only photos under {PHOTO_PREFIX} can be shown, not {key!r}")
    if any(segment in (".", "..") for segment in key.split("/")):
        raise ValueError(f"a photo key has no relative path segments: {key!r}")


def shortcuts(labels: Sequence[str]) -> dict[str, str]:
    """One letter per category, for one-keystroke decisions: the first free initial of the
    label's words, else the first free letter of the label, else any free letter. Letters in
    :data:`RESERVED_KEYS` and digits (the model's top 3) are never used."""
    taken = set(RESERVED_KEYS)
    keys: dict[str, str] = {}
    for label in labels:
        words = [word for word in label.lower().replace("-", "_").split("_") if word]
        candidates = [word[0] for word in words] + [c for c in label.lower() if "a" <= c <= "z"]
        candidates += [chr(code) for code in range(ord("a"), ord("z") + 1)]
        letter = next((c for c in candidates if "a" <= c <= "z" and c not in taken), None)
        if letter is not None:
            keys[label] = letter
            taken.add(letter)
    return keys


class Console:
    """The review console's state for one reviewer (one server process, one lease holder)."""

    def __init__(
        self,
        *,
        dynamodb: Any,
        s3: Any,
        table: str,
        bucket: str,
        reviewer: str,
        labels: Iterable[str],
        second_opinion_rate: float = 0.0,
        batch: int = leases.BATCH,
        lease_seconds: int = leases.LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.labels: tuple[str, ...] = tuple(sorted(set(labels)))
        if not self.labels:
            raise ValueError("the console needs the model's labels (--model): none were found")
        if not 0.0 <= second_opinion_rate <= 1.0:
            raise ValueError("the second-opinion rate is between 0 and 1")
        self.dynamodb = dynamodb
        self.s3 = s3
        self.table = table
        self.bucket = bucket
        self.reviewer = reviewer
        # Fixed for the console's life: the page's letters never change in a session.
        self.letters = shortcuts(self.labels)
        self.second_opinion_rate = second_opinion_rate
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.csrf_token = secrets.token_urlsafe(32)
        # The lease holder: this reviewer in this console process (a restart is a new holder).
        self.holder = f"{reviewer}#{secrets.token_hex(6)}"
        self._clock = clock
        self._lock = threading.RLock()
        self._held: OrderedDict[str, CatalogueItem] = OrderedDict()  # page id -> item as claimed
        self._decided: OrderedDict[str, tuple[CatalogueItem, CatalogueItem]] = OrderedDict()
        self._previews: OrderedDict[str, bytes | ImageRejected] = OrderedDict()
        self._times: deque[float] = deque([clock()], maxlen=PACE_WINDOW + 1)
        self.decided = 0
        self._remaining: tuple[float, int] | None = None  # (when counted, count)
        self._team: tuple[float, dict[str, Any]] | None = None

    # ----------------------------------------------------------------------------- reading ---

    def queue(self) -> dict[str, Any]:
        """This console's batch (topped up from the queue when it runs low), with everything
        the page shows."""
        with self._lock:
            self._top_up()
            items = [self._view(page_id, item) for page_id, item in self._held.items()]
            team = self._team_stats()
        return {
            "items": items,
            **self.progress(recount=True),
            "labels": [{"label": label, "key": self.letters.get(label)} for label in self.labels],
            "team": team,
        }

    def _top_up(self) -> None:
        now = int(self._clock())
        active = [item for item in self._held.values() if (item.lease_expires or 0) > now]
        # Only when the batch runs low, so the index is read once per few decisions.
        if len(active) > self.batch // 2:
            return
        # A decided photo cannot be claimed again (its status changed), even while the
        # eventually consistent index still lists it; only held ones need skipping.
        known = {item.object_id for item in self._held.values()}
        for item in leases.claim(
            self.dynamodb,
            self.table,
            self.holder,
            want=self.batch - len(active),
            now=now,
            seconds=self.lease_seconds,
            skip=frozenset(known),
            reviewer=self.reviewer,
        ):
            self._held[secrets.token_urlsafe(12)] = item

    def progress(self, *, recount: bool = False) -> dict[str, Any]:
        """How many are left, how many this reviewer decided, and the pace per minute."""
        elapsed = self._times[-1] - self._times[0]
        pace = (len(self._times) - 1) * 60.0 / elapsed if len(self._times) > 1 and elapsed else None
        remaining = self.remaining(recount=recount)
        return {
            "remaining": remaining,
            "remaining_capped": remaining >= COUNT_CAP,
            "decided": self.decided,
            "per_minute": None if pace is None else round(pace, 1),
            "reviewer": self.reviewer,
        }

    def remaining(self, change: int = 0, *, recount: bool = False) -> int:
        """Photos waiting: a capped count, at most every :data:`RECOUNT_SECONDS` and only when
        ``recount`` (the queue request), else the last count adjusted by ``change``."""
        now = self._clock()
        stale = self._remaining is None or now - self._remaining[0] >= RECOUNT_SECONDS
        if (recount and stale) or self._remaining is None:
            count = decisions.queue_length(self.dynamodb, self.table, cap=COUNT_CAP)
            self._remaining = (now, count)
        elif change:
            self._remaining = (self._remaining[0], max(0, self._remaining[1] + change))
        return self._remaining[1]

    def _team_stats(self) -> dict[str, Any]:
        now = self._clock()
        if self._team is None or now - self._team[0] >= RECOUNT_SECONDS:
            self._team = (now, audit.team_stats(self.dynamodb, self.table))
        return self._team[1]

    def _view(self, page_id: str, item: CatalogueItem) -> dict[str, Any]:
        preview = self._previews.get(page_id)
        return {
            "id": page_id,
            "key": item.key,
            "uploaded_at": item.uploaded_at,
            "model_version": item.model_version,
            "category": decisions.model_choice(item),
            "confidence": item.confidence,
            "top3": [
                {"label": s.label, "score": s.score, "known": s.label in self.letters}
                for s in item.top3
            ],
            "reason": item.reason,
            "reason_text": _REASONS.get(item.reason or "", item.reason)
            or "below the review threshold: the model is unsure",
            "deliberate": item.reason == REASON_UNFAMILIAR,
            "second_opinion": item.first_opinion_by is not None,
            "width": item.width,
            "height": item.height,
            "photo": f"/api/photo/{page_id}",
            "unviewable": preview.reason if isinstance(preview, ImageRejected) else None,
        }

    def photo(self, page_id: str) -> bytes:
        """The JPEG preview of a photo this console holds; ``NotHeld`` for any other id,
        :class:`ImageRejected` when it cannot be shown (only "unusable" is accepted then)."""
        with self._lock:
            item = self._held.get(page_id)
            cached = self._previews.get(page_id)
        if item is None:
            raise NotHeld("no such photo in this console's batch")
        if cached is None:
            cached = self._render(item)
            with self._lock:
                self._previews[page_id] = cached
                while len(self._previews) > _PREVIEWS_KEPT:
                    self._previews.popitem(last=False)
        if isinstance(cached, ImageRejected):
            raise cached
        return cached

    def _render(self, item: CatalogueItem) -> bytes | ImageRejected:
        try:
            if item.bucket != self.bucket:
                raise ValueError("this console reviews one bucket")
            check_photo_key(item.key)
        except ValueError as error:
            return ImageRejected("not_an_image", str(error))
        request: dict[str, Any] = {"Bucket": item.bucket, "Key": item.key}
        if item.etag:
            request["IfMatch"] = item.etag  # exactly the version the decision will be about
        try:
            body = self.s3.get_object(**request)["Body"]
            data = body.read(DEFAULT_MAX_IMAGE_BYTES + 1)
            body.close()
        except ClientError as error:
            return ImageRejected("not_an_image", f"the photo cannot be read ({error})")
        try:
            with _DECODES:
                return preview_jpeg(data, long_side=PREVIEW_SIDE, max_memory=PREVIEW_MEMORY)
        except ImageRejected as error:
            return error

    # ----------------------------------------------------------------------------- writing ---

    def decide(self, body: dict[str, Any]) -> dict[str, Any]:
        page_id, choice = _text(body, "id"), _text(body, "choice")
        deliberate = body.get("deliberate") is True
        with self._lock:
            held = self._held.get(page_id)
            if held is None:
                raise NotHeld("this photo is not in this console's batch: reload the page")
            try:
                preview = self._previews.get(page_id)
                if choice != decisions.UNUSABLE and not isinstance(preview, bytes):
                    raise decisions.ChoiceRefused(
                        "this photo was not shown: only 'unusable photo' can be chosen"
                    )
                written = decisions.decide(
                    self.dynamodb,
                    self.table,
                    held,
                    choice,
                    reviewer=self.reviewer,
                    holder=self.holder,
                    labels=frozenset(self.labels),
                    deliberate=deliberate,
                    second_opinion_rate=self.second_opinion_rate,
                )
            except decisions.ChoiceRefused as error:
                self._audit("refused", held, choice=choice, detail=str(error))
                raise BadRequest(str(error)) from error
            del self._held[page_id]
            if written is None:
                self._audit("refused", held, choice=choice, detail="changed since shown")
                return {"ok": False, "changed": True, **self.progress()}
            first_opinion = written.first_opinion_by is not None
            self._audit(
                "first_opinion" if first_opinion else "decided",
                held,
                choice=choice,
                outcome=None if first_opinion else _outcome(written),
                first=held,
                at=written.reviewed_at,
            )
            self._decided[page_id] = (held, written)
            while len(self._decided) > _UNDO_KEPT:
                self._decided.popitem(last=False)
            self.decided += 1
            self._times.append(self._clock())
            self.remaining(0 if first_opinion else -1)
            return {
                "ok": True,
                "outcome": "first_opinion" if first_opinion else _outcome(written),
                "status": written.status.value,
                **self.progress(),
            }

    def undo(self, body: dict[str, Any]) -> dict[str, Any]:
        page_id = _text(body, "id")
        with self._lock:
            entry = self._decided.get(page_id)
            if entry is None:
                raise NotHeld("no decision of this console to undo: reload the page")
            before, written = entry
            # Exactly the item as it was claimed, its lease renewed for this console.
            renewed = dataclasses.replace(
                before, lease_expires=int(self._clock()) + self.lease_seconds
            )
            restored = decisions.undo(self.dynamodb, self.table, renewed, written)
            del self._decided[page_id]
            if restored is None:
                self._audit("refused", before, detail="undo: changed since decided")
                return {"ok": False, "changed": True, **self.progress()}
            self._audit(
                "undone",
                before,
                outcome=None if written.first_opinion_by else _outcome(written),
            )
            self._held[page_id] = restored
            self._held.move_to_end(page_id, last=False)
            self.decided = max(0, self.decided - 1)
            self.remaining(0 if written.first_opinion_by else +1)
            return {"ok": True, "item": self._view(page_id, restored), **self.progress()}

    def release_all(self) -> int:
        """Give every held photo back to the queue (the console stops); how many."""
        with self._lock:
            released = sum(
                leases.release(self.dynamodb, self.table, item, self.holder)
                for item in self._held.values()
            )
            self._held.clear()
        return released

    def _audit(
        self,
        event: str,
        item: CatalogueItem,
        *,
        choice: str | None = None,
        outcome: str | None = None,
        detail: str | None = None,
        first: CatalogueItem | None = None,
        at: str | None = None,
    ) -> None:
        opinion = None
        if first is not None and first.first_opinion_by and first.first_opinion_choice:
            opinion = {"reviewer": first.first_opinion_by, "choice": first.first_opinion_choice}
        audit.record(
            self.dynamodb,
            self.table,
            event=event,
            reviewer=self.reviewer,
            item=item,
            choice=choice,
            outcome=outcome,
            detail=detail,
            first_opinion=opinion,
            at=at,
        )


def _outcome(item: CatalogueItem) -> str | None:
    return None if item.review_outcome is None else item.review_outcome.value


def _text(body: Any, name: str) -> str:
    if not isinstance(body, dict):
        raise BadRequest("a JSON object is expected")
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > _FIELD_LIMIT:
        raise BadRequest(f"{name} must be a non-empty string")
    return value
