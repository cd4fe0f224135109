"""The teacher pass's settings: one dataclass, loadable from YAML, overridable by CLI flags.

Every field that shapes the bytes of the output goes into `shaping_settings()`, whose hash
(together with the resolved source, teacher and tokenizer identities) is the dataset's
settings fingerprint: a re-run into an existing output with different settings is refused.
Fields that only change how fast or where the job runs (batch size, runner) stay out of it.
"""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

from schemas.identity import fingerprint_json

SELECTIONS = ("top_p_k", "sample")
TRAILING = ("pad",)
FORMATS = ("auto", "parquet", "jsonl", "text")
RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")


class ConfigError(ValueError):
    """A bad setting; the message names the key."""


@dataclass
class PipelineConfig:
    inputs: list[str] = field(default_factory=list)  # URIs or globs (local, file://, gs://, s3://)
    teacher: str = ""  # HF checkpoint folder or object-store URI
    output: str = ""  # dataset URI
    tokenizer: str | None = None  # default: the teacher's folder
    format: str = "auto"  # by extension: .parquet, .jsonl/.json/.ndjson[.gz|.zst], .txt
    text_column: str = "text"  # Parquet column / JSON key holding the document
    seq_len: int = 2048
    selection: str = "top_p_k"  # "top_p_k" (truncate) | "sample" (sparse logit sampling)
    top_p: float = 0.95
    top_k: int = 100
    num_draws: int = 64  # draws per position for selection="sample"
    seed: int = 0  # mixes into the per-sample seed of selection="sample"
    codec: str = "compact3"  # schemas.codec.DEFAULT_CODEC; compact2, compact and exact stay readable
    codec_params: dict = field(default_factory=dict)
    separator: Union[int, str, None] = None  # token id or token string; default: tokenizer EOS
    add_bos: bool = False  # prepend the tokenizer's BOS to every document
    trailing: str = "pad"  # last partial sequence of a unit: padded, padding masked (n_tokens < seq_len)
    rows_per_unit: int = 50_000  # Parquet: row groups are grouped until a unit holds this many rows
    bytes_per_unit: int = 64 << 20  # uncompressed JSONL: byte-range size of a unit
    inference_args: dict = field(default_factory=lambda: {"use_cache": False})  # forwarded to model(...)
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    # -- execution only (not part of the settings fingerprint) --
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda
    share_model: Union[bool, str] = "auto"  # one model per machine/accelerator; auto = when on GPU
    runner: str = "DirectRunner"
    direct_running_mode: str = "in_memory"
    direct_num_workers: int = 1
    runner_config: dict = field(default_factory=dict)  # per-runner settings for runner_options
    progress: bool = True

    EXECUTION_ONLY = (
        "output", "batch_size", "device", "share_model", "runner", "direct_running_mode",
        "direct_num_workers", "runner_config", "progress",
    )

    def __post_init__(self):
        self.validate()

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "PipelineConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: top level must be a mapping, got {type(raw).__name__}")
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in raw.items():
            key = key.replace("-", "_")
            if key == "input":
                key = "inputs"
            if key not in names:
                raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(names))})")
            kwargs[key] = _coerce(key, value, hints[key], where)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str) -> "PipelineConfig":
        import yaml

        from schemas import storage

        raw = yaml.safe_load(storage.read_text(path)) or {}
        return cls.from_dict(raw, where=path)

    def replace(self, **changes) -> "PipelineConfig":
        return PipelineConfig.from_dict({**dataclasses.asdict(self), **changes})

    # -- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        def need(ok: bool, key: str, msg: str):
            if not ok:
                raise ConfigError(f"setting '{key}': {msg}, got {getattr(self, key)!r}")

        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        self.inputs = [s.strip() for i in self.inputs for s in str(i).split(",") if s.strip()]
        need(self.seq_len >= 2, "seq_len", "must be >= 2")
        need(self.selection in SELECTIONS, "selection", f"must be one of {SELECTIONS}")
        need(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        need(self.top_k >= 1, "top_k", "must be >= 1")
        need(self.num_draws >= 1, "num_draws", "must be >= 1")
        need(self.trailing in TRAILING, "trailing", f"must be one of {TRAILING}")
        need(self.format in FORMATS, "format", f"must be one of {FORMATS}")
        need(self.rows_per_unit >= 1, "rows_per_unit", "must be >= 1")
        need(self.bytes_per_unit >= 1, "bytes_per_unit", "must be >= 1")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.dtype in ("auto", "float32", "bfloat16", "float16"), "dtype", "must be auto|float32|bfloat16|float16")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device", "must be auto|cpu|cuda")
        need(self.share_model in (True, False, "auto"), "share_model", "must be true, false or auto")
        need(self.direct_running_mode in RUNNING_MODES, "direct_running_mode", f"must be one of {RUNNING_MODES}")
        need(self.direct_num_workers >= 1, "direct_num_workers", "must be >= 1")
        need(bool(self.text_column), "text_column", "must be non-empty")
        from schemas import make_codec

        try:
            make_codec(self.codec, self.codec_params)
        except ValueError as e:
            raise ConfigError(f"setting 'codec': {e}") from None

    def require_io(self) -> None:
        """The three settings a run cannot do without."""
        for key in ("inputs", "teacher", "output"):
            if not getattr(self, key):
                raise ConfigError(f"setting '{key}' is required (--{key.rstrip('s')} on the command line)")

    # -- identity -------------------------------------------------------------------------
    @property
    def tokenizer_uri(self) -> str:
        return self.tokenizer or self.teacher

    @property
    def kept_k(self) -> int:
        """Maximum kept entries per position (the K of dense decoding)."""
        return self.num_draws if self.selection == "sample" else self.top_k

    def shaping_settings(self) -> dict:
        """Every setting that changes the output's bytes, except the identities of the inputs,
        teacher and tokenizer, which enter the fingerprint as content fingerprints (a copy of the
        corpus or of the checkpoint at another URI is the same input)."""
        d = dataclasses.asdict(self)
        d = {k: v for k, v in d.items() if k not in self.EXECUTION_ONLY + ("inputs", "teacher", "tokenizer")}
        if self.selection == "sample":
            d["top_p"], d["top_k"] = 1.0, self.num_draws
        else:
            d.pop("num_draws"), d.pop("seed")
        return d

    def settings_fingerprint(self, resolved: dict | None = None) -> str:
        """sha256 over the shaping settings plus the resolved identities (source, teacher and
        tokenizer fingerprints); without them, the input/teacher/tokenizer URIs stand in."""
        if resolved is None:
            resolved = {"inputs": self.inputs, "teacher": self.teacher, "tokenizer": self.tokenizer_uri}
        return fingerprint_json({"settings": self.shaping_settings(), "resolved": resolved})


def _coerce(key: str, value: Any, hint, where: str):
    """Check a YAML/CLI value against the field's type; ints are accepted where floats are."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union or origin is types.UnionType:
        for a in args:
            try:
                return _coerce(key, value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: key '{key}' has the wrong type {type(value).__name__} ({value!r}); expected {hint}")
    if hint is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    elif hint is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: key '{key}' has the wrong type {type(value).__name__} ({value!r}); expected {getattr(hint, '__name__', hint)}")
