"""Training configuration: typed sections (pydantic v2), YAML loading, dotted overrides.

`load_config(path, overrides)` reads a YAML file (or a shipped config name such as "pd_best"),
applies overrides like ``"distill.tau=1.0"`` (the value parsed with ``yaml.safe_load``; list items
by index, ``data.streams.0.uri=...``; `trainer.overrides`) and validates: unknown keys, wrong types and out-of-range
values raise `ConfigError` naming the full dotted key (``distill.alpha.peak``, ``data.streams[0].uri``).
Each section is one model below, its range checks beside its fields and its cross-field checks in
its own validator; keys left out take the defaults. `pdistill train --help` lists every setting
from these fields. The shipped configs live in ``trainer/configs/``.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationError, model_validator

from schemas.errors import ConfigError
from schemas.settings import Problem, Refused, file_problem, known_keys, raise_first
from trainer.config_types import Bool, Duration, Float, Int, Section, Span, Str, Time
from trainer.overrides import apply_overrides
from trainer.schedules import AlphaSchedule, ConstantAlpha, WSDAlpha

__all__ = [
    "ConfigError",
    "StreamConfig",
    "DataConfig",
    "ModelConfig",
    "DistillConfig",
    "CrossTokenizerConfig",
    "OptimConfig",
    "ConstantLR",
    "CosineLR",
    "WSDLR",
    "LRSchedule",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "shipped_config_path",
    "CONFIG_DIR",
    "check_distill_for_datasets",
    "TAGGED_UNIONS",
]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
LOGGERS = ("console", "file", "tensorboard", "mlflow", "wandb")
TAGGED_UNIONS = ("distill.alpha", "scheduler")  # keys holding a schedule picked by its `name`


# ----------------------------------------------------------------------------------------------
# sections


class StreamConfig(Section):
    uri: Str = Field(
        min_length=1, description="dataset root written by the pipeline (local path, file://, s3://, gs://)"
    )
    local: Str | None = Field(
        None,
        description="local cache folder for this stream (default: under data.local_cache); "
        "its shards are kept in a sub-folder named after the dataset's location and content "
        "(manifest and root index), so a changed dataset never reads an old cache",
    )
    proportion: Float | None = Field(None, ge=0, description="share of each epoch (all streams or none)")
    repeat: Float | None = Field(None, ge=0, description="or: up/down-sampling factor")
    choose: Int | None = Field(None, ge=0, description="or: exact number of samples per epoch")

    @model_validator(mode="after")
    def _one_weight(self):
        given = [n for n in ("proportion", "repeat", "choose") if getattr(self, n) is not None]
        if len(given) > 1:
            raise Refused(given[1], "at most one of proportion, repeat, choose per stream")
        return self


class DataConfig(Section):
    streams: list[StreamConfig] = Field(
        [], min_length=1, validate_default=True, description="one or more datasets (YAML list of {uri, ...})"
    )
    local_cache: Str | None = Field(
        None,
        description="root of the local shard caches, kept between runs (null: "
        "<system temp dir>/pdistill-cache/<run.run_name or config digest>); each dataset "
        "is cached in a folder named after its location and content (manifest and root "
        "index with every shard's hash), so a changed dataset is never read from an old cache",
    )
    batch_size: Int = Field(8, gt=0, description="GLOBAL batch (sequences per optimizer step), divided by world size")
    microbatch_size: Int | None = Field(None, gt=0, description="per-device microbatch (null: whole device batch)")
    shuffle: Bool = True
    shuffle_seed: Int = Field(9176, ge=0)
    shuffle_algo: Str = "py1e"
    num_canonical_nodes: Int | None = Field(
        None, gt=0, description="fix it (e.g. 1) for elastic resume across world sizes"
    )
    partition_algo: Str = "relaxed"
    predownload: Int | None = Field(None, ge=0, description="samples to prefetch per worker (null: streaming default)")
    num_workers: Int = Field(0, ge=0, description="dataloader workers per rank (must stay constant across resumes)")
    validate_hash: Str | None = Field("xxh3_64", description="shard hash checked on download (null: off)")
    eval_uri: Str | None = Field(None, description="held-out dataset for student perplexity (null: no eval)")
    eval_batch_size: Int | None = Field(None, gt=0, description="default: batch_size")

    @classmethod
    def of(cls, *uris: str, **settings) -> DataConfig:
        """A data section reading `uris` with the other settings given (for tools, benches and tests)."""
        return cls(streams=[StreamConfig(uri=u) for u in uris], **settings)

    @model_validator(mode="after")
    def _proportions_all_or_none(self):
        with_prop = [st.proportion is not None for st in self.streams]
        if any(with_prop) and not all(with_prop):
            raise Refused(
                f"streams[{with_prop.index(False)}].proportion", "when one stream sets a proportion, all must"
            )
        return self


class ModelConfig(Section):
    hf_config: dict | None = Field(None, description="a transformers config with model_type, trained from scratch")
    checkpoint: Str | None = Field(None, description="or: an HF checkpoint dir/URI")
    tokenizer: Str | None = Field(None, description="tokenizer dir/URI (fingerprint checked against the dataset)")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.hf_config is None) == (self.checkpoint is None):
            raise Refused("hf_config", "set exactly one of model.hf_config or model.checkpoint")
        if self.hf_config is not None and "model_type" not in self.hf_config:
            raise Refused("hf_config.model_type", "required (e.g. 'llama')")
        return self


def _wsd_by_default(value):
    """A schedule section without a name is WSD (the paper's best LR schedule, and PD*'s alpha):
    so `distill.alpha.peak=0.5` on a config without an alpha section is the default schedule with
    that peak, and an out-of-range value names its range, not a missing `name`."""
    return {**value, "name": "wsd"} if isinstance(value, dict) and "name" not in value else value


class CrossTokenizerConfig(Section):
    """A student whose tokenizer is not the teacher's (`trainer.cross_tokenizer`): the loader decodes each
    teacher sequence to bytes, re-tokenises it with model.tokenizer and aligns the two at shared byte
    boundaries; the KD term becomes `method`. With distill.mode none it is the LM-only baseline on the
    same text."""

    method: Literal["first_token", "alm", "gold", "next_byte"] = Field(
        "first_token",
        description="first_token: the teacher's kept ids moved onto the student's vocabulary by the student "
        "token each one's bytes begin with, then the same-tokenizer KD term (distill.kind, support, tau) at "
        "aligned positions; alm: approximate likelihood matching of aligned chunks (needs the "
        "teacher_next_logp column); gold: exact-match KL + ULD sorted-probability term at aligned positions; "
        "next_byte: KL of the first byte of what follows an aligned boundary",
    )
    student_seq_len: Int | None = Field(
        None, gt=0, description="student tokens per sequence (null: 1.25 x the dataset's seq_len, rounded up to 8)"
    )
    tau: Float | None = Field(
        None,
        gt=0,
        description="temperature of the alm / gold / next_byte term (null: alm 100, as tokenkit; gold, "
        "next_byte 1); first_token uses distill.tau",
    )
    separator: Str | None = Field(
        None, description="the student's document separator token (null: its EOS, else <|endoftext|>)"
    )


class DistillConfig(Section):
    mode: Literal["offline", "live", "none"] = Field("offline", description="none = LM only, no teacher read")
    kind: Literal["forward_kl", "reverse_kl", "soft_ce", "mse", "jsd"] = Field(
        "forward_kl",
        description="the divergence (trainer.losses.kd_loss); jsd: generalised Jensen-Shannon, see distill.beta",
    )
    beta: Float | None = Field(
        None,
        ge=0,
        le=1,
        description="kind jsd only, in [0, 1]: the teacher's weight in the "
        "mixture M = beta teacher + (1 - beta) student (TRL GKD / Axolotl kd_beta); "
        "0 = forward KL, 1 = reverse KL (null: 0.5)",
    )
    support: Literal["full", "kept", "split"] = Field(
        "split",
        description="the student side of the KD term against the truncated teacher (trainer.losses.kd_loss): "
        "full = full vocabulary; kept = renormalised over the kept set; split = chain-rule split",
    )
    tau: Float = Field(2.0, gt=0, description="temperature of the teacher (and student) distributions")
    tail: Bool = Field(False, description="support full only: dropped teacher mass as one extra bucket")
    tau_squared: Bool = Field(False, description="multiply the KD loss by tau^2")
    chunk_size: Int | None = Field(1024, gt=0, description="positions per chunk in the loss (null: all at once)")
    fused_head: Bool = Field(
        True,
        description="compute the loss from the student's last hidden state and output "
        "projection, chunk_size positions at a time, never the [B, T, V] logits "
        "(false: the student's full logits, as its own forward returns them)",
    )
    alpha: Annotated[AlphaSchedule | None, BeforeValidator(_wsd_by_default)] = Field(
        None,
        description="alpha schedule {name: constant|linear|cosine|wsd|periodic, ...} (null: PD* WSD, or "
        "constant 0 for mode none; a section without a name is wsd)",
    )
    cross_tokenizer: CrossTokenizerConfig | None = Field(
        None, description="a student with its own tokenizer (model.tokenizer): re-tokenise and align (null: off)"
    )
    teacher: Str | None = Field(None, description="live mode: teacher checkpoint dir/URI")
    top_p: Float = Field(0.95, gt=0, le=1, description="live mode truncation (offline: fixed by the dataset)")
    top_k: Int = Field(50, gt=0)

    @model_validator(mode="after")
    def _consistent(self):
        if self.beta is not None and self.kind != "jsd":
            raise Refused("beta", f"only applies with distill.kind: jsd (kind is {self.kind!r})")
        if self.tail and self.support != "full":
            why = "already uses the tail mass" if self.support == "split" else "ignores it"
            raise Refused(
                "tail", f"the tail bucket only applies with distill.support: full (support {self.support!r} {why})"
            )
        if self.mode == "none" and self.alpha is not None and self.alpha != ConstantAlpha(0.0):
            raise Refused("alpha", "must be {name: constant, value: 0.0} (or unset) when distill.mode is none")
        ct = self.cross_tokenizer
        if ct is not None and ct.method == "first_token" and ct.tau is not None:
            raise Refused("cross_tokenizer.tau", "method first_token uses distill.tau (its KD term is the usual one)")
        if self.cross_tokenizer is not None and self.mode == "live":
            raise Refused("cross_tokenizer", "reads the stored teacher pass: use distill.mode offline (or none)")
        if self.mode == "live" and not self.teacher:
            raise Refused("teacher", "required when distill.mode is live")
        if self.mode != "live" and self.teacher is not None:
            raise Refused("teacher", f"only used when distill.mode is live (mode is {self.mode!r})")
        return self

    def alpha_schedule(self):
        """The alpha schedule (default: PD* WSD for offline/live, constant 0 for none)."""
        if self.alpha is not None:
            return self.alpha
        return ConstantAlpha(0.0) if self.mode == "none" else WSDAlpha(peak=0.9, floor=0.0, warmup=0.1, decay=0.1)


Beta = Annotated[float, Field(strict=True, ge=0, lt=1)]


class OptimConfig(Section):
    name: Literal["adamw", "decoupled_adamw"] = "adamw"
    lr: Float = Field(6e-4, gt=0)
    betas: list[Beta] = Field([0.9, 0.95], min_length=2, max_length=2, description="two numbers in [0, 1)")
    eps: Float = Field(1e-8, gt=0)
    weight_decay: Float = Field(0.1, ge=0)
    grad_clip: Float | None = Field(1.0, gt=0, description="max grad norm (null: off)")


class ConstantLR(Section):
    name: Literal["constant"]
    t_warmup: Span = Field("0.1dur", description="linear warmup (Composer time string)")


class CosineLR(ConstantLR):
    name: Literal["cosine"]
    alpha_f: Float = Field(0.0, ge=0, le=1, description="final LR multiplier")


class WSDLR(CosineLR):
    name: Literal["wsd"] = "wsd"
    t_decay: Span = Field("0.1dur", description="length of the final decay")
    decay_shape: Literal["cosine", "linear"] = "cosine"


# The learning-rate schedule, picked by `name`; each takes only its own keys (no t_decay for cosine).
LRSchedule = Annotated[ConstantLR | CosineLR | WSDLR, Field(discriminator="name"), BeforeValidator(_wsd_by_default)]


class RunConfig(Section):
    max_duration: Duration = "100ba"
    eval_interval: Time = "50ba"
    save_folder: Str | None = Field(None, description="local path or s3:// / gs:// URI (null: no checkpoints)")
    save_interval: Time = "50ba"
    save_num_checkpoints_to_keep: Int = -1
    run_name: Str | None = Field(None, description="required with autoresume")
    autoresume: Bool = False
    seed: Int = Field(17, ge=0)
    deterministic: Bool = False
    device: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["fp32", "amp_bf16", "amp_fp16"] = "fp32"
    loggers: list[Literal[LOGGERS]] = Field(["console"], description="any of " + ", ".join(LOGGERS))
    log_interval: Time = "1ba"
    log_dir: Str | None = Field(None, description="file/tensorboard output (null: <save_folder or cwd>/logs)")
    stop_after: Duration | None = Field(
        None, description="stop (with a checkpoint) at this time, e.g. 50ba; schedules still follow max_duration"
    )
    sample_log_dir: Str | None = Field(None, description="record {step, rank, sample_ids} per step as jsonl here")
    allow_changed: list[Str] = Field(
        [], description="autoresume: fingerprint keys that may differ from the checkpoint's (e.g. [optim.lr])"
    )

    @model_validator(mode="after")
    def _consistent(self):
        if len(set(self.loggers)) != len(self.loggers):
            raise Refused("loggers", f"duplicate entries in {self.loggers!r}")
        if self.autoresume and not (self.save_folder and self.run_name):
            raise Refused("save_folder" if not self.save_folder else "run_name", "required when run.autoresume is true")
        return self


class TrainConfig(Section):
    data: DataConfig = Field({}, validate_default=True)
    model: ModelConfig = Field({}, validate_default=True)
    distill: DistillConfig = DistillConfig()
    optim: OptimConfig = OptimConfig()
    scheduler: LRSchedule = Field(
        {},
        validate_default=True,
        description="the learning-rate schedule {name: constant|cosine|wsd, ...} (a section without a name is wsd)",
    )
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        return self.model_dump()


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
                "sampled frequencies does not estimate softmax(z / tau); set distill.tau=1.0 or use a top_p_k dataset"
            )


# ----------------------------------------------------------------------------------------------
# loading


def shipped_config_path(name: str) -> str:
    """Path of a config shipped in trainer/configs ("pd_best" or "pd_best.yaml")."""
    base = name if name.endswith((".yaml", ".yml")) else name + ".yaml"
    return os.path.join(CONFIG_DIR, base)


def config_from_dict(raw: dict | None) -> TrainConfig:
    """Validate a plain dict (as from YAML) into a TrainConfig; the first problem, by dotted key."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping, got {raw!r}")
    try:
        return TrainConfig.model_validate(raw or {})
    except ValidationError as e:
        raise_first(e, _message, TAGGED_UNIONS)


def _message(p: Problem) -> str:
    known = known_keys(TrainConfig, p.key) if p.kind == "extra_forbidden" else []
    return f"{p.key}: {p.message}" + (f" (known here: {', '.join(known)})" if known else "")


def load_config(path: str, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (a path, or the name of a shipped config), apply overrides, validate."""
    if not os.path.exists(path) and os.path.exists(shipped_config_path(path)):
        path = shipped_config_path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:  # a folder, no permission, not YAML
        raise ConfigError(f"{path}: cannot read it as a config ({file_problem(e)})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(apply_overrides(raw or {}, overrides))
