"""Teacher inference: a Beam ModelHandler running a causal LM and truncating on its device.

`TeacherRunner` owns the model: forward pass on a batch of packed sequences, then top-p-k
(`schemas.truncate_tensor`, on the device, only [T, k] candidates leave it) or sampled selection
(`schemas.sample_select`), plus the log-probability of each actual next token (`next_token_logp`,
gathered on the device). Its `predict` returns small `Scored` records (`schemas.KeptEntries` and
that [T] column), so when the model is shared across processes (`share_model_across_processes`,
one copy per accelerator) only those cross the process boundary, never logits.

`TeacherModelHandler` is what `RunInference` drives: it batches `Packed` sequences, forwards
`inference_args` to the model call, and records Beam metrics (teacher tokens and seconds).
The launcher's checks on the checkpoint, before anything is scheduled (`inspect_teacher`,
`check_tokenizer_fits`), live in `pipelines.teacher_checkpoint`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipelines import faults
from pipelines.config import PipelineConfig
from pipelines.packing import Packed
from pipelines.teacher_checkpoint import TeacherError, check_vocab, inspect_teacher  # noqa: F401 (re-exported)
from pipelines.teacher_limits import DTYPE_BYTES, available_memory, check_memory, check_positions, forward_shape
from schemas import KeptEntries, sample_select, storage, truncate_tensor

NAMESPACE = "pdistill"


@dataclass(frozen=True)
class Unscored:
    """A sequence the teacher could not score: its logits are not finite (a half-precision overflow
    on some input, a broken checkpoint row). It becomes a dead letter of its part, with its tokens,
    instead of failing the job on every re-run."""

    reason: str


@dataclass(frozen=True)
class Scored:
    """What the teacher gives one sequence, padded to seq_len: the kept entries and, per position,
    log p(tokens[t + 1] | tokens[: t + 1]) as float32 (NaN from the last real token on)."""

    kept: KeptEntries
    next_logp: np.ndarray


def next_token_logp(z, next_ids, seq_len: int, row_chunk: int = 256) -> np.ndarray:
    """float32 [seq_len]: log_softmax(z[t])[next_ids[t]] for the n - 1 rows of z [n, V] that have a
    next token (a tensor on its device; next_ids [n - 1] on the same device), NaN after. Per chunk
    of rows: a float64 logsumexp (as `schemas.truncate_tensor` computes the normaliser, so a kept
    next token's value equals its kept log-probability) minus the gathered logit; only [T] floats
    leave the device."""
    out = np.full(seq_len, np.nan, dtype=np.float32)
    m = int(next_ids.shape[0])
    parts = []
    for s in range(0, m, row_chunk):
        zc = z[s : min(s + row_chunk, m)].float()
        picked = zc.gather(1, next_ids[s : s + row_chunk, None])[:, 0].double()
        parts.append((picked - zc.double().logsumexp(-1)).clamp(max=0.0).cpu().numpy())
    if parts:
        out[:m] = np.concatenate(parts).astype(np.float32)
    return out


def resolve_device_dtype(device: str = "auto", dtype: str = "auto"):
    import torch  # noqa: PLC0415 (late: torch is heavy)

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, getattr(torch, dtype)


def sample_seed(sid: int, seed: int) -> int:
    """Per-sample seed of the sampled selection: a function of the sample id (and the run seed)."""
    return (int(sid) + int(seed) * 0x9E3779B97F4A7C15) % (1 << 64)


class TeacherRunner:
    """The loaded teacher. Lives where the model lives (in-process, or in the shared process)."""

    def __init__(
        self,
        model_uri: str,
        *,
        selection: str,
        top_p: float,
        top_k: int,
        num_draws: int,
        device: str = "auto",
        dtype: str = "auto",
        min_vocab: int = 0,
    ):
        from transformers import AutoModelForCausalLM  # noqa: PLC0415 (late: torch is heavy)

        self.device, self.dtype = resolve_device_dtype(device, dtype)
        local = storage.fetch_dir(model_uri)
        model = AutoModelForCausalLM.from_pretrained(local, dtype=self.dtype)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        check_vocab(self.vocab_size, min_vocab, model_uri, "(pipeline tokenizer)")
        self.model = model.to(self.device).eval()
        self.selection, self.top_p, self.top_k, self.num_draws = selection, top_p, top_k, num_draws
        self.model_uri, self.checked = model_uri, set()  # batch shapes that passed check_limits
        # No torch.set_grad_enabled(False) here: it is process-global and would silently switch off
        # autograd for anything else in the process (an in-process trainer, tests); predict() runs
        # under inference_mode instead.

    def check_limits(self, batch_size: int, seq_len: int) -> None:
        """Before the first forward of a batch shape: positions, and memory on this device now."""
        if (batch_size, seq_len) in self.checked:
            return
        shape = forward_shape(self.model.config, self.vocab_size)
        check_positions(seq_len, shape, self.model_uri)
        available, where = available_memory(str(self.device))
        elt = DTYPE_BYTES.get(str(self.dtype).replace("torch.", ""), 4)
        check_memory(shape, batch_size=batch_size, seq_len=seq_len, dtype_bytes=elt, available=available, where=where)
        self.checked.add((batch_size, seq_len))

    def describe(self) -> dict:
        """Where this model lives (a method, so it also answers through a multi-process proxy)."""
        return {"pid": os.getpid(), "device": str(self.device), "dtype": str(self.dtype)}

    def predict(
        self, tokens: np.ndarray, n_tokens: Sequence[int], seeds: Sequence[int], inference_args: dict | None = None
    ) -> list[Scored | Unscored]:
        import torch  # noqa: PLC0415 (late: torch is heavy)

        self.check_limits(*np.shape(tokens))
        with torch.inference_mode():
            ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device)
            logits = self.model(input_ids=ids, **(inference_args or {})).logits
            bad_rows = (~torch.isfinite(logits)).any(-1).cpu().numpy()  # [B, T]: one cheap pass
            out = []
            for b, n in enumerate(n_tokens):
                z = logits[b, : int(n)]
                bad = np.flatnonzero(bad_rows[b, : int(n)])
                if len(bad):
                    out.append(
                        Unscored(
                            f"the teacher's logits are not finite at {len(bad)} of {int(n)} positions "
                            f"(first: position {int(bad[0])}; dtype {str(self.dtype).replace('torch.', '')})"
                        )
                    )
                    continue
                if self.selection == "sample":
                    tr = sample_select(z.float().cpu().numpy(), self.num_draws, int(seeds[b]))
                else:
                    tr = truncate_tensor(z, self.top_p, self.top_k)
                seq_len = int(tokens.shape[1])
                nl = next_token_logp(z, ids[b, 1 : int(n)], seq_len)
                out.append(Scored(tr.padded(seq_len), nl))  # padding: no teacher signal
        return out


class TeacherModelHandler(ModelHandler[Packed, PredictionResult, TeacherRunner]):
    """RunInference handler: Packed sequences in, PredictionResult(Packed, Scored | Unscored) out."""

    def __init__(self, config: PipelineConfig, *, min_vocab: int = 0, metric_prefix: str = ""):
        """The teacher, selection, batch, device and sharing settings come from the job's config;
        `metric_prefix` names its counters apart (the codec prime's teacher calls: "prime_")."""
        super().__init__()
        self.metric_prefix = metric_prefix
        c = config
        self.model_uri = c.teacher
        self.runner_kwargs = dict(
            selection=c.selection,
            top_p=c.top_p,
            top_k=c.top_k,
            num_draws=c.num_draws,
            device=c.device,
            dtype=c.dtype,
            min_vocab=min_vocab,
        )
        self.seed, self.batch_size, self.device = c.seed, c.batch_size, c.device
        self.share_model = c.share_model
        self._metrics = None

    def load_model(self) -> TeacherRunner:
        return TeacherRunner(self.model_uri, **self.runner_kwargs)

    def share_model_across_processes(self) -> bool:
        if self.share_model == "auto":
            import torch  # noqa: PLC0415 (late: torch is heavy)

            return self.device != "cpu" and torch.cuda.is_available()
        return bool(self.share_model)

    def model_copies(self) -> int:
        """One copy per accelerator when shared (1 on a CPU-only machine)."""
        import torch  # noqa: PLC0415 (late: torch is heavy)

        return max(1, torch.cuda.device_count()) if self.device == "auto" else 1

    def batch_elements_kwargs(self):
        return {"min_batch_size": self.batch_size, "max_batch_size": self.batch_size}

    def get_num_bytes(self, batch: Sequence[Packed]) -> int:
        return sum(p.tokens.nbytes for p in batch)

    def get_metrics_namespace(self) -> str:
        return "pdistill_RunInference"

    def run_inference(
        self, batch: Sequence[Packed], model: TeacherRunner, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        if self._metrics is None:
            m = self.metric_prefix
            self._metrics = (
                Metrics.counter(NAMESPACE, f"{m}teacher_tokens"),
                Metrics.counter(NAMESPACE, f"{m}teacher_micros"),
                Metrics.counter(NAMESPACE, f"{m}teacher_batches"),
                Metrics.distribution(NAMESPACE, f"{m}teacher_batch_ms"),
            )
        for p in batch:
            faults.maybe_fail("teacher", p.unit)
        faults.log_teacher_call(sorted({p.unit for p in batch}), model.describe)
        tokens = np.stack([p.tokens for p in batch])
        n_tokens = [int(p.n_tokens) for p in batch]
        seeds = [sample_seed(p.sample_id, self.seed) for p in batch]
        t0 = time.perf_counter()
        results = model.predict(tokens, n_tokens, seeds, inference_args or {})
        dt = time.perf_counter() - t0
        tok, micros, batches, dist = self._metrics
        tok.inc(sum(n_tokens))
        micros.inc(int(dt * 1e6))
        batches.inc()
        dist.update(int(dt * 1e3))
        return [PredictionResult(p, tr) for p, tr in zip(batch, results)]
