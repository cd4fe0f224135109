"""Test-only: kill this training process at a chosen point (the fault matrix), via the environment.

PDISTILL_TEST_KILL = JSON {"point": "mid-step" | "checkpoint-write", "batch": N}
  mid-step          SIGKILL after the backward pass of the step that ends at batch N, before the
                    optimizer step (gradients computed, weights not yet updated, nothing saved);
  checkpoint-write  at batch N's checkpoint: leave the torn file a kill inside torch.save leaves
                    (Composer writes straight to the final name), then SIGKILL before `latest` moves.
Unset (production), `kill_callbacks()` returns nothing.
"""

from __future__ import annotations

import json
import os
import signal

from composer.core import Callback, State
from composer.loggers import Logger

ENV = "PDISTILL_TEST_KILL"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(Callback):
    def __init__(self, point: str, batch: int, save_folder: str | None):
        if point not in ("mid-step", "checkpoint-write"):
            raise ValueError(f"{ENV}: unknown point {point!r}")
        self.point, self.batch, self.save_folder = point, batch, save_folder

    def after_backward(self, state: State, logger: Logger) -> None:
        if self.point == "mid-step" and int(state.timestamp.batch) + 1 == self.batch:
            _die()

    def batch_checkpoint(self, state: State, logger: Logger) -> None:  # runs before Composer's saver
        if self.point == "checkpoint-write" and int(state.timestamp.batch) == self.batch:
            name = f"ep{int(state.timestamp.epoch)}-ba{int(state.timestamp.batch)}-rank0.pt"
            with open(os.path.join(self.save_folder, name), "wb") as f:
                f.write(b"PK\x03\x04" + os.urandom(4096))  # the head of a zip archive, no central directory
            _die()


def kill_callbacks(save_folder: str | None) -> list[Callback]:
    spec = os.environ.get(ENV)
    if not spec:
        return []
    s = json.loads(spec)
    return [KillAt(s["point"], int(s["batch"]), save_folder)]
