"""The published model's label set: the only categories a reviewer may choose or an export write.

Contract 3 (labels travel with the model): the set is read from the artifact's ``labels.json``,
never from the table or a top 3, which can name a label of another model version.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Final

from contracts.artifact import ArtifactError, load_artifact

DEFAULT_ARTIFACTS: Final[Path] = Path("artifacts")
# What a label folder name may look like: one path segment, no dots at its start (no "..").
_SAFE: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


def model_labels(uri: str | None, s3_client: Any = None) -> list[str]:
    """The published model's labels, or an empty list when there is no model to read."""
    if uri is None:
        if not (DEFAULT_ARTIFACTS / "latest.json").is_file():
            return []
        uri = str(DEFAULT_ARTIFACTS)
    try:
        return load_artifact(uri, only=("labels.json",), s3_client=s3_client).labels
    except (ArtifactError, OSError) as error:
        print(f"warning: no labels from {uri}: {error}", file=sys.stderr)
        return []


def is_safe_label(label: str) -> bool:
    """Whether ``label`` can be a folder name under ``labelled/`` (one plain path segment)."""
    return bool(_SAFE.fullmatch(label))
