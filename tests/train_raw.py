"""Train from a test's raw config dict, the way `pdistill train` does after parsing.

The dict is deep-copied first: tests reuse and edit one dict across runs.
"""

from __future__ import annotations

import copy


def train_raw(raw: dict, *callbacks):
    from trainer.config import config_from_dict
    from trainer.train import train

    return train(config_from_dict(copy.deepcopy(raw)), extra_callbacks=list(callbacks))
