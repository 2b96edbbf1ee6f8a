"""Every photo a person decided in the review console, as a dataset folder for the next training.

    python -m review.reviewed_dataset --table T --bucket B --out DIR [--model DEST]
    python -m review.reviewed_dataset --out DIR      # the local stack kept up by --serve

Layout of ``DIR`` (it must not exist yet, or be empty)::

    DIR/labelled/<label>/<sha256>.<ext>       confirmed and corrected photos: train with
                                              --data ORIGINAL --data DIR/labelled
    DIR/not_a_baby_product/<sha256>.<ext>     "not a baby product": an out-of-distribution set
                                              (never a training label; for unfamiliarity checks)
    DIR/manifest.json                         every decided item: key, ETag, sha256, bytes,
                                              outcome, label, reviewer, the model's first choice,
                                              and where its file went (or why it was left out)

Photos marked "unusable photo" are listed in the manifest and not exported. Each photo is fetched
with ``IfMatch`` on the ETag the decision was made on, so what is exported is exactly the version
the person saw; a photo replaced or deleted since is left out and listed as such (a deleted photo's
decision comes from the audit trail, since the delete's tombstone replaced the item). File names
are the content's sha256 (never the S3 key, which a seller chose), so identical bytes are one file;
the same bytes decided as two different categories, or as a category and "not a baby product",
are a conflict and left out of both folders.

Only the model's labels (``--model``, the published artifact's ``labels.json``) become folders: a
decision naming anything else (another model's label, a path such as ``../..``) is listed as
``label_not_in_model`` and left out, so an export can never add a class or write outside ``DIR``.

Memory stays flat: each photo streams from S3 to a file under ``DIR`` in 1 MiB chunks, hashed on
the way, and is moved into place once every conflict is known (the peak is a few MiB whatever
the number or size of the photos; tests/functional/test_reviewed_dataset.py measures it).

With the manifest the dataset can be rebuilt: every entry names the object version (key + ETag)
and the hash its bytes must have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final

import boto3
from botocore.exceptions import ClientError
from PIL import Image

from contracts.catalogue import (
    OBJECT_ID,
    CatalogueItem,
    CategorySource,
    ReviewOutcome,
    Status,
    is_catalogue_item,
)
from contracts.catalogue_table import deserialize, read_item
from contracts.image import SUPPORTED_FORMATS
from local_stack.stack import point_boto3_at
from local_stack.state import read_state
from review.audit import AUDIT_PREFIX
from review.model_labels import is_safe_label, model_labels
from review.stack_outputs import stack_names

MANIFEST_NAME: Final[str] = "manifest.json"
LABELLED_DIR: Final[str] = "labelled"
OUT_OF_DISTRIBUTION_DIR: Final[str] = ReviewOutcome.NOT_A_PRODUCT.value
FORMAT_VERSION: Final[int] = 1
_CHUNK: Final[int] = 1024 * 1024
_INCOMING: Final[str] = ".incoming"
_GONE: Final[frozenset[str]] = frozenset({"404", "NoSuchKey", "NotFound"})
_REPLACED: Final[frozenset[str]] = frozenset({"412", "PreconditionFailed"})


@dataclass
class ExportStats:
    labelled: Counter[str] = field(default_factory=Counter)
    out_of_distribution: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "labelled": dict(sorted(self.labelled.items())),
            "labelled_total": sum(self.labelled.values()),
            "out_of_distribution": self.out_of_distribution,
            "skipped": dict(sorted(self.skipped.items())),
        }


def reviewed_items(dynamodb: Any, table: str, bucket: str | None = None) -> list[CatalogueItem]:
    """Every catalogue item a person decided (a filtered scan; decisions are a small share)."""
    return decisions_with_trail(dynamodb, table, bucket).items


@dataclass
class Decisions:
    items: list[CatalogueItem]  # decided items (a person's category or rejection)
    orphans: list[dict[str, Any]]  # audit events of decisions the item no longer holds
    first_opinions: dict[str, dict[str, str]]  # object_id -> {reviewer, choice} (second opinion)

    def entries(self) -> list[dict[str, Any]]:
        return [
            decision_entry(item, self.first_opinions.get(item.object_id)) for item in self.items
        ]


def decisions_with_trail(dynamodb: Any, table: str, bucket: str | None) -> Decisions:
    """The decided items, and the audit trail's decisions whose item no longer holds them (the
    photo was deleted, or uploaded again): one filtered scan for both."""
    items: list[CatalogueItem] = []
    last_event: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="#source = :human OR begins_with(#id, :audit)",
        ExpressionAttributeNames={"#source": "category_source", "#id": OBJECT_ID},
        ExpressionAttributeValues={
            ":human": {"S": CategorySource.HUMAN.value},
            ":audit": {"S": AUDIT_PREFIX},
        },
        ConsistentRead=True,
    ):
        for raw in page["Items"]:
            if is_catalogue_item(raw):
                items.append(CatalogueItem.from_attributes(deserialize(raw)))
                continue
            event = deserialize(raw)
            if event.get("event") not in ("decided", "undone"):
                continue
            shown = event["shown"]
            version = (shown["bucket"], shown["key"], shown.get("etag"), shown["event_order"])
            if version not in last_event or last_event[version][OBJECT_ID] < event[OBJECT_ID]:
                last_event[version] = event
    items = [item for item in items if item.status is not Status.DELETED]
    if bucket is not None:
        items = [item for item in items if item.bucket == bucket]
    first_opinions = {}
    for item in items:  # the first opinion, when the photo had a second one
        event = last_event.get((item.bucket, item.key, item.etag, item.event_order))
        if event is not None and event.get("first_opinion"):
            first_opinions[item.object_id] = dict(event["first_opinion"])
    held = {(item.bucket, item.key, item.etag, item.event_order) for item in items}
    orphans = [
        event
        for version, event in sorted(last_event.items())
        if event["event"] == "decided"
        and version not in held
        and (bucket is None or version[0] == bucket)
    ]
    return Decisions(sorted(items, key=lambda i: (i.bucket, i.key)), orphans, first_opinions)


def export_reviewed(
    *,
    dynamodb: Any,
    s3: Any,
    table: str,
    bucket: str,
    out: Path,
    labels: Collection[str],
) -> tuple[ExportStats, dict[str, Any]]:
    """Write the reviewed dataset under ``out``; returns the counts and the manifest. Only
    ``labels`` (the model's label set) become folders."""
    allowed = {label for label in labels if is_safe_label(label)}
    if not allowed:
        raise ValueError("no model labels to export to: pass the published model with --model")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    incoming = out / _INCOMING
    incoming.mkdir()
    stats = ExportStats()
    entries: list[dict[str, Any]] = []
    fetched: list[tuple[dict[str, Any], Path]] = []
    found = decisions_with_trail(dynamodb, table, bucket)
    for item, entry in zip(found.items, found.entries(), strict=True):
        entries.append(entry)
        if item.review_outcome is ReviewOutcome.UNUSABLE:
            entry["skipped"] = "unusable_photo"
            continue
        if entry["label"] is not None and entry["label"] not in allowed:
            entry["skipped"] = "label_not_in_model"
            continue
        part = incoming / str(len(fetched))
        try:
            entry["sha256"], entry["bytes"] = _fetch(s3, item, part)
        except LookupError as error:
            entry["skipped"] = str(error)
            continue
        fetched.append((entry, part))
    for event in found.orphans:
        entries.append(_orphan_entry(dynamodb, table, event))
    entries.sort(key=lambda entry: entry["key"])

    # The same bytes decided two ways (two categories, or a category and "not a baby product"):
    # neither is something to learn from.
    decided_as: dict[str, set[str | None]] = defaultdict(set)
    for entry, _ in fetched:
        decided_as[entry["sha256"]].add(entry["label"])
    for entry, part in fetched:
        if len(decided_as[entry["sha256"]]) > 1:
            entry["skipped"] = "conflicting_labels"
            part.unlink()
            continue
        folder = (
            out / OUT_OF_DISTRIBUTION_DIR
            if entry["label"] is None
            else out / LABELLED_DIR / entry["label"]
        )
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (entry["sha256"] + _extension(entry["key"]))
        if target.exists():
            part.unlink()  # the same bytes, decided the same way: one file
        else:
            os.replace(part, target)
        entry["path"] = target.relative_to(out).as_posix()
    shutil.rmtree(incoming)
    for entry in entries:
        if "skipped" in entry:
            stats.skipped[entry["skipped"]] += 1
        elif entry["label"] is None:
            stats.out_of_distribution += 1
        else:
            stats.labelled[entry["label"]] += 1
    manifest = {
        "format": FORMAT_VERSION,
        "kind": "reviewed_dataset",
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "table": table,
        "bucket": bucket,
        "labels": sorted(allowed),
        "layout": {
            "labelled": f"{LABELLED_DIR}/<label>/<sha256><ext>",
            "out_of_distribution": f"{OUT_OF_DISTRIBUTION_DIR}/<sha256><ext>",
        },
        "counts": stats.summary(),
        "items": entries,
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return stats, manifest


def _orphan_entry(dynamodb: Any, table: str, event: dict[str, Any]) -> dict[str, Any]:
    """A decision the audit trail holds but the item no longer does."""
    shown = event["shown"]
    current = read_item(dynamodb, table, shown["bucket"], shown["key"])
    gone = current is None or current.status is Status.DELETED
    choice = event.get("choice")
    return {
        "key": shown["key"],
        "etag": shown.get("etag"),
        "outcome": event.get("outcome"),
        "label": choice if event.get("outcome") in ("confirmed", "corrected") else None,
        "model_label": shown.get("model_label"),
        "model_version": shown.get("model_version"),
        "reviewed_by": event.get("reviewer"),
        "reviewed_at": event.get("at"),
        "uploaded_at": None,
        "skipped": "object_gone" if gone else "object_replaced",
        "from": "audit_trail",
    }


def decision_entry(
    item: CatalogueItem, first_opinion: dict[str, str] | None = None
) -> dict[str, Any]:
    outcome = item.review_outcome
    entry = {
        "key": item.key,
        "etag": item.etag,
        "outcome": None if outcome is None else outcome.value,
        # The label to learn: the person's category; None for the out-of-distribution set.
        "label": item.category if item.status is Status.CATALOGUED else None,
        "model_label": item.top3[0].label if item.top3 else None,
        "model_version": item.model_version,
        "reviewed_by": item.reviewed_by,
        "reviewed_at": item.reviewed_at,
        "uploaded_at": item.uploaded_at,
    }
    if first_opinion is not None:
        # A second opinion: the first reviewer's choice (the label is the second's).
        entry["first_opinion"] = first_opinion
    return entry


def _fetch(s3: Any, item: CatalogueItem, path: Path) -> tuple[str, int]:
    """Stream the object version the decision was made on (``IfMatch`` on its ETag) to ``path``;
    its sha256 and size."""
    request: dict[str, Any] = {"Bucket": item.bucket, "Key": item.key}
    if item.etag:
        request["IfMatch"] = item.etag
    try:
        body = s3.get_object(**request)["Body"]
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _REPLACED or status in _REPLACED:
            raise LookupError("object_replaced") from error
        if code in _GONE or status in _GONE:
            raise LookupError("object_gone") from error
        raise
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as file:
        while chunk := body.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            file.write(chunk)
    body.close()
    return digest.hexdigest(), size


def _extension(key: str) -> str:
    """The key's extension (lower-cased) when Pillow names a format the image contract accepts
    by it, so the exported file opens as what it is; anything else is written as ``.img``."""
    suffix = PurePosixPath(key).suffix.lower()
    return suffix if Image.registered_extensions().get(suffix) in SUPPORTED_FORMATS else ".img"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m review.reviewed_dataset",
        description="Export every photo a person decided as a training dataset folder.",
    )
    parser.add_argument(
        "--stack", help="deployed stack: --table and --bucket from its outputs (default: none)"
    )
    parser.add_argument("--table", help="catalogue table (default: the running local stack's)")
    parser.add_argument("--bucket", help="uploads bucket (default: the running local stack's)")
    parser.add_argument("--out", required=True, type=Path, help="new folder to write (required)")
    parser.add_argument(
        "--model", help="published model whose labels may be exported (default: ./artifacts)"
    )
    parser.add_argument("--region", help="AWS region (default: your AWS configuration's)")
    arguments = parser.parse_args(argv)

    model_uri = arguments.model
    if arguments.stack:
        arguments.table, arguments.bucket = stack_names(
            boto3.session.Session(region_name=arguments.region).client("cloudformation"),
            arguments.stack,
        )
    elif not (arguments.table and arguments.bucket):
        state = read_state()
        if arguments.table or arguments.bucket or state is None:
            parser.error("--table and --bucket (or a local stack from `local_stack --serve`)")
        point_boto3_at(state.endpoint_url)  # fake credentials: never real AWS
        arguments.table, arguments.bucket = state.table, state.bucket
        model_uri = model_uri or state.model_uri
    session = boto3.session.Session(region_name=arguments.region)
    s3 = session.client("s3")
    try:
        stats, _ = export_reviewed(
            dynamodb=session.client("dynamodb"),
            s3=s3,
            table=arguments.table,
            bucket=arguments.bucket,
            out=arguments.out,
            labels=model_labels(model_uri, s3_client=s3),
        )
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = stats.summary()
    print(
        f"{summary['labelled_total']} labelled photos in {len(summary['labelled'])} categories "
        f"-> {arguments.out / LABELLED_DIR}; {summary['out_of_distribution']} not a baby product "
        f"-> {arguments.out / OUT_OF_DISTRIBUTION_DIR}; left out: {summary['skipped'] or 'none'}; "
        f"manifest {arguments.out / MANIFEST_NAME}"
    )
    print(f"train with: --data <original dataset> --data {arguments.out / LABELLED_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
