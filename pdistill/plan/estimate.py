"""From a measured sample to the whole lake: the teacher pass on the sample, then extrapolation
with a bootstrap interval, then accelerator time from a stated throughput model.

The sample's teacher pass is the real `pdistill logits` job (`pipelines.job.run`, same settings)
on the sampled documents written to a temporary JSONL lake: kept entries per token, bytes per
token on storage with the chosen codec, and tokens/s come from the pipeline's own output and
metrics, not from a re-implementation.

Estimators (all ratios, so long and short documents weigh by their size):
  * text bytes, documents, dead letters of the units read are exact (`pdistill.plan.sample`); units not
    read take the read units' values per byte on storage;
  * tokens = (mean text tokens per UTF-8 byte over the size-proportional draws) x text bytes
    + one separator (and BOS) per usable document;
  * sequences: each unit packs on its own, so per unit ceil(tokens / seq_len);
  * document lengths (tokens per document): every read document's UTF-8 size x that tokens/byte
    (`document_lengths`);
  * dataset bytes = tokens x the sample's stored bytes per token (shard files, as `pdistill
    inspect` counts them); shards per part from the sample's uncompressed bytes per sequence and
    the writer's shard size limit.
Uncertainty: a bootstrap over the draws (tokens per byte), the sample's sequences
(kept entries per token, which drive bytes per token) and, when some units were not read, the
read units; the interval is the 5th-95th percentile.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import zstandard

from pdistill.plan.sample import LakeSample
from schemas import INDEX_NAME, storage
from schemas.errors import ConfigError

SHARD_SIZE_LIMIT = 1 << 26  # streaming.MDSWriter's default size_limit, which pipelines.sink uses
BOOTSTRAP = 1000
# Vendor data-sheet peak dense bf16 throughput (T4: fp16), TFLOP/s.
PEAK_TFLOPS = {"h100": 989.0, "a100": 312.0, "l4": 121.0, "t4": 65.0}
DEFAULT_MFU = 0.4  # realised utilisation of inference prefill is typically 30-60 %


@dataclass
class SampleRun:
    """What the real teacher pass measured on the sampled documents."""

    doc_tokens: np.ndarray  # per sampled document: tokens incl. separator (and BOS)
    doc_bytes: np.ndarray  # per sampled document: UTF-8 bytes
    seq_tokens: np.ndarray  # per sample sequence: real tokens
    seq_kept: np.ndarray  # per sample sequence: kept teacher entries
    stored_bytes: int  # shard bytes on storage
    raw_bytes: int  # uncompressed shard bytes
    counts: dict  # the sample dataset's manifest counts
    tokens_per_s: float  # teacher tokens/s on this device
    seconds: float


def write_sample_lake(docs: list[tuple[str, int, str]], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for _, _, text in docs:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


def run_sample(config, sample: LakeSample, workdir: str, extra_args: list[str] | None = None) -> SampleRun:
    """The real teacher pass over the sampled documents into `workdir` (one work unit)."""
    from pipelines.job import run  # noqa: PLC0415 (late: Beam is heavy)
    from pipelines.packing import encode_texts, load_tokenizer  # noqa: PLC0415 (late: Beam is heavy)

    os.makedirs(workdir, exist_ok=True)
    lake = os.path.join(workdir, "sample.jsonl")
    write_sample_lake(sample.docs, lake)
    out = os.path.join(workdir, "dataset")
    cfg = config.replace(
        inputs=[lake],
        output=out,
        format="jsonl",
        text_column="text",
        bytes_per_unit=os.path.getsize(lake) + 1,
        progress=False,
        runner="DirectRunner",
        runner_config={},
    )  # on this machine, whatever the target runner
    report = run(cfg, extra_args)
    tok = load_tokenizer(config.tokenizer_uri)
    texts = [t for _, _, t in sample.docs]
    per_doc_extra = 1 + (1 if config.add_bos else 0)
    ids = encode_texts(texts, tok) if texts else []  # as the pipeline tokenizes them
    doc_tokens = np.asarray([len(i) + per_doc_extra for i in ids], dtype=np.float64)
    doc_bytes = np.asarray([len(t.encode("utf-8")) for t in texts], dtype=np.float64)
    index = json.loads(storage.read_text(os.path.join(out, INDEX_NAME)))
    stored = sum(int((s.get("zip_data") or s["raw_data"])["bytes"]) for s in index["shards"])
    raw = sum(int(s["raw_data"]["bytes"]) for s in index["shards"])
    seq_tokens, seq_kept = _sequence_stats(out)
    rate = report.metrics.get("teacher_tokens_per_s") or report.summary["tokens"] / max(report.seconds, 1e-9)
    return SampleRun(
        doc_tokens, doc_bytes, seq_tokens, seq_kept, stored, raw, dict(report.summary), float(rate), report.seconds
    )


def _sequence_stats(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: real tokens and kept entries. Read with streaming's `LocalDataset` from a
    decompressed copy: no shared memory, which a StreamingDataset on a busy machine can find taken."""
    from streaming.base.local import LocalDataset  # noqa: PLC0415 (late: streaming imports torch)

    index = json.loads(storage.read_text(os.path.join(dataset, INDEX_NAME)))
    n, k = [], []
    with tempfile.TemporaryDirectory(prefix="pdistill-plan-read-") as tmp:
        for shard in index["shards"]:
            raw, zipped = shard["raw_data"]["basename"], (shard.get("zip_data") or {}).get("basename")
            dst = os.path.join(tmp, raw)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if zipped:
                with open(os.path.join(dataset, zipped), "rb") as f, open(dst, "wb") as g:
                    zstandard.ZstdDecompressor().copy_stream(f, g)
            else:
                shutil.copyfile(os.path.join(dataset, raw), dst)
        shutil.copyfile(os.path.join(dataset, INDEX_NAME), os.path.join(tmp, INDEX_NAME))
        ds = LocalDataset(tmp)
        samples = [ds[i] for i in range(len(ds))]
    for s in samples:
        n.append(int(s["n_tokens"]))
        k.append(int(np.asarray(s["teacher_counts"]).sum()))
    return np.asarray(n, dtype=np.float64), np.asarray(k, dtype=np.float64)


# -- extrapolation ------------------------------------------------------------------------------


def _unit_arrays(sample: LakeSample):
    read = {r.name: r for r in sample.read}
    names = [u.name for u in sample.units]
    s = np.asarray([sample.unit_bytes[n] for n in names], dtype=np.float64)
    is_read = np.asarray([n in read for n in names])
    cols = {}
    for key in ("documents", "dead_letters", "good", "text_bytes"):
        cols[key] = np.asarray([getattr(read[n], key) if n in read else 0 for n in names], dtype=np.float64)
    return s, is_read, cols


def extrapolate(sample: LakeSample, run: SampleRun, seq_len: int, add_bos: bool, rng_seed: int = 0) -> dict:
    """Point estimates and 90 % bootstrap intervals of the full run's counts and bytes."""
    s, is_read, cols = _unit_arrays(sample)
    extra = 1 + (1 if add_bos else 0)
    ratio = np.repeat((run.doc_tokens - extra) / np.maximum(1.0, run.doc_bytes), sample.draws)
    raw_per_seq = run.raw_bytes / max(1, len(run.seq_tokens))
    bpt = run.stored_bytes / max(1.0, run.seq_tokens.sum())
    kpt = run.seq_kept.sum() / max(1.0, run.seq_tokens.sum())
    read_idx = np.flatnonzero(is_read)

    def estimate(r_tok: float, kpt_b: float, unit_pick: np.ndarray) -> dict:
        per_byte = {k: v[unit_pick].sum() / max(1.0, s[unit_pick].sum()) for k, v in cols.items()}
        full = {k: np.where(is_read, v, s * per_byte[k]) for k, v in cols.items()}
        tokens_u = r_tok * full["text_bytes"] + extra * full["good"]
        seqs_u = np.ceil(tokens_u / seq_len - 1e-9)
        shards_u = np.where(seqs_u > 0, np.maximum(1, np.ceil(seqs_u * raw_per_seq / SHARD_SIZE_LIMIT)), 0)
        tokens = tokens_u.sum()
        return {
            "documents": full["documents"].sum(),
            "dead_letters": full["dead_letters"].sum(),
            "tokens": tokens,
            "sequences": seqs_u.sum(),
            "dataset_bytes": tokens * bpt * (kpt_b / kpt if kpt else 1),
            "incomplete_files": sample.incomplete_files(),
            "parts": float(len(s)),
            "shards": shards_u.sum(),
            "kept_per_token": kpt_b,
            "bytes_per_token": bpt * (kpt_b / kpt if kpt else 1),
            "tokens_per_byte": r_tok,
            "largest_unit_tokens": tokens_u.max() if len(tokens_u) else 0.0,
        }

    point = estimate(float(ratio.mean()), kpt, read_idx)
    rng = np.random.default_rng(rng_seed)
    reps = []
    nd, ns = len(ratio), len(run.seq_tokens)
    resample_units = (~is_read).any() and len(read_idx) > 1
    for _ in range(BOOTSTRAP):
        d = rng.integers(0, nd, nd)
        q = rng.integers(0, ns, ns)
        r_b = float(ratio[d].mean())
        k_b = run.seq_kept[q].sum() / max(1.0, run.seq_tokens[q].sum())
        u = read_idx[rng.integers(0, len(read_idx), len(read_idx))] if resample_units else read_idx
        reps.append(estimate(r_b, k_b, u))
    out = {}
    for key, value in point.items():
        arr = np.asarray([r[key] for r in reps])
        lo, hi = np.percentile(arr, [5, 95])
        out[key] = {"estimate": float(value), "low": float(min(lo, value)), "high": float(max(hi, value))}
    return out


def document_lengths(doc_bytes, tokens_per_byte: float, seq_len: int) -> dict:
    """The lake's document-length distribution in tokens: every usable document of the read units
    (their UTF-8 sizes are exact) times the draws' tokens per byte.

    Not the drawn documents' own token counts: the draws are size-proportional, so they stand for
    tokens, not documents, and reweighting a handful of them by 1/size is all noise (on the demo
    corpus 5 draws gave a median of 49 tokens against 320)."""
    b = np.sort(np.asarray(doc_bytes, dtype=np.float64))
    if not len(b):
        return {}
    t = b * tokens_per_byte
    long = t > seq_len
    return {
        "how": "UTF-8 bytes of every usable document in the read units x the draws' tokens per byte",
        "documents": int(len(t)),
        "mean": float(t.mean()),
        **{f"p{q}": float(np.percentile(t, q)) for q in (10, 50, 90, 99)},
        "max": float(t[-1]),
        "share_longer_than_seq_len": float(long.mean()),
        "token_share_in_longer_than_seq_len": float(t[long].sum() / max(1e-9, t.sum())),
        "seq_len": int(seq_len),
    }


# -- throughput ---------------------------------------------------------------------------------


def teacher_shape(local_dir: str) -> dict:
    """Parameters (counted on the meta device: no weights are loaded), layers and width."""
    import torch  # noqa: PLC0415 (late: torch is heavy)
    from transformers import AutoConfig, AutoModelForCausalLM  # noqa: PLC0415 (late: torch is heavy)

    cfg = AutoConfig.from_pretrained(local_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return {
        "params": int(sum(p.numel() for p in model.parameters())),
        "layers": int(text.num_hidden_layers),
        "width": int(text.hidden_size),
    }


def throughput(
    *,
    measured_tps: float,
    seq_len: int,
    shape: dict,
    tokens_per_second: float | None = None,
    gpu: str | None = None,
    mfu: float | None = None,
) -> dict:
    """Teacher tokens/s on the target accelerator, and which model gave it."""
    flops = 2 * shape["params"] + 2 * shape["layers"] * seq_len * shape["width"]
    base = {"flops_per_token": float(flops), **shape, "measured_tokens_per_s_here": measured_tps}
    if tokens_per_second is not None:
        if tokens_per_second <= 0:
            raise ConfigError(f"--tokens-per-second must be > 0, got {tokens_per_second}")
        return {
            **base,
            "model": "given",
            "tokens_per_s": float(tokens_per_second),
            "how": f"--tokens-per-second {tokens_per_second:g} per accelerator, as given",
        }
    if gpu is not None:
        key = gpu.lower().replace("-", "").replace(" ", "").removesuffix("sxm")
        if key not in PEAK_TFLOPS:
            raise ConfigError(
                f"--gpu {gpu!r}: unknown accelerator (known: {', '.join(sorted(PEAK_TFLOPS))}); "
                "give --tokens-per-second instead"
            )
        mfu = DEFAULT_MFU if mfu is None else mfu
        if not 0 < mfu <= 1:
            raise ConfigError(f"--mfu must be in (0, 1], got {mfu}")
        tps = PEAK_TFLOPS[key] * 1e12 * mfu / flops
        return {
            **base,
            "model": "flops",
            "gpu": key,
            "peak_tflops": PEAK_TFLOPS[key],
            "mfu": mfu,
            "tokens_per_s": tps,
            "how": (
                f"FLOPs model: {PEAK_TFLOPS[key]:g} TFLOP/s peak ({key}) x MFU {mfu:g} / "
                f"(2 x {shape['params']:,} params + 2 x {shape['layers']} layers x {seq_len} seq_len x "
                f"{shape['width']} width) FLOPs/token"
            ),
        }
    return {
        **base,
        "model": "measured",
        "tokens_per_s": measured_tps,
        "how": f"measured on this machine's {_device()} during the sample's teacher pass",
    }


def _device() -> str:
    try:
        import torch  # noqa: PLC0415 (late: optional dependency)

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        return f"CPU ({torch.get_num_threads()} threads)"
    except ImportError:
        return "CPU"


def time_and_cost(pred: dict, tps: float, workers: int, price_per_hour: float | None) -> dict:
    """Accelerator-hours, wall hours for `workers` accelerators, and cost, over the tokens interval.
    Wall time: the work spread evenly, but never less than the largest unit (a unit is one task)."""
    out = {}
    keys = ("estimate", "low", "high")
    hours = {k: pred["tokens"][k] / tps / 3600 for k in keys}
    out["accelerator_hours"] = hours
    out["wall_hours"] = {k: max(hours[k] / workers, pred["largest_unit_tokens"][k] / tps / 3600) for k in keys}
    if price_per_hour is not None:
        out["cost"] = {k: v * price_per_hour for k, v in hours.items()}
    return out
