"""Codec benchmark on a real teacher's distributions (SmolLM2-135M on stdlib prose).

For p in {0.9, 0.95, 1.0} x k in {20, 50, 100}, plus sampled selection, prints:
kept/token; stored bytes/token after MDS shard compression (zstd) for the compact and exact
codecs; the naive fixed-k layout (int32 id + fp32 value per slot) and its ratio to compact;
the nearest peers rebuilt from their documented formats on the same truncation (Megatron-LM:
17-bit ids + fp16 log-probs, zstd level 3; DistillKit: ids bit-packed at ceil(log2 V) bits +
bf16 values, fixed k); codec KL and total KL (nats/token); encode+decode tokens/s and its cost
relative to the teacher's forward pass on the same tokens.

Usage: python -m bench.codec [--teacher demo-lake/teacher] [--tokens 2048]
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np
import zstandard

from schemas import CompactCodec, ExactCodec, build_sample, mds_columns, sample_select, truncate_tensor
from schemas import fidelity
from schemas.codec import Decoded
from schemas.truncation import Truncated


def corpus_text(n_chars: int) -> str:
    import pydoc_data.topics as t

    return "\n\n".join(t.topics[k] for k in sorted(t.topics))[:n_chars]


def teacher_logits(teacher_dir: str, n_tokens: int, seq_len: int = 512):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir, torch_dtype=torch.float32).eval()
    ids = tok(corpus_text(n_tokens * 8), add_special_tokens=False)["input_ids"][:n_tokens]
    ids = torch.tensor(ids[: (len(ids) // seq_len) * seq_len]).reshape(-1, seq_len)
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = torch.cat([model(ids[i : i + 4]).logits for i in range(0, ids.shape[0], 4)])
    fwd_s = time.perf_counter() - t0
    return logits.reshape(-1, logits.shape[-1]), ids.numel() / fwd_s, seq_len


def mds_bytes(samples, columns) -> int:
    """Compressed shard bytes written by the real MDSWriter (zstd), excluding the index."""
    from streaming import MDSWriter

    with tempfile.TemporaryDirectory() as d:
        with MDSWriter(out=d, columns=columns, compression="zstd") as w:
            for s in samples:
                w.write(s)
        return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".zstd"))


def fixed_k(tr, k):
    """Dense [T, k] ids/logp in rank order, padded with the last kept entry (peers store fixed k)."""
    t = tr.counts.shape[0]
    ids = np.zeros((t, k), dtype=np.int64)
    lp = np.full((t, k), -30.0, dtype=np.float32)
    offs = tr.offsets()
    for r in range(t):
        c = tr.counts[r]
        ids[r, :c] = tr.ids[offs[r] : offs[r] + c]
        lp[r, :c] = tr.logp[offs[r] : offs[r] + c]
    return ids, lp


def bitpack(ids: np.ndarray, bits: int) -> bytes:
    b = ((ids.reshape(-1, 1) >> np.arange(bits)) & 1).astype(np.uint8)
    return np.packbits(b.reshape(-1)).tobytes()


def peers(tr, k, vocab, n_tok):
    ids, lp = fixed_k(tr, k)
    zc = zstandard.ZstdCompressor(level=3)
    megatron = zc.compress(bitpack(ids, 17) + lp.astype(np.float16).tobytes())
    bf16 = (lp.view(np.uint32) >> 16).astype(np.uint16)
    distillkit = bitpack(ids, math.ceil(math.log2(vocab))) + bf16.tobytes()
    return len(megatron) / n_tok, len(distillkit) / n_tok


def rows_of(tr: Truncated, start: int, stop: int) -> Truncated:
    offs = tr.offsets()
    return Truncated(tr.counts[start:stop], tr.ids[offs[start] : offs[stop]], tr.logp[offs[start] : offs[stop]],
                     tr.log_tail[start:stop])


def total_variation(logits_rows, dec: Decoded) -> float:
    """Mean TV distance between the full teacher and the stored distribution (tail ignored)."""
    z = logits_rows.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.zeros_like(p)
    pos = np.repeat(np.arange(p.shape[0]), dec.counts)
    q[pos, dec.ids] = np.exp(dec.logp)
    return float(0.5 * np.abs(p - q).sum(1).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="demo-lake/teacher")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--kl-rows", type=int, default=512, help="positions used for the (slow) total KL")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.teacher):
        from pdistill import teacher

        teacher.main(["import-gguf", "--output", args.teacher])
    logits, fwd_tps, seq_len = teacher_logits(args.teacher, args.tokens)
    n_tok, vocab = logits.shape
    print(f"teacher forward: {fwd_tps:,.0f} tokens/s on {n_tok} tokens, vocab {vocab}")
    full = 4 * vocab
    np_logits = logits.numpy()
    kl_rows = np_logits[: args.kl_rows]
    hdr = (
        f"{'select':>10} {'p':>5} {'k':>4} {'kept/tok':>8} {'compact B/tok':>13} {'exact B/tok':>11} "
        f"{'naive B/tok':>11} {'naive/compact':>13} {'megatron B/tok':>14} {'distillkit B/tok':>16} "
        f"{'codec KL':>9} {'total KL':>9} {'TV':>6} {'enc+dec tok/s':>13} {'vs fwd':>7}"
    )
    print(hdr)
    rows = [("top_p_k", p, k) for p in (0.9, 0.95, 1.0) for k in (20, 50, 100)] + [("sample", 1.0, 50)]
    for method, p, k in rows:
        if method == "top_p_k":
            tr = truncate_tensor(logits, p, k)
        else:
            tr = sample_select(np_logits, k, seed=0)
        compact, exact = CompactCodec(), ExactCodec()
        t0 = time.perf_counter()
        samples = []
        for s in range(0, n_tok, seq_len):
            sub = rows_of(tr, s, s + seq_len)
            enc = compact.encode(sub)
            compact.decode(sub.counts, enc)
            samples.append((sub, enc))
        codec_s = time.perf_counter() - t0
        cols = mds_columns(vocab, k)

        def rows_for(codec):
            return [
                build_sample(sample_id=i, tokens=np.zeros(seq_len, np.int64), n_tokens=seq_len,
                             doc_starts=np.zeros(1), truncated=sub, codec=codec, vocab_size=vocab, top_k=k, unit="b")
                for i, (sub, _) in enumerate(samples)
            ]

        tokens_only = mds_bytes([{**r, "teacher_ids": b"", "teacher_values": b"", "teacher_tail": b"",
                                  "teacher_counts": np.zeros(seq_len, np.uint8)} for r in rows_for(compact)], cols)
        c_bytes = (mds_bytes(rows_for(compact), cols) - tokens_only) / n_tok
        e_bytes = (mds_bytes(rows_for(exact), cols) - tokens_only) / n_tok
        naive = 8 * k
        tr_head = rows_of(tr, 0, args.kl_rows)
        dec = compact.decode(tr_head.counts, compact.encode(tr_head))
        ckl = fidelity.codec_kl(tr_head, dec)
        tkl = fidelity.total_kl(kl_rows, dec) if method == "top_p_k" else float("nan")
        tv = total_variation(kl_rows, dec)
        mg, dk = peers(tr, k, vocab, n_tok)
        enc_tps = n_tok / codec_s
        print(
            f"{method:>10} {p:>5} {k:>4} {fidelity.kept_per_token(tr.counts):>8.1f} {c_bytes:>13.1f} {e_bytes:>11.1f} "
            f"{naive:>11} {naive / c_bytes:>13.1f} {mg:>14.1f} {dk:>16.1f} {ckl:>9.2e} {tkl:>9.3f} {tv:>6.3f} "
            f"{enc_tps:>13,.0f} {fwd_tps / enc_tps:>6.1%}"
        )
    print(f"full fp32 logits: {full:,} B/token. Targets: codec KL <= 1e-3; naive/compact >= 6 at p=0.95,k=100; "
          "encode+decode < 5% of the forward pass.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
