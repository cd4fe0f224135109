"""`pdistill inspect DATASET_URI`: what a distillation dataset holds and how faithful it is.

Without a teacher: manifest, counts (and whether they reconcile), kept entries/token, stored
teacher bytes/token (shard bytes on storage), mean dropped tail mass, and the codec's KL bound.
With `--teacher URI`: re-runs the teacher on the first samples and measures the codec KL
(fresh truncation vs what decodes from storage) and the total KL (full teacher vs stored + tail).
"""
from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from schemas import INDEX_NAME, MANIFEST_NAME, CodecError, Manifest, fidelity, make_codec, storage
from schemas.codec import Decoded
from schemas.sample import decode_sample


def load_manifest(uri: str) -> Manifest:
    for name in (MANIFEST_NAME, INDEX_NAME):
        if not storage.exists(storage.join(uri, name)):
            raise SystemExit(f"pdistill inspect: {uri} is incomplete: no {name} (the pipeline writes it last)")
    return Manifest.from_json(storage.read_text(storage.join(uri, MANIFEST_NAME)), where=storage.join(uri, MANIFEST_NAME))


def shard_bytes(uri: str) -> int:
    index = json.loads(storage.read_text(storage.join(uri, INDEX_NAME)))
    total = 0
    for shard in index["shards"]:
        data = shard.get("zip_data") or shard["raw_data"]
        total += int(data["bytes"])
    return total


def open_dataset(uri: str, local: str):
    from streaming import StreamingDataset

    if storage.is_local(uri):
        return StreamingDataset(local=storage.local_path(uri), batch_size=1, shuffle=False)
    return StreamingDataset(remote=uri, local=local, batch_size=1, shuffle=False)


def teacher_fidelity(teacher_uri: str, samples: list[dict], manifest: Manifest, codec) -> tuple[float, float]:
    """Mean (codec KL, total KL) over the samples' real positions, from a fresh teacher pass."""
    import torch
    from transformers import AutoModelForCausalLM

    from schemas import truncate_tensor

    model = AutoModelForCausalLM.from_pretrained(storage.fetch_dir(teacher_uri), torch_dtype=torch.float32).eval()
    codec_kls, total_kls = [], []
    for s in samples:
        n = int(s["n_tokens"])
        ids = torch.as_tensor(np.asarray(s["tokens"][:n], dtype=np.int64))[None]
        with torch.no_grad():
            logits = model(ids).logits[0, :, : manifest.vocab_size]
        fresh = truncate_tensor(logits, manifest.truncation.top_p, manifest.truncation.top_k)
        stored = decode_sample(s, codec)
        stored = Decoded(stored.counts[:n], stored.ids, stored.logp, stored.log_tail[:n])  # drop padding
        codec_kls.append(fidelity.codec_kl(fresh, stored))
        total_kls.append(fidelity.total_kl(logits.numpy(), stored))
    return float(np.mean(codec_kls)), float(np.mean(total_kls))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pdistill inspect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="dataset URI (local path, file://, gs://, s3://)")
    ap.add_argument("--samples", type=int, default=16, help="samples read for the statistics")
    ap.add_argument("--teacher", help="teacher checkpoint URI: also measure codec and total KL")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)

    m = load_manifest(args.dataset)
    try:
        codec = make_codec(m.codec.name, m.codec.params)
    except CodecError as e:
        raise SystemExit(f"pdistill inspect: {args.dataset}: {e}") from None
    with tempfile.TemporaryDirectory() as local:
        ds = open_dataset(args.dataset, local)
        samples = [ds[i] for i in range(min(args.samples, len(ds)))]
        kept = np.concatenate([np.asarray(s["teacher_counts"]) for s in samples]) if samples else np.zeros(0)
        tails = []
        for s in samples:
            d = decode_sample(s, codec)
            tails.append(np.exp(d.log_tail[d.counts > 0]))
        report = {
            "uri": args.dataset,
            "schema_version": m.schema_version,
            "teacher": m.teacher.id,
            "vocab_size": m.vocab_size,
            "seq_len": m.seq_len,
            "truncation": f"{m.truncation.method} p={m.truncation.top_p} k={m.truncation.top_k}",
            "codec": f"{m.codec.name} {m.codec.params}",
            "counts": m.counts.__dict__,
            "counts_reconcile": m.counts.reconciles(),
            "sequences_in_index": len(ds),
            "kept_per_token": fidelity.kept_per_token(kept),
            "stored_bytes_per_token": fidelity.bytes_per_token(shard_bytes(args.dataset), m.counts.tokens),
            "mean_tail_mass": float(np.concatenate(tails).mean()) if tails else float("nan"),
        }
        report.update(fidelity.storage_report(codec, report["stored_bytes_per_token"], report["kept_per_token"]))
        if args.teacher:
            report["codec_kl"], report["total_kl"] = teacher_fidelity(args.teacher, samples, m, codec)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:>24}: {v}")
    return 0 if report["counts_reconcile"] and report["sequences_in_index"] == m.counts.sequences else 1
