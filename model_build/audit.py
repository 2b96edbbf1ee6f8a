"""Audit a dataset before training on it: ``python -m model_build.audit DIR [--out FOLDER]``.

The command line only; the work is done in :mod:`model_build.data.audit`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_build.data.audit import (
    AUDIT_JSON,
    audit_dataset,
    print_report,
)
from model_build.data.dataset import DatasetError, discover
from model_build.run_folder import AUDIT_FIGURE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_build.audit",
        description="Audit an image dataset folder (Kaggle layout or label folders).",
    )
    parser.add_argument("data", type=Path, help="the dataset folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write audit.json and the chart (default: audit/<DIR name>; never DIR)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of each label split off as val when the folder has no val/ "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the val split (default: %(default)s)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="decoded-pixel cache folder (default: .cache/prepared)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="decode processes (default: one per CPU)"
    )
    arguments = parser.parse_args(argv)
    try:
        dataset = discover(arguments.data, val_fraction=arguments.val_fraction, seed=arguments.seed)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out_dir = arguments.out or Path("audit") / Path(arguments.data).resolve().name
    result = audit_dataset(
        dataset, out_dir, cache_dir=arguments.cache_dir, workers=arguments.workers
    )
    print_report(result.report)
    print(f"wrote {Path(out_dir) / AUDIT_JSON} and {Path(out_dir) / AUDIT_FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
