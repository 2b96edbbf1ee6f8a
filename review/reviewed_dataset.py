"""Every photo a person decided in the review console, as a dataset folder for the next training.

    python -m review.reviewed_dataset --table T --bucket B --out DIR
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
the person saw; a photo replaced or deleted since is left out and listed as such. File names are
the content's sha256 (never the S3 key, which a seller chose), so identical bytes are one file; the
same bytes decided as two different categories are a conflict and left out of ``labelled/``.

With the manifest the dataset can be rebuilt: every entry names the object version (key + ETag)
and the hash its bytes must have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final

from botocore.exceptions import ClientError

from contracts.catalogue import CatalogueItem, CategorySource, ReviewOutcome, Status
from contracts.catalogue_table import deserialize

MANIFEST_NAME: Final[str] = "manifest.json"
LABELLED_DIR: Final[str] = "labelled"
OUT_OF_DISTRIBUTION_DIR: Final[str] = ReviewOutcome.NOT_A_PRODUCT.value
FORMAT_VERSION: Final[int] = 1
# Extensions kept on exported files (lower-cased); anything else is written as ".img".
_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".heic", ".heif", ".bmp", ".tif", ".tiff"}
)
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
    items: list[CatalogueItem] = []
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="#source = :human",
        ExpressionAttributeNames={"#source": "category_source"},
        ExpressionAttributeValues={":human": {"S": CategorySource.HUMAN.value}},
        ConsistentRead=True,
    ):
        items.extend(CatalogueItem.from_attributes(deserialize(raw)) for raw in page["Items"])
    items = [item for item in items if item.status is not Status.DELETED]
    if bucket is not None:
        items = [item for item in items if item.bucket == bucket]
    return sorted(items, key=lambda item: (item.bucket, item.key))


def export_reviewed(
    *, dynamodb: Any, s3: Any, table: str, bucket: str, out: Path
) -> tuple[ExportStats, dict[str, Any]]:
    """Write the reviewed dataset under ``out``; returns the counts and the manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    stats = ExportStats()
    entries: list[dict[str, Any]] = []
    fetched: list[tuple[dict[str, Any], bytes]] = []
    for item in reviewed_items(dynamodb, table, bucket):
        entry = decision_entry(item)
        entries.append(entry)
        if item.review_outcome is ReviewOutcome.UNUSABLE:
            entry["skipped"] = "unusable_photo"
            continue
        try:
            data = _fetch(s3, item)
        except LookupError as error:
            entry["skipped"] = str(error)
            continue
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["bytes"] = len(data)
        fetched.append((entry, data))

    # The same bytes decided as two different categories: neither is a label to learn from.
    labels_by_hash: dict[str, set[str]] = defaultdict(set)
    for entry, _ in fetched:
        if entry["label"] is not None:
            labels_by_hash[entry["sha256"]].add(entry["label"])
    for entry, data in fetched:
        if entry["label"] is None:
            folder = out / OUT_OF_DISTRIBUTION_DIR
        elif len(labels_by_hash[entry["sha256"]]) > 1:
            entry["skipped"] = "conflicting_labels"
            continue
        else:
            folder = out / LABELLED_DIR / entry["label"]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (entry["sha256"] + _extension(entry["key"]))
        if not target.exists():
            target.write_bytes(data)
        entry["path"] = target.relative_to(out).as_posix()
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
        "layout": {
            "labelled": f"{LABELLED_DIR}/<label>/<sha256><ext>",
            "out_of_distribution": f"{OUT_OF_DISTRIBUTION_DIR}/<sha256><ext>",
        },
        "counts": stats.summary(),
        "items": entries,
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return stats, manifest


def decision_entry(item: CatalogueItem) -> dict[str, Any]:
    outcome = item.review_outcome
    return {
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


def _fetch(s3: Any, item: CatalogueItem) -> bytes:
    """The bytes of the object version the decision was made on (``IfMatch`` on its ETag)."""
    request: dict[str, Any] = {"Bucket": item.bucket, "Key": item.key}
    if item.etag:
        request["IfMatch"] = item.etag
    try:
        return s3.get_object(**request)["Body"].read()
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _REPLACED or status in _REPLACED:
            raise LookupError("object_replaced") from error
        if code in _GONE or status in _GONE:
            raise LookupError("object_gone") from error
        raise


def _extension(key: str) -> str:
    suffix = PurePosixPath(key).suffix.lower()
    return suffix if suffix in _EXTENSIONS else ".img"


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
    parser.add_argument("--region", help="AWS region (default: your AWS configuration's)")
    arguments = parser.parse_args(argv)

    import boto3

    if arguments.stack:
        from review.stack_outputs import stack_names

        arguments.table, arguments.bucket = stack_names(
            boto3.session.Session(region_name=arguments.region).client("cloudformation"),
            arguments.stack,
        )
    elif not (arguments.table and arguments.bucket):
        from local_stack.stack import point_boto3_at
        from local_stack.state import read_state

        state = read_state()
        if arguments.table or arguments.bucket or state is None:
            parser.error("--table and --bucket (or a local stack from `local_stack --serve`)")
        point_boto3_at(state.endpoint_url)  # fake credentials: never real AWS
        arguments.table, arguments.bucket = state.table, state.bucket
    session = boto3.session.Session(region_name=arguments.region)
    try:
        stats, _ = export_reviewed(
            dynamodb=session.client("dynamodb"),
            s3=session.client("s3"),
            table=arguments.table,
            bucket=arguments.bucket,
            out=arguments.out,
        )
    except FileExistsError as error:
        print(error, file=sys.stderr)
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
