"""Operator tools run with an operator's credentials against the deployed stack (backfill); they
never ship in the Lambda image."""
