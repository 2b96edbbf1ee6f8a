"""Export a trained Keras model to TFLite: float32 and full-integer int8 (contract 4).

The command line only; the work is done in :mod:`model_build.release.export`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_build.release.export import (
    ExportError,
    export_run,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_build.export",
        description="Export RUN_DIR/model.keras to model.tflite and model_int8.tflite.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: the run's)"
    )
    args = parser.parse_args(argv)
    try:
        export_run(args.run_dir, data_dir=args.data)
    except (ExportError, FileNotFoundError, ValueError) as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
