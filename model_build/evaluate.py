"""Evaluate a trained model: numbers, report, calibration and review threshold.

The command line only; the work is done in :mod:`model_build.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_build.evaluation.calibration import DEFAULT_CONFIDENCE, DEFAULT_TARGET_PRECISION
from model_build.evaluation.evaluate import evaluate_run
from model_build.quiet import tensorflow_quietly


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_build.evaluate",
        description="Evaluate a training run: calibration on the calibration split, every number "
        "on the held-out split. Removes an earlier export (int8's calibration would be stale).",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: the run's)"
    )
    parser.add_argument(
        "--target-precision",
        type=float,
        default=DEFAULT_TARGET_PRECISION,
        help="precision the auto-catalogued photos must reach (default: %(default)s)",
    )
    parser.add_argument(
        "--threshold-confidence",
        type=float,
        default=DEFAULT_CONFIDENCE,
        help="confidence that the target precision holds, Clopper-Pearson bound "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--unfamiliar",
        type=Path,
        default=None,
        help="folder of photos unlike every label, for the unfamiliarity report "
        "(default: generated drawings)",
    )
    args = parser.parse_args(argv)

    tensorflow_quietly()
    try:
        evaluate_run(
            args.run_dir,
            data_dir=args.data,
            target_precision=args.target_precision,
            threshold_confidence=args.threshold_confidence,
            unfamiliar_dir=args.unfamiliar,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"evaluate failed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
