"""Will one teacher forward work? Positions and memory, checked before the first forward.

A `seq_len` beyond the teacher's trained context (`max_position_embeddings`) is accepted by most
models without complaint and yields garbage distributions past the trained length (or an index
error deep in the model); a batch whose logits do not fit is killed by the kernel (OOM) with no
message. Both are refused up front with an error naming the setting and the numbers: on the
launcher (`check_fits`, from the checkpoint's config; memory only for the local DirectRunner,
whose workers share the launcher's machine) and again on each worker after the model is loaded
(`TeacherRunner`), where the device and its free memory are known. A CUDA `device` that the
launcher's machine lacks is refused there too under the DirectRunner (`check_device`), instead of
torch's driver traceback.

The memory figure is a lower bound of what one forward holds at its peak, not a prediction:
the [batch, seq_len, vocab] logits in the model's dtype, the per-sequence float32 working copy
of the truncation, one layer's MLP activations, and the [batch, heads, seq_len, seq_len] scores
only for eager attention (SDPA kernels do not materialise them); plus the weights when they are
not loaded yet. A run is refused only when even this bound does not fit, so no run that could
work is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from schemas.errors import ConfigError
from schemas.redact import redact_uri

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "max_seq_len", "seq_length", "n_ctx")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = float(1 << 30)


class TeacherLimitError(ConfigError):
    """The settings ask more of the teacher than it can do (context length or memory)."""


@dataclass(frozen=True)
class ForwardShape:
    """What sizes one forward: read from a checkpoint's config (any HF causal LM)."""

    vocab: int
    hidden: int = 0
    intermediate: int = 0
    heads: int = 0
    max_positions: int | None = None
    attention: str = "sdpa"  # eager materialises [B, H, T, T] scores


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def max_positions(config) -> int | None:
    cfg = _text_config(config)
    for key in POSITION_KEYS:
        v = getattr(cfg, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def forward_shape(config, vocab: int) -> ForwardShape:
    cfg = _text_config(config)

    def first(*keys):
        for k in keys:
            v = getattr(cfg, k, None)
            if isinstance(v, int) and v > 0:
                return v
        return 0

    hidden = first("hidden_size", "n_embd", "d_model")
    return ForwardShape(
        vocab=vocab,
        hidden=hidden,
        intermediate=first("intermediate_size", "n_inner", "ffn_dim") or 4 * hidden,
        heads=first("num_attention_heads", "n_head"),
        max_positions=max_positions(config),
        attention=str(getattr(cfg, "_attn_implementation", None) or "sdpa"),
    )


def check_positions(seq_len: int, shape: ForwardShape, teacher: str) -> None:
    if shape.max_positions is not None and seq_len > shape.max_positions:
        raise TeacherLimitError(
            f"setting 'seq_len' is {seq_len} but teacher {redact_uri(teacher)} was trained for at most {shape.max_positions} "
            f"positions (max_position_embeddings): its distributions past that are not meaningful; "
            f"set seq_len <= {shape.max_positions}"
        )


def forward_bytes(shape: ForwardShape, batch_size: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
    """Lower bound of one forward's peak memory, by part (see the module docstring)."""
    b, t = int(batch_size), int(seq_len)
    parts = {
        "logits": b * t * shape.vocab * dtype_bytes,
        "truncation": t * shape.vocab * (4 + 1),  # float32 view/copy + finiteness mask, one sequence at a time
        "activations": b * t * (2 * shape.intermediate + 2 * shape.hidden) * dtype_bytes,
    }
    if shape.attention == "eager":
        parts["attention"] = b * shape.heads * t * t * dtype_bytes
    return parts


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            v = f.read().strip()
    except OSError:
        return None
    return int(v) if v.isdigit() else None


def available_memory(device: str = "cpu") -> tuple[int | None, str]:
    """(bytes free for a new allocation, where): the accelerator's free memory, or for the CPU the
    kernel's MemAvailable capped by the cgroup limit (containers); None when unknown."""
    if device.startswith("cuda"):
        import torch  # noqa: PLC0415 (late: torch is heavy)

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"{device} (free accelerator memory)"
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit and usage is not None and limit < (1 << 60):
            free = min(free if free is not None else limit, max(0, limit - usage))
    return free, "this machine's available memory (MemAvailable, within the cgroup limit)"


def check_memory(
    shape: ForwardShape,
    *,
    batch_size: int,
    seq_len: int,
    dtype_bytes: int,
    available: int | None,
    where: str,
    copies: int = 1,
    weights: int = 0,
) -> None:
    """Refuse when `copies` concurrent forwards (plus `weights` bytes not yet loaded) cannot fit."""
    if available is None:
        return
    parts = forward_bytes(shape, batch_size, seq_len, dtype_bytes)
    need = copies * (sum(parts.values()) + weights)
    if need <= available:
        return
    detail = ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts.items())
    if weights:
        detail += f", weights {weights / GIB:.2f}"
    raise TeacherLimitError(
        f"settings 'batch_size' {batch_size} x 'seq_len' {seq_len} (vocab {shape.vocab}): one teacher forward needs at "
        f"least {need / GIB:.2f} GiB ({detail} GiB{f'; x {copies} concurrent workers' if copies > 1 else ''}) but "
        f"{where} is {available / GIB:.2f} GiB; lower batch_size or seq_len"
    )


def local_dtype_bytes(device: str, dtype: str) -> int:
    """Bytes per element of the forward as TeacherRunner resolves it (auto: bf16 on GPU, fp32 on CPU)."""
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return DTYPE_BYTES.get(dtype, 4)


def local_device(device: str) -> str:
    if device != "auto":
        return device
    import torch  # noqa: PLC0415 (late: torch is heavy)

    return "cuda" if torch.cuda.is_available() else "cpu"


def concurrent_forwards(config) -> int:
    """Forwards running at once on the launcher's machine under the DirectRunner."""
    if config.direct_running_mode == "in_memory":
        return 1
    return max(1, int(config.direct_num_workers or os.cpu_count() or 1))


def check_device(device: str) -> None:
    """A CUDA device asked for must exist here (the DirectRunner's workers share this machine):
    otherwise torch fails in the first allocation with a driver traceback."""
    if not device.startswith("cuda"):
        return
    import torch  # noqa: PLC0415 (late: torch is heavy)

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise TeacherLimitError(
            f"setting 'device' is {device!r} but torch sees no CUDA device on this machine "
            "(no GPU, or no driver); use --device cpu or auto"
        )
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= count):
        raise TeacherLimitError(
            f"setting 'device' is {device!r} but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
        )


def check_fits(teacher, config) -> None:
    """Launcher-side checks (see the module docstring); `teacher` is `pipelines.teacher.TeacherInfo`."""
    local = config.runner.lower() in ("directrunner", "direct", "bundlebaseddirectrunner")
    if local:
        check_device(config.device)
    shape = teacher.shape
    if shape is None:
        return
    check_positions(config.seq_len, shape, config.teacher)
    if not local:
        return  # remote workers check their own device (TeacherRunner)
    device = local_device(config.device)
    elt = local_dtype_bytes(device, config.dtype)
    available, where = available_memory(device)
    copies = 1 if config.share_model is True else concurrent_forwards(config)  # a shared model: one copy
    check_memory(
        shape,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        dtype_bytes=elt,
        available=available,
        where=where,
        copies=copies,
        weights=teacher.params * elt,
    )
