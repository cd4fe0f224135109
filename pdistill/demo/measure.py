"""The demo's `measure` stage: the teacher checkpoint itself, on the held-out sequences.

Its held-out LM loss (computed as the students' `LanguageCrossEntropy` is), its held-out bits per
byte from its stored pass (`teacher_heldout_bpb`: the reference for every student's
`metrics/eval/BitsPerByte`, whatever its tokenizer), the bare forward + truncation rate on the
pipeline's batch shape (no Beam), the codec's fidelity against the stored samples, and the storage
figures of the train dataset.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM

import schemas
from pdistill.demo.pipeline import dataset_bytes, read_samples
from pdistill.demo.scale import Scale
from schemas import fidelity
from schemas.errors import IncompatibleDataset
from schemas.redact import redact_uri
from schemas.sample import decode_next_logp
from schemas.token_bytes import token_bytes
from trainer.bits_per_byte import teacher_bits_per_byte


def _batches(samples: list[dict], batch: int):
    for i in range(0, len(samples), batch):
        yield samples[i : i + batch]


def teacher_heldout_bpb(heldout: Path, samples: list[dict] | None = None) -> float:
    """The teacher's own held-out bits per byte, from its stored pass: the teacher_next_logp column
    and the teacher's tokenizer files stored with the dataset (`samples`: its stored samples when
    already read). IncompatibleDataset, naming the dataset, when it was written without them."""
    d = schemas.DatasetDir(str(heldout))
    lengths = token_bytes(d.tokenizer_json(d.read_manifest())).lengths
    rows = []
    for r in read_samples(heldout) if samples is None else samples:
        next_logp = decode_next_logp(r)
        if next_logp is None:
            raise IncompatibleDataset(
                f"dataset {redact_uri(str(heldout))}: no teacher_next_logp column (written before pdistill "
                "stored it); re-run the pipeline for the teacher's bits per byte"
            )
        rows.append((np.asarray(r["tokens"]), int(r["n_tokens"]), next_logp))
    return teacher_bits_per_byte(rows, lengths)


def stage_measure(lake: Path, scale: Scale) -> dict:
    torch.set_num_threads(os.cpu_count() or 2)
    teacher = AutoModelForCausalLM.from_pretrained(str(lake / "teacher"), torch_dtype=torch.float32).eval()
    man = schemas.DatasetDir(str(lake / "heldout")).read_manifest()
    codec = schemas.DatasetDir(str(lake / "heldout")).stored_codec(man)
    held = read_samples(lake / "heldout")
    train = read_samples(lake / "logits")  # for the storage figures

    # 1. held-out LM loss, token-weighted like the students' LanguageCrossEntropy:
    #    position t predicts tokens[t + 1] for t + 1 < n_tokens.
    # 2. the bare forward rate, timed on the same loop: the same model, batch size and sequence
    #    length as the pipeline, forward + top-p-k truncation of every sequence, no Beam.
    nll, count = 0.0, 0
    bare_tokens, bare_secs = 0, 0.0
    fid = {"codec_kl": [], "total_kl": [], "kept": [], "ids_match": 0, "checked": 0}
    groups = list(_batches(held, scale.pipeline_batch))
    top_p, top_k = man.truncation.top_p, man.truncation.top_k
    with torch.no_grad():
        for i, group in enumerate(tqdm(groups, desc="teacher on held-out", unit="batch")):
            toks = torch.tensor(np.stack([np.asarray(s["tokens"], dtype=np.int64) for s in group]))
            t0 = time.perf_counter()
            logits = teacher(input_ids=toks, use_cache=False).logits.float()
            truncs = [
                schemas.truncate_tensor(logits[b, : int(s["n_tokens"])], top_p, top_k) for b, s in enumerate(group)
            ]
            dt = time.perf_counter() - t0
            if i > 0 or len(groups) == 1:  # the first batch warms up
                bare_tokens += int(toks.numel())
                bare_secs += dt
            for b, s in enumerate(group):
                n = int(s["n_tokens"])
                if n >= 2:
                    lp = torch.log_softmax(logits[b, : n - 1], -1).gather(-1, toks[b, 1:n, None])
                    nll -= float(lp.sum())
                    count += n - 1
                if fid["checked"] < scale.fidelity_sequences and n >= 1:
                    # the stored sample against the teacher's own distribution at the same positions
                    tr = truncs[b]
                    dec_n = schemas.decode_sample(s, codec).head(n)  # drop padding
                    fid["codec_kl"].append(fidelity.codec_kl(tr, dec_n))
                    fid["total_kl"].append(fidelity.total_kl(logits[b, :n].numpy(), dec_n))
                    fid["kept"].append(fidelity.kept_per_token(tr.counts))
                    same = np.array_equal(np.sort(tr.ids), np.sort(dec_n.ids)) and np.array_equal(
                        tr.counts, dec_n.counts
                    )
                    fid["ids_match"] += int(same)
                    fid["checked"] += 1
    teacher_loss = nll / max(count, 1)

    # 3. storage: dataset bytes on disk, and the teacher signal's own bytes before zstd
    n_tokens = sum(int(s["n_tokens"]) for s in train)
    signal = sum(
        len(s["teacher_ids"])
        + len(s["teacher_values"])
        + len(s["teacher_tail"])
        + np.asarray(s["teacher_counts"]).nbytes
        for s in train
    )
    kept_all = np.concatenate([np.asarray(s["teacher_counts"])[: int(s["n_tokens"])] for s in train])
    return {
        "teacher_heldout_loss": teacher_loss,
        "teacher_heldout_bpb": teacher_heldout_bpb(lake / "heldout", held),
        "teacher_heldout_ppl": math.exp(teacher_loss),
        "teacher_heldout_tokens": count,
        "bare_forward_tokens_per_s": bare_tokens / bare_secs if bare_secs else float("nan"),
        "bare_forward_tokens": bare_tokens,
        "bare_threads": torch.get_num_threads(),
        "fidelity": {
            "sequences": fid["checked"],
            "codec_kl_nats": float(np.mean(fid["codec_kl"])) if fid["codec_kl"] else float("nan"),
            "total_kl_nats": float(np.mean(fid["total_kl"])) if fid["total_kl"] else float("nan"),
            "kept_per_token": float(np.mean(fid["kept"])) if fid["kept"] else float("nan"),
            "ids_match_recomputed": fid["ids_match"],
        },
        "storage": {
            "tokens": n_tokens,
            "dataset_bytes": dataset_bytes(lake / "logits"),
            "signal_bytes_raw": int(signal),
            "kept_entries_per_token": float(kept_all[kept_all > 0].mean()) if kept_all.size else float("nan"),
            "vocab_size": man.vocab_size,
            "top_k": man.truncation.top_k,
        },
    }
