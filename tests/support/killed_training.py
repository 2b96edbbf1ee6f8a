"""``python -m tests.support.killed_training EPOCH:BATCH <model_build.train arguments>``.

Runs ``model_build.train`` and SIGKILLs the process after batch ``BATCH`` of epoch ``EPOCH`` (both
counted from 0), as a power cut mid-epoch would, for the resume tests. The kill is one more Keras
callback added to each training phase's own callbacks from outside, so the production modules
carry no test hook.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import keras

from model_build import train
from model_build.training import fit


class KillAt(keras.callbacks.Callback):
    """SIGKILL this process after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.epoch, self.batch = epoch, batch
        self.current = -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.current = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.current == self.epoch and batch == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    spec, *arguments = argv
    epoch, batch = (int(part) for part in spec.split(":"))
    phase_callbacks = fit._callbacks

    def with_kill(*args: Any, **kwargs: Any) -> list[keras.callbacks.Callback]:
        return [*phase_callbacks(*args, **kwargs), KillAt(epoch, batch)]

    fit._callbacks = with_kill
    return train.main(arguments)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
