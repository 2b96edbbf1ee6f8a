"""Evaluation: metrics, calibration and the review threshold, unfamiliarity, the report."""
