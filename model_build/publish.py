"""Publish a run folder as a versioned model artifact (contract 4) to a folder or ``s3://``.

The command line only; the work is done in :mod:`model_build.release.publish`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contracts.artifact import (
    ArtifactError,
)
from model_build.release.publish import (
    PublishError,
    publish_run,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_build.publish",
        description="Publish a training run as a versioned model artifact.",
    )
    parser.add_argument("run_dir", type=Path, help="the training run folder")
    parser.add_argument(
        "--to", dest="dest", required=True, help="folder or s3://bucket/prefix (required)"
    )
    parser.add_argument(
        "--version", default=None, help="explicit version name (default: UTC time + content hash)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="publish even if the quality gate refuses: near chance, or worse than latest "
        "(default: off)",
    )
    args = parser.parse_args(argv)
    try:
        version = publish_run(args.run_dir, args.dest, version=args.version, force=args.force)
    except (PublishError, ArtifactError) as error:
        print(f"publish refused: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:  # evaluation or export of the run failed
        print(f"publish failed: {error}", file=sys.stderr)
        return 2
    print(version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
