"""What a run was trained with, stored in every checkpoint and compared on autoresume.

Composer's autoresume restores weights, optimizer state (including its learning rates) and the
data position from the latest checkpoint in run.save_folder, whatever the config says now. A
resume with another dataset, loss, batch or learning rate would silently continue a different
run (or, for the LR, silently keep the old one). So the run's fingerprint, a flat mapping of
dotted keys, is saved with each checkpoint (a Composer callback's state) and compared on load:

  data.streams[i].dataset   content identity of each dataset (`schemas.identity.dataset_identity`)
  data.streams[i].{proportion,repeat,choose}, data.{batch_size (GLOBAL), shuffle, shuffle_seed,
    shuffle_algo, num_canonical_nodes, partition_algo, num_workers}   the sample order
  model.shape, model.hf_config, model.checkpoint, model.tokenizer     the student
  distill.* (but chunk_size, fused_head), optim.*, scheduler.*, run.seed           the loss and the optimisation

A difference is refused (`ResumeMismatch`, listing each key old -> new) unless the key is named in
run.allow_changed (a key, or a prefix such as `optim`). An allowed change of optim.* takes effect:
the restored optimizer's lr (scaled by new/old, so the schedule's position is kept), betas, eps and
weight decay are replaced at fit start. Keys not listed above (max_duration, intervals, loggers,
device, microbatch size, caches) may change freely. Model shapes that differ fail inside
Composer's weight loading, before this check; `build_trainer` reports that as model.shape.
"""

from __future__ import annotations

import logging
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger

from schemas.identity import fingerprint_json
from trainer.config import ConfigError
from trainer.errors import ResumeMismatch

log = logging.getLogger(__name__)

DATA_ORDER_KEYS = (
    "batch_size",
    "shuffle",
    "shuffle_seed",
    "shuffle_algo",
    "num_canonical_nodes",
    "partition_algo",
    "num_workers",
)
FREE_DISTILL_KEYS = ("chunk_size", "fused_head")  # numerics only: how the loss is computed, not what it is
FINGERPRINT_SECTIONS = ("data.streams", "data", "model", "distill", "optim", "scheduler", "run.seed")


def _sha(obj: Any) -> str:
    return fingerprint_json(obj, default=str, digits=16)


def model_shape(student) -> str:
    shapes = {k: list(v.shape) for k, v in student.state_dict().items()}
    n = sum(int(v.numel()) for v in student.parameters())
    return f"{n:,} params {_sha(shapes)}"


def run_fingerprint(cfg, *, dataset_ids: list[str], student, tokenizer_fp: str) -> dict[str, Any]:
    d, m = cfg.data, cfg.model
    fp: dict[str, Any] = {}
    for i, (st, ident) in enumerate(zip(d.streams, dataset_ids)):
        fp[f"data.streams[{i}].dataset"] = ident
        for k in ("proportion", "repeat", "choose"):
            fp[f"data.streams[{i}].{k}"] = getattr(st, k)
    for k in DATA_ORDER_KEYS:
        fp[f"data.{k}"] = getattr(d, k)
    fp["model.shape"] = model_shape(student)
    fp["model.hf_config"] = _sha(m.hf_config) if m.hf_config is not None else None
    fp["model.checkpoint"] = m.checkpoint
    fp["model.tokenizer"] = tokenizer_fp
    for section in ("distill", "optim", "scheduler"):
        for k, v in getattr(cfg, section).model_dump().items():
            if section == "distill" and k in FREE_DISTILL_KEYS:
                continue
            fp[f"{section}.{k}"] = _sha(v) if isinstance(v, dict) else v
    fp["run.seed"] = cfg.run.seed
    return fp


def allowed(key: str, allow: list[str]) -> bool:
    return any(key == a or key.startswith(a + ".") or key.startswith(a + "[") for a in allow)


def fingerprint_diff(old: dict, new: dict) -> list[str]:
    """Keys present in both with different values (a key one side lacks is not a difference:
    checkpoints from an older pdistill lack newer keys)."""
    return [k for k in new if k in old and _norm(old[k]) != _norm(new[k])]


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def check_allow_list(allow: list[str]) -> None:
    """run.allow_changed entries must name fingerprint keys or their prefixes."""
    for i, a in enumerate(allow):
        if not any(
            a == s or a.startswith(s + ".") or a.startswith(s + "[") or s.startswith(a + ".")
            for s in FINGERPRINT_SECTIONS
        ):
            raise ConfigError(
                f"run.allow_changed[{i}]: {a!r} is not a key that autoresume compares "
                f"(keys under: {', '.join(FINGERPRINT_SECTIONS)})"
            )


class RunFingerprint(Callback):
    """Saves the run's fingerprint with each checkpoint; on autoresume refuses a changed one."""

    def __init__(self, fingerprint: dict[str, Any], allow_changed: list[str], optim_cfg=None):
        self.fingerprint = fingerprint
        self.allow_changed = list(allow_changed)
        self.optim_cfg = optim_cfg
        self.resumed_from: dict | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        old = state.get("fingerprint")
        if not old:
            log.warning(
                "run.autoresume: the checkpoint holds no run fingerprint (made before pdistill stored "
                "one); its settings cannot be compared with this config"
            )
            return
        changed = fingerprint_diff(old, self.fingerprint)
        refused = [k for k in changed if not allowed(k, self.allow_changed)]
        if refused:
            lines = "\n".join(f"  {k}: {old[k]!r} -> {self.fingerprint[k]!r}" for k in refused)
            raise ResumeMismatch(
                f"run.autoresume: the checkpoint in run.save_folder was made with other settings:\n{lines}\n"
                "Resume with the checkpoint's settings, start a new run (another run.run_name or save_folder), "
                f"or allow the change on purpose: run.allow_changed=[{', '.join(refused)}]"
            )
        for k in changed:
            log.warning(
                "run.autoresume: %s changed %r -> %r (allowed by run.allow_changed)", k, old[k], self.fingerprint[k]
            )
        self.resumed_from = old

    def fit_start(self, state: State, logger: Logger) -> None:
        """Make allowed optimizer changes take effect (the checkpoint restored the old values)."""
        old, o = self.resumed_from, self.optim_cfg
        if old is None or o is None:
            return
        old_lr = old.get("optim.lr")
        lr_changed = old_lr is not None and float(old_lr) != o.lr
        for opt in state.optimizers:
            for g in opt.param_groups:
                if lr_changed:
                    g["lr"] = g["lr"] / float(old_lr) * o.lr  # keep the schedule's position, new base
                    if "initial_lr" in g:
                        g["initial_lr"] = o.lr
                for key, value in (("betas", tuple(o.betas)), ("eps", o.eps), ("weight_decay", o.weight_decay)):
                    if key in g and _norm(old.get(f"optim.{key}")) != _norm(value):
                        g[key] = value
        if lr_changed:
            for sched in state.schedulers:
                if hasattr(sched, "base_lrs"):
                    sched.base_lrs = [o.lr for _ in sched.base_lrs]
