"""The deployed stack's table and bucket names, from its CloudFormation outputs.

``python -m review --stack momee-cataloguer`` (and ``review.reviewed_dataset --stack``) read
``CatalogueTableName`` and ``UploadsBucketName`` instead of asking for ``--table``/``--bucket``.
"""

from __future__ import annotations

from typing import Any, Final

TABLE_OUTPUT: Final[str] = "CatalogueTableName"
BUCKET_OUTPUT: Final[str] = "UploadsBucketName"


def stack_names(cloudformation: Any, stack: str) -> tuple[str, str]:
    """``(table, bucket)`` from the outputs of ``stack``; ``ValueError`` when either is missing."""
    stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [name for name in (TABLE_OUTPUT, BUCKET_OUTPUT) if name not in outputs]
    if missing:
        raise ValueError(f"stack {stack} has no output(s) {missing}: is it the cataloguer's?")
    return outputs[TABLE_OUTPUT], outputs[BUCKET_OUTPUT]
