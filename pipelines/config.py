"""The teacher pass's settings: one typed model (pydantic v2), loadable from YAML, overridable by flags.

Each field carries its range check and its help (`pdistill logits --help` is generated from these
fields, see `pipelines.cli`). Every field that shapes the bytes of the output goes into
`shaping_settings()`, whose hash (together with the resolved source, teacher and tokenizer
identities) is the dataset's settings fingerprint: a re-run into an existing output with different
settings is refused. Fields that only change how fast or where the job runs (batch size, runner)
stay out of it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.runner_keys import normalize_runner
from schemas import make_codec, storage
from schemas import next_logp as next_logp_codec
from schemas.errors import CodecError, ConfigError
from schemas.identity import fingerprint_json
from schemas.redact import redact_uri
from schemas.settings import Problem, Refused, file_problem, raise_first, type_label

__all__ = ["ConfigError", "PipelineConfig", "SELECTIONS", "TRAILING", "FORMATS", "DTYPES", "RUNNING_MODES"]

SELECTIONS = ("top_p_k", "sample")
TRAILING = ("pad",)
FORMATS = ("auto", "parquet", "jsonl", "text")
DTYPES = ("auto", "float32", "bfloat16", "float16")
RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")

Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
Str = Annotated[str, Field(strict=True)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Positive = Annotated[int, Field(strict=True, ge=1)]


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Str] = Field(
        [],
        description="input URI, glob or folder (repeatable or comma list; local, file://, gs://, s3://); "
        "below a folder or a glob's folder, names starting with '.' or '_' are skipped (and "
        "counted in the report) unless the input names them",
    )
    teacher: Str = Field("", description="teacher checkpoint: local folder or object-store URI")
    output: Str = Field("", description="output dataset URI")
    tokenizer: Str | None = Field(None, description="tokenizer folder/URI (default: the teacher's)")
    format: Literal[FORMATS] = Field("auto", description="by extension: .parquet, .jsonl/.json/.ndjson[.gz|.zst], .txt")
    text_column: Str = Field("text", min_length=1, description="Parquet column / JSON key of the text")
    seq_len: Int = Field(2048, ge=2, description="tokens per packed sequence")
    selection: Literal[SELECTIONS] = Field("top_p_k", description="top_p_k (truncate) | sample (sparse logit sampling)")
    top_p: Float = Field(0.95, gt=0, le=1)
    top_k: Positive = 100
    num_draws: Positive = Field(64, description="draws per position for --selection sample")
    seed: Int = Field(0, description="mixes into the per-sample seed of --selection sample")
    codec: Str = Field(
        "compact4",
        description="compact4 (default) | compact5 (with a codec prime) | compact3 | compact2 | compact | exact",
    )
    codec_params: dict = Field({}, description="codec parameters as JSON")
    separator: Int | Str | None = Field(None, description="separator token id or string (default: the tokenizer's EOS)")
    add_bos: Bool = Field(False, description="prepend the tokenizer's BOS to every document")
    trailing: Literal[TRAILING] = Field("pad", description="last partial sequence of a unit: padded, padding masked")
    rows_per_unit: Positive = Field(
        50_000, description="Parquet: row groups are grouped until a unit holds this many rows"
    )
    bytes_per_unit: Positive = Field(64 << 20, description="uncompressed JSONL: byte-range size of a unit")
    inference_args: dict = Field({"use_cache": False}, description="JSON kwargs for the model call")
    dtype: Literal[DTYPES] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    # -- execution only (not part of the settings fingerprint) --
    batch_size: Positive = Field(8, description="sequences per teacher forward")
    device: Str = Field("auto", description="auto | cpu | cuda | cuda:N")
    share_model: Bool | Literal["auto"] = Field(
        "auto", description="one model per machine/accelerator (auto: when on GPU)"
    )
    runner: Str = Field("DirectRunner", description="Beam runner (default DirectRunner)")
    direct_running_mode: Literal[RUNNING_MODES] = "in_memory"
    direct_num_workers: Positive = 1
    runner_config: dict = Field({}, description="per-runner settings for pipelines.runner_options")
    progress: Bool = Field(True, description="progress display (default on)")

    EXECUTION_ONLY: ClassVar[tuple[str, ...]] = (
        "output",
        "batch_size",
        "device",
        "share_model",
        "runner",
        "direct_running_mode",
        "direct_num_workers",
        "runner_config",
        "progress",
    )

    def __init__(self, _where: str = "config", **data: Any):
        """Validated settings; a bad one raises ConfigError naming it (and `_where`, its source)."""
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise_first(e, lambda p: _message(p, _where))

    @field_validator("inputs", mode="before")
    @classmethod
    def _split_inputs(cls, value):
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [s.strip() for v in value for s in v.split(",") if s.strip()]
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not value.startswith("cuda:"):
            raise ValueError("must be auto|cpu|cuda")
        return value

    @field_validator("runner")
    @classmethod
    def _runner(cls, value: str) -> str:
        normalize_runner(value)  # refuses an unknown or refused runner (ConfigError) before any work
        return value

    @model_validator(mode="after")
    def _codec(self):
        try:
            make_codec(self.codec, self.codec_params)
        except CodecError as e:
            raise Refused("codec", str(e)) from None
        return self

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> PipelineConfig:
        """Settings from a mapping (YAML or flags); `where` names the source in errors."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: top level must be a mapping, got {type(raw).__name__}")
        data = {}
        for key, value in raw.items():
            key = str(key).replace("-", "_")
            data["inputs" if key == "input" else key] = value
        return cls(_where=where, **data)

    @classmethod
    def from_yaml(cls, path: str) -> PipelineConfig:
        try:
            raw = yaml.safe_load(storage.read_text(path)) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{redact_uri(path)}: a config file must be YAML ({file_problem(e)})") from None
        return cls.from_dict(raw, where=redact_uri(path))

    def replace(self, **changes) -> PipelineConfig:
        return PipelineConfig.from_dict({**self.model_dump(), **changes})

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
        corpus or of the checkpoint at another URI is the same input). The codec's parameters as
        its encoder resolves them, defaults included: a pdistill whose encoder defaults changed
        (compact4's kl_target, the KL guarantee's mass_floor) must not resume a run another one
        started, since decoders derive the value step from the manifest's parameters. The dataset's
        stored extras too (the next-token column's format, the tokenizer files): an output that a
        pdistill without them started is refused as other settings, never finished mixed."""
        d = self.model_dump(exclude=set(self.EXECUTION_ONLY) | {"inputs", "teacher", "tokenizer"})
        d["codec_params"] = make_codec(self.codec, self.codec_params).params()
        d["next_logp"] = next_logp_codec.manifest_entry()
        d["tokenizer_files"] = True
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


def _message(p: Problem, where: str) -> str:
    """Pipeline settings are flat: an unknown or ill-typed key names its source, a bad value the setting."""
    key = p.key.split(".")[0].split("[")[0]  # a union's member or a list item: the setting itself
    if p.kind == "extra_forbidden":
        return f"{where}: unknown key '{key}' (known: {', '.join(sorted(PipelineConfig.model_fields))})"
    if p.kind.endswith("_type"):
        field = PipelineConfig.model_fields[key]
        return (
            f"{where}: key '{key}' has the wrong type {type(p.value).__name__} ({p.value!r}); "
            f"expected {type_label(field.annotation)}"
        )
    return f"setting '{key}': {p.message}"
