"""Teacher inference: a Beam ModelHandler running a causal LM and truncating on its device.

`TeacherRunner` owns the model: forward pass on a batch of packed sequences, then top-p-k
(`schemas.truncate_tensor`, on the device, only [T, k] candidates leave it) or sampled selection
(`schemas.sample_select`). Its `predict` returns small `schemas.KeptEntries` records, so when the model is
shared across processes (`share_model_across_processes`, one copy per accelerator) only those
cross the process boundary, never logits.

`TeacherModelHandler` is what `RunInference` drives: it batches `Packed` sequences, forwards
`inference_args` to the model call, and records Beam metrics (teacher tokens and seconds).
`inspect_teacher` runs on the launcher before anything is scheduled: the checkpoint must be
readable and its output vocabulary must cover the tokenizer; `check_tokenizer_fits` then refuses
a --tokenizer that is not the teacher's (against the tokenizer saved in the checkpoint).
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
from pipelines.teacher_limits import (
    DTYPE_BYTES,
    ForwardShape,
    available_memory,
    check_memory,
    check_positions,
    forward_shape,
)
from schemas import KeptEntries, sample_select, storage, truncate_tensor
from schemas.identity import fingerprint_files

NAMESPACE = "pdistill"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class TeacherError(ValueError):
    """The teacher checkpoint cannot be used (unreadable, or its vocabulary misses tokenizer ids)."""


@dataclass(frozen=True)
class Unscored:
    """A sequence the teacher could not score: its logits are not finite (a half-precision overflow
    on some input, a broken checkpoint row). It becomes a dead letter of its part, with its tokens,
    instead of failing the job on every re-run."""

    reason: str


@dataclass(frozen=True)
class TeacherInfo:
    local_dir: str
    vocab_size: int  # logits dimension
    revision: str  # sha256 over config.json and the weight files
    shape: ForwardShape | None = None  # what sizes a forward (pipelines.teacher_limits)
    params: int = 0  # parameter count (from the safetensors headers; a lower bound for other formats)


def _weight_files(local_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(local_dir) if n.endswith(WEIGHT_SUFFIXES))


def teacher_revision(local_dir: str) -> str:
    return fingerprint_files(
        (name.encode() + b"\x00", os.path.join(local_dir, name)) for name in ["config.json"] + _weight_files(local_dir)
    )


def logits_dim(config) -> int:
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    v = getattr(cfg, "vocab_size", None)
    if not isinstance(v, int) or v < 1:
        raise TeacherError(f"teacher config has no vocab_size ({type(config).__name__})")
    return v


def check_vocab(teacher_vocab: int, tokenizer_len: int, teacher: str, tokenizer: str) -> None:
    if teacher_vocab < tokenizer_len:
        raise TeacherError(
            f"teacher {teacher} produces logits over {teacher_vocab} ids but tokenizer {tokenizer} has "
            f"{tokenizer_len} tokens: the teacher cannot score every token; use the teacher's own tokenizer"
        )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_tokenizer_fits(
    teacher: TeacherInfo, tokenizer, teacher_uri: str, tokenizer_uri: str, own_checked: bool
) -> None:
    """The tokenizer that encodes the corpus must speak the teacher's vocabulary, or the teacher
    scores ids that mean other tokens to it and nothing says so. Refused: an id the tokenizer can
    produce beyond the teacher's logits; and, when `own_checked` (a --tokenizer other than the
    teacher's URI) and the checkpoint ships its own tokenizer, any id the two tokenizers both
    have but spell differently. Not refused: logits padded beyond the tokenizer (usual), a
    tokenizer copied elsewhere, or one that only adds or lacks tokens at ids the other lacks."""
    vocab = tokenizer.get_vocab()
    check_vocab(
        teacher.vocab_size, max(len(tokenizer), max(vocab.values(), default=-1) + 1), teacher_uri, tokenizer_uri
    )
    if not own_checked or not any(os.path.isfile(os.path.join(teacher.local_dir, n)) for n in TOKENIZER_FILES):
        return
    from transformers import AutoTokenizer

    try:
        own = AutoTokenizer.from_pretrained(teacher.local_dir).get_vocab()
    except Exception:  # tokenizer files transformers cannot load: nothing to compare with
        return
    token_of = {i: t for t, i in own.items()}
    for token, i in sorted(vocab.items(), key=lambda item: item[1]):
        if token_of.get(i, token) != token:
            raise TeacherError(
                f"tokenizer {tokenizer_uri} is not the tokenizer of teacher {teacher_uri}: id {i} is {token!r} in "
                f"it but {token_of[i]!r} in the tokenizer saved with the teacher, so the teacher would score "
                "another vocabulary; use the teacher's own tokenizer (leave --tokenizer unset)"
            )


def _first_line(e: Exception) -> str:
    """transformers' errors run to many lines (a list of 300 model types, upgrade advice): the first."""
    return (str(e).strip().splitlines() or [""])[0][:300]


def check_weight_shapes(uri: str, config, shapes: dict) -> None:
    """The safetensors headers against the model config.json describes (built on the meta device:
    no memory, no weights read), so weights from another model fail here with the tensor named,
    not as a `size mismatch` deep inside the first worker's model load."""
    if not shapes:
        return  # only .bin/.pt weights: their shapes are known once loaded
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as e:
        raise TeacherError(
            f"teacher {uri}: config.json does not describe a causal LM transformers can build "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from None
    prefix = f"{getattr(model, 'base_model_prefix', '') or '-'}."  # checkpoints of the bare base model lack it

    def bare(k: str) -> str:
        return k[len(prefix) :] if k.startswith(prefix) else k

    expected = {bare(k): tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = {bare(k): v for k, v in shapes.items()}
    common = [k for k in shapes if k in expected]
    if not common:
        raise TeacherError(
            f"teacher {uri}: none of the {len(shapes)} tensors in its weight files is a parameter of "
            f"the {type(model).__name__} its config.json describes (e.g. {next(iter(shapes))!r}): "
            "weights and config.json are from different models"
        )
    for k in common:
        if shapes[k][0] != expected[k]:
            raise TeacherError(
                f"teacher {uri}: tensor {k} in {shapes[k][1]} has shape {list(shapes[k][0])} but "
                f"config.json makes it {list(expected[k])}: weights and config.json are from "
                "different models"
            )


def prefetch_revision(uri: str):
    """Start fetching the checkpoint and hashing its weights (a sha256 over hundreds of MB) in a
    background thread, so the launcher's other checks overlap it; hand the future to
    `inspect_teacher`. Errors are left for `inspect_teacher` to report in order."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdistill-revision")

    def fetch_and_hash():
        local = storage.fetch_dir(uri)
        return local, teacher_revision(local)

    future = pool.submit(fetch_and_hash)
    pool.shutdown(wait=False)
    return future


def inspect_teacher(uri: str, tokenizer_len: int, tokenizer_uri: str, revision=None) -> TeacherInfo:
    """Fail fast (before any work) on an unreadable checkpoint or a vocabulary mismatch.
    `revision`: a future from `prefetch_revision(uri)`, else the hash is computed here."""
    from transformers import AutoConfig

    rev = None
    if revision is not None:  # wait for the prefetch: two concurrent fetch_dir downloads would collide
        try:
            local, rev = revision.result()
        except Exception:
            pass  # reported below, by the same calls, in order
    try:
        local = storage.fetch_dir(uri)
    except Exception as e:
        raise TeacherError(f"teacher {uri}: cannot read the checkpoint ({type(e).__name__}: {e})") from None
    if not os.path.isfile(os.path.join(local, "config.json")):
        raise TeacherError(
            f"teacher {uri}: no config.json in the checkpoint (a teacher is a Hugging Face model folder: "
            "config.json and weight files)"
        )
    try:
        config = AutoConfig.from_pretrained(local)
    except Exception as e:
        raise TeacherError(
            f"teacher {uri}: cannot read its config.json ({type(e).__name__}: {_first_line(e)})"
        ) from None
    weights = _weight_files(local)
    if not weights:
        raise TeacherError(f"teacher {uri}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in the checkpoint")
    params, shapes = 0, {}
    for name in weights:
        if name.endswith(".safetensors"):
            try:
                from safetensors import safe_open

                with safe_open(os.path.join(local, name), framework="numpy") as f:
                    for k in f.keys():
                        shapes[k] = (tuple(f.get_slice(k).get_shape()), name)
            except Exception as e:
                raise TeacherError(
                    f"teacher {uri}: weight file {name} is unreadable ({type(e).__name__}: {e})"
                ) from None
        else:
            params += os.path.getsize(os.path.join(local, name)) // 4
    params += sum(int(np.prod(shape)) for shape, _ in shapes.values())
    check_weight_shapes(uri, config, shapes)
    vocab = logits_dim(config)
    check_vocab(vocab, tokenizer_len, uri, tokenizer_uri)
    return TeacherInfo(local, vocab, rev or teacher_revision(local), forward_shape(config, vocab), params)


def resolve_device_dtype(device: str = "auto", dtype: str = "auto"):
    import torch

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
        from transformers import AutoModelForCausalLM

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
    ) -> list[KeptEntries | Unscored]:
        import torch

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
                out.append(tr.padded(int(tokens.shape[1])))  # padding: no teacher signal
        return out


class TeacherModelHandler(ModelHandler[Packed, PredictionResult, TeacherRunner]):
    """RunInference handler: Packed sequences in, PredictionResult(Packed, KeptEntries) out."""

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
            import torch

            return self.device != "cpu" and torch.cuda.is_available()
        return bool(self.share_model)

    def model_copies(self) -> int:
        """One copy per accelerator when shared (1 on a CPU-only machine)."""
        import torch

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
