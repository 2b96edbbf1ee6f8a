"""Model vs reviewer agreement, read live from the catalogue: ``python -m review.agreement``.

The numbers are computed by :mod:`model_build.evaluation.review_agreement` (the same function the
evaluation report uses on reviewed exports); this module only reads the decisions from the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import boto3

from model_build.evaluation.review_agreement import (
    AGREEMENT_JSON,
    agreement,
    entries_from_manifests,
    format_agreement,
)
from review.reviewed_dataset import decisions_with_trail


def entries_from_catalogue(dynamodb: Any, table: str, bucket: str | None = None) -> list[dict]:
    return decisions_with_trail(dynamodb, table, bucket).entries()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m review.agreement",
        description="Model vs reviewer agreement per category, from the catalogue.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--table", help="catalogue table, CatalogueTableName (this or --manifest is required)"
    )
    source.add_argument(
        "--manifest",
        type=Path,
        action="append",
        help="a reviewed export's manifest.json, may be given again (this or --table is required)",
    )
    parser.add_argument("--bucket", help="only this uploads bucket (default: every bucket)")
    parser.add_argument("--region", help="AWS region (default: your AWS configuration's)")
    parser.add_argument(
        "--json",
        type=Path,
        help=f"also write the table here, e.g. {AGREEMENT_JSON} (default: none)",
    )
    arguments = parser.parse_args(argv)
    if arguments.table:
        client = boto3.session.Session(region_name=arguments.region).client("dynamodb")
        entries = entries_from_catalogue(client, arguments.table, arguments.bucket)
    else:
        entries = entries_from_manifests(arguments.manifest)
    table = agreement(entries)
    print(format_agreement(table), end="")
    if arguments.json:
        arguments.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
