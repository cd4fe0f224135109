"""Training configuration: dataclasses, YAML loading, dotted overrides, recursive validation.

`load_config(path, overrides)` reads a YAML file (or a shipped config name such as "pd_best"),
applies overrides like ``"distill.tau=1.0"`` (the value parsed with ``yaml.safe_load``; list items
by index, ``data.streams.0.uri=...``) and validates: unknown keys, wrong types and out-of-range
values raise `ConfigError` naming the full dotted key (``distill.alpha.peak``, ``data.streams[0].uri``).
Keys left out take the dataclass defaults below. The shipped configs live in ``trainer/configs/``.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import yaml

from trainer.schedules import make_alpha_schedule

__all__ = [
    "ConfigError", "StreamConfig", "DataConfig", "ModelConfig", "DistillConfig", "OptimConfig",
    "SchedulerConfig", "RunConfig", "TrainConfig", "load_config", "config_from_dict", "apply_overrides",
    "shipped_config_path", "CONFIG_DIR", "check_distill_for_datasets",
]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
LOGGERS = ("console", "file", "tensorboard", "mlflow", "wandb")
_TIME_RE = re.compile(r"^\d+(\.\d+)?(ep|ba|sp|tok|dur)$")


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted key."""


# ----------------------------------------------------------------------------------------------
# sections


@dataclass
class StreamConfig:
    uri: str  # dataset root written by the pipeline (local path, file://, s3://, gs://)
    local: Optional[str] = None  # local cache dir for this stream (default: <data.local_cache>/<n>)
    proportion: Optional[float] = None  # share of each epoch (all streams or none)
    repeat: Optional[float] = None  # or: up/down-sampling factor
    choose: Optional[int] = None  # or: exact number of samples per epoch


@dataclass
class DataConfig:
    streams: list[StreamConfig] = field(default_factory=list)
    local_cache: Optional[str] = None  # root for local shard caches (None: a temp dir per run)
    batch_size: int = 8  # GLOBAL batch (sequences per optimizer step), divided by world size
    microbatch_size: Optional[int] = None  # per-device microbatch (None: whole device batch)
    shuffle: bool = True
    shuffle_seed: int = 9176
    shuffle_algo: str = "py1e"
    num_canonical_nodes: Optional[int] = None  # fix it (e.g. 1) for elastic resume across world sizes
    partition_algo: str = "relaxed"
    predownload: Optional[int] = None  # samples to prefetch per worker (None: streaming default)
    num_workers: int = 0  # dataloader workers per rank (must stay constant across resumes)
    validate_hash: Optional[str] = "xxh3_64"  # shard hash checked on download (None: off)
    eval_uri: Optional[str] = None  # held-out dataset for student perplexity (None: no eval)
    eval_batch_size: Optional[int] = None  # default: batch_size


@dataclass
class ModelConfig:
    # Exactly one of hf_config (a transformers config dict with "model_type", trained from
    # scratch) or checkpoint (an HF checkpoint dir/URI).
    hf_config: Optional[dict] = None
    checkpoint: Optional[str] = None
    tokenizer: Optional[str] = None  # tokenizer dir/URI (fingerprint checked against the dataset)


@dataclass
class DistillConfig:
    mode: Literal["offline", "live", "none"] = "offline"  # none = LM only, no teacher read
    kind: Literal["forward_kl", "reverse_kl", "soft_ce", "mse"] = "forward_kl"
    # the student side of the KD term against the truncated teacher (trainer.losses.kd_loss):
    # full = full-vocabulary student; kept = renormalised over the kept set; split = chain-rule
    # split (in/out masses at tau = 1 + tempered within-set term; the measured winner at tau = 2)
    support: Literal["full", "kept", "split"] = "split"
    tau: float = 2.0
    tail: bool = False  # support full only: dropped teacher mass as one extra bucket
    tau_squared: bool = False  # multiply the KD loss by tau^2
    chunk_size: Optional[int] = 1024  # positions per chunk in the loss (None: all at once)
    alpha: Optional[dict] = None  # alpha schedule dict (trainer.schedules); None: mode default
    teacher: Optional[str] = None  # live mode: teacher checkpoint dir/URI
    top_p: float = 0.95  # live mode truncation (offline: fixed by the dataset)
    top_k: int = 50

    def alpha_schedule(self):
        """The alpha schedule object (default: PD* WSD for offline/live, constant 0 for none)."""
        if self.alpha is not None:
            return make_alpha_schedule(self.alpha, prefix="distill.alpha")
        if self.mode == "none":
            return make_alpha_schedule({"name": "constant", "value": 0.0})
        return make_alpha_schedule({"name": "wsd", "peak": 0.9, "floor": 0.0, "warmup": 0.1, "decay": 0.1})


@dataclass
class OptimConfig:
    name: Literal["adamw", "decoupled_adamw"] = "adamw"
    lr: float = 6e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: Optional[float] = 1.0  # max grad norm (None: off)


@dataclass
class SchedulerConfig:
    name: Literal["cosine", "wsd", "constant"] = "wsd"
    t_warmup: str = "0.1dur"  # Composer time string
    t_decay: str = "0.1dur"  # wsd only: length of the final decay
    alpha_f: float = 0.0  # final LR multiplier
    decay_shape: Literal["cosine", "linear"] = "cosine"  # wsd only


@dataclass
class RunConfig:
    max_duration: str = "100ba"
    eval_interval: str = "50ba"
    save_folder: Optional[str] = None  # local path or s3:// / gs:// URI; None: no checkpoints
    save_interval: str = "50ba"
    save_num_checkpoints_to_keep: int = -1
    run_name: Optional[str] = None  # required with autoresume
    autoresume: bool = False
    seed: int = 17
    deterministic: bool = False
    device: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = "fp32"
    loggers: list[str] = field(default_factory=lambda: ["console"])
    log_interval: str = "1ba"
    log_dir: Optional[str] = None  # file/tensorboard output (None: <save_folder or cwd>/logs)
    stop_after: Optional[str] = None  # stop (with a checkpoint) at this time, e.g. "50ba"; schedules still follow max_duration
    sample_log_dir: Optional[str] = None  # record {step, rank, sample_ids} per step as jsonl here (tests; off by default)
    allow_changed: list[str] = field(default_factory=list)  # autoresume: fingerprint keys that may differ from the checkpoint's (e.g. [optim.lr])


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# generic validation


def _type_name(tp) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", type(None): "null"}.get(tp, str(tp))


def _convert(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return copy.deepcopy(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a boolean, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "2e-3" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # programming error


def _build(cls, raw: Any, prefix: str):
    where = prefix or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in names:
            full = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{full}: unknown key (known under {where}: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in raw:
            kwargs[f.name] = _convert(raw[f.name], hints[f.name], full)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{full}: required key is missing")
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------
# semantic checks


def _time(key: str, value: str, units: tuple[str, ...] = ("ep", "ba", "sp", "tok", "dur")) -> None:
    m = _TIME_RE.match(value)
    if not m or m.group(2) not in units:
        raise ConfigError(f"{key}: expected a Composer time string like '100ba' or '0.1dur' "
                          f"(units {', '.join(units)}), got {value!r}")
    if m.group(2) == "dur" and float(value[:-3]) > 1.0:
        raise ConfigError(f"{key}: a 'dur' fraction must be <= 1, got {value!r}")


def _positive(key: str, value, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _validate(cfg: TrainConfig) -> None:
    d, m, k, o, s, r = cfg.data, cfg.model, cfg.distill, cfg.optim, cfg.scheduler, cfg.run
    # data
    if not d.streams:
        raise ConfigError("data.streams: at least one stream is required")
    for i, st in enumerate(d.streams):
        key = f"data.streams[{i}]"
        if not st.uri:
            raise ConfigError(f"{key}.uri: must not be empty")
        given = [n for n in ("proportion", "repeat", "choose") if getattr(st, n) is not None]
        if len(given) > 1:
            raise ConfigError(f"{key}.{given[1]}: at most one of proportion, repeat, choose per stream")
        for n in given:
            _positive(f"{key}.{n}", getattr(st, n), allow_zero=True)
    with_prop = [st.proportion is not None for st in d.streams]
    if any(with_prop) and not all(with_prop):
        i = with_prop.index(False)
        raise ConfigError(f"data.streams[{i}].proportion: when one stream sets a proportion, all must")
    _positive("data.batch_size", d.batch_size)
    _positive("data.microbatch_size", d.microbatch_size)
    _positive("data.eval_batch_size", d.eval_batch_size)
    _positive("data.num_canonical_nodes", d.num_canonical_nodes)
    _positive("data.predownload", d.predownload, allow_zero=True)
    _positive("data.num_workers", d.num_workers, allow_zero=True)
    _positive("data.shuffle_seed", d.shuffle_seed, allow_zero=True)
    # model
    if (m.hf_config is None) == (m.checkpoint is None):
        raise ConfigError("model.hf_config: set exactly one of model.hf_config or model.checkpoint")
    if m.hf_config is not None and "model_type" not in m.hf_config:
        raise ConfigError("model.hf_config.model_type: required (e.g. 'llama')")
    # distill
    if not (0.0 < k.tau < float("inf")):
        raise ConfigError(f"distill.tau: must be > 0, got {k.tau!r}")
    if k.tail and k.support != "full":
        raise ConfigError(f"distill.tail: the tail bucket only applies with distill.support: full "
                          f"(support {k.support!r} {'already uses the tail mass' if k.support == 'split' else 'ignores it'})")
    _positive("distill.chunk_size", k.chunk_size)
    if not (0.0 < k.top_p <= 1.0):
        raise ConfigError(f"distill.top_p: must be in (0, 1], got {k.top_p!r}")
    _positive("distill.top_k", k.top_k)
    try:
        sched = k.alpha_schedule()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if k.mode == "none":
        if not (getattr(sched, "value", None) == 0.0 and type(sched).__name__ == "ConstantAlpha"):
            raise ConfigError("distill.alpha: must be {name: constant, value: 0.0} (or unset) when distill.mode is none")
    if k.mode == "live" and not k.teacher:
        raise ConfigError("distill.teacher: required when distill.mode is live")
    if k.mode != "live" and k.teacher is not None:
        raise ConfigError(f"distill.teacher: only used when distill.mode is live (mode is {k.mode!r})")
    # optim
    _positive("optim.lr", o.lr)
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        raise ConfigError(f"optim.betas: expected two numbers in [0, 1), got {o.betas!r}")
    _positive("optim.eps", o.eps)
    _positive("optim.weight_decay", o.weight_decay, allow_zero=True)
    _positive("optim.grad_clip", o.grad_clip)
    # scheduler
    _time("scheduler.t_warmup", s.t_warmup, ("ba", "sp", "tok", "dur"))
    _time("scheduler.t_decay", s.t_decay, ("ba", "sp", "tok", "dur"))
    if not (0.0 <= s.alpha_f <= 1.0):
        raise ConfigError(f"scheduler.alpha_f: must be in [0, 1], got {s.alpha_f!r}")
    # run
    _time("run.max_duration", r.max_duration, ("ep", "ba", "sp", "tok"))
    for n in ("eval_interval", "save_interval", "log_interval"):
        _time(f"run.{n}", getattr(r, n))
    if r.stop_after is not None:
        _time("run.stop_after", r.stop_after, ("ba", "sp", "tok", "ep"))
    for i, lg in enumerate(r.loggers):
        if lg not in LOGGERS:
            raise ConfigError(f"run.loggers[{i}]: expected one of {', '.join(LOGGERS)}, got {lg!r}")
    if len(set(r.loggers)) != len(r.loggers):
        raise ConfigError(f"run.loggers: duplicate entries in {r.loggers!r}")
    if r.autoresume and not (r.save_folder and r.run_name):
        missing = "run.save_folder" if not r.save_folder else "run.run_name"
        raise ConfigError(f"{missing}: required when run.autoresume is true")
    _positive("run.seed", r.seed, allow_zero=True)


def check_distill_for_datasets(k: DistillConfig, manifests) -> None:
    """Refuse KD settings a dataset cannot support; ``manifests``: (uri, Manifest or None) pairs.

    Sampled selection (truncation.method "sample") stores log(count / n) of n teacher draws:
    softmax(log(count / n) / tau) at tau != 1 is not an estimate of softmax(z / tau) over the
    drawn ids (it tempers the empirical frequencies, not the teacher), so tau must be 1 there."""
    if k.mode != "offline" or k.tau == 1.0:
        return
    for uri, m in manifests:
        if m is not None and m.truncation.method == "sample":
            raise ConfigError(
                f"distill.tau: {k.tau!r} cannot be used with dataset {uri}: its teacher signal is sampled "
                f"(truncation.method 'sample', {m.truncation.top_k} draws, stored as log(count/n)), and tempering "
                "sampled frequencies does not estimate softmax(z / tau); set distill.tau=1.0 or use a top_p_k dataset")


# ----------------------------------------------------------------------------------------------
# loading


def shipped_config_path(name: str) -> str:
    """Path of a config shipped in trainer/configs ("pd_best" or "pd_best.yaml")."""
    base = name if name.endswith((".yaml", ".yml")) else name + ".yaml"
    return os.path.join(CONFIG_DIR, base)


def _parse_key(path: str) -> list:
    parts = []
    for p in path.split("."):
        # "streams[0]" and "streams.0" both address list items
        m = re.fullmatch(r"([^\[\]]+)((\[\d+\])*)", p)
        if not m or not p:
            raise ConfigError(f"{path}: malformed override key")
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return [int(p) if isinstance(p, str) and p.isdigit() else p for p in parts]


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Return a copy of ``raw`` with ``"a.b=value"`` overrides applied (value: yaml.safe_load)."""
    out = copy.deepcopy(raw) if raw else {}
    for ov in overrides or []:
        if not isinstance(ov, str) or "=" not in ov:
            raise ConfigError(f"{ov}: an override must look like key.path=value")
        key, text = ov.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse override value {text!r} ({e})") from None
        path = _parse_key(key)
        node: Any = out
        for i, part in enumerate(path[:-1]):
            where = ".".join(str(p) for p in path[: i + 1])
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise ConfigError(f"{where}: no such list item to override")
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"{where}: cannot override inside a non-mapping")
                if node.get(part) is None:
                    node[part] = [] if isinstance(path[i + 1], int) else {}
                node = node[part]
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last > len(node):
                raise ConfigError(f"{key}: no such list item to override")
            if last == len(node):
                node.append(value)
            else:
                node[last] = value
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: cannot override inside a non-mapping")
            node[last] = value
    return out


def config_from_dict(raw: dict | None) -> TrainConfig:
    """Validate a plain dict (as from YAML) into a TrainConfig."""
    cfg = _build(TrainConfig, raw, "")
    _validate(cfg)
    return cfg


def load_config(path: str, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (a path, or the name of a shipped config), apply overrides, validate."""
    if not os.path.exists(path) and os.path.exists(shipped_config_path(path)):
        path = shipped_config_path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(apply_overrides(raw or {}, overrides))
