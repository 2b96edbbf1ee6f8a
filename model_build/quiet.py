"""TensorFlow's start-up noise out of the user's output.

Importing TensorFlow 2.21 and touching the devices for the first time writes lines such as
``oneDNN custom operations are on …``, ``Could not find cuda drivers on your machine …`` and
``failed call to cuInit …`` straight to file descriptor 2 from C++ (absl logging, before
``TF_CPP_MIN_LOG_LEVEL`` applies). :func:`tensorflow_quietly` imports TensorFlow and initialises
its devices with descriptor 2 pointed at a temporary file; should that fail, the captured text is
written out so nothing is hidden from a real error. Set ``MODEL_BUILD_TF_NOISE=1`` to see it all.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stderr_captured(descriptor: int = 2) -> Iterator[None]:
    """Point a file descriptor (2: stderr) at a temporary file; replay it if the block raises."""
    if os.environ.get("MODEL_BUILD_TF_NOISE"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(descriptor)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), descriptor)
        try:
            yield
        except BaseException:
            os.dup2(saved, descriptor)
            capture.seek(0)
            os.write(descriptor, capture.read())
            raise
        finally:
            os.dup2(saved, descriptor)
            os.close(saved)


@contextlib.contextmanager
def converter_quietly() -> Iterator[None]:
    """The TFLite converter's C++ lines (``fully_quantize: 0, inference_type: 6 …``, MLIR
    warnings) on stdout and stderr, kept out; replayed if the conversion fails."""
    with stderr_captured(1), stderr_captured(2):
        yield


def tensorflow_quietly() -> Any:
    """``import tensorflow`` and list its devices without the start-up lines; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with stderr_captured():
        import tensorflow as tf  # noqa: PLC0415 — loaded here, inside the capture, to hide its start-up noise

        tf.config.list_physical_devices()
        tf.constant(0)  # the first op initialises the platforms (cuInit on a GPU-less machine)
    return tf
