"""Tiny distillation datasets, tokenizers and models for the trainer tests (no Beam, no hub).

Everything is built offline: a word-level tokenizer with the `tokenizers` library, tiny Llama
models from a config, and MDS datasets laid out exactly as the pipeline writes them:

    <out>/parts/<unit>/index.json + shard.NNNNN.mds.zstd
    <out>/index.json      root index, shard basenames rewritten to parts/<unit>/<basename>
    <out>/manifest.json   written last
"""

from __future__ import annotations

import json
import os

import numpy as np

from schemas import (
    DEFAULT_CODEC,
    INDEX_NAME,
    MANIFEST_NAME,
    PARTS_DIR,
    Manifest,
    build_sample,
    fingerprint_tokenizer,
    make_codec,
    mds_columns,
    sample_id,
    sample_select,
    truncate,
)
from schemas.manifest import Codec, Counts, Source, Teacher, Tokenizer, Truncation

N_WORDS = 60  # + 4 specials = vocab 64


def make_tokenizer(out_dir: str | None = None, n_words: int = N_WORDS, variant: int = 0):
    """A word-level HF fast tokenizer; `variant` changes the vocabulary (for mismatch tests)."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<unk>", "<s>", "</s>"]
    words = [f"w{i + variant * 1000}" for i in range(n_words)]
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = HFTok(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<|endoftext|>"
    )
    if out_dir:
        hf.save_pretrained(out_dir)
    return hf


def tiny_llama_config(vocab_size: int = 64, hidden: int = 32, layers: int = 2, seq_len: int = 64) -> dict:
    return {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": max(seq_len, 64),
        "tie_word_embeddings": False,
        "attention_dropout": 0.0,
    }


def make_teacher(out_dir: str, tokenizer, seed: int = 1234, vocab_size: int = 64):
    """A tiny random Llama saved as an ordinary HF checkpoint (with its tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = tiny_llama_config(vocab_size, hidden=48, layers=2)
    cfg.pop("model_type")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**cfg))
    with torch.no_grad():  # sharpen the distributions a little so that top-p keeps few entries
        model.lm_head.weight.mul_(8.0)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def teacher_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(tokens, dtype=torch.long)[None]).logits[0]
    return out.float().numpy()


def write_dataset(
    out: str,
    tokenizer,
    *,
    n_samples: int = 32,
    seq_len: int = 16,
    vocab_size: int = 64,
    top_p: float = 0.95,
    top_k: int = 8,
    codec: str = DEFAULT_CODEC,
    codec_params: dict | None = None,
    teacher=None,
    units: int = 2,
    size_limit: int = 1 << 12,
    seed: int = 0,
    pad_every: int = 5,
    source: str = "sha256:test-source",
    write_manifest: bool = True,
    write_root_index: bool = True,
    compression: str | None = "zstd",
    selection: str = "top_p_k",
) -> dict:
    """Write a complete dataset; returns {"manifest", "sample_ids" (global order), "tokens"}.

    Teacher signal from `teacher` (an HF causal LM, run per sequence on its real tokens) or from
    random logits. Every `pad_every`-th sequence is short (padded), the rest are full.
    ``selection="sample"`` stores sampled teacher signal as `pdistill logits --selection sample
    --num-draws top_k` does (`schemas.sample_select`, log(count / draws), no tail).
    """
    from streaming import MDSWriter

    rng = np.random.default_rng(seed)
    cdc = make_codec(codec, codec_params or {})
    fp = fingerprint_tokenizer(tokenizer)
    columns = mds_columns(vocab_size, top_k)
    per_unit = [n_samples // units + (1 if u < n_samples % units else 0) for u in range(units)]
    ids, all_tokens, shards, n_tok_total = [], [], [], 0
    for u, count in enumerate(per_unit):
        unit = f"u{u:05d}-00000"
        part = os.path.join(out, PARTS_DIR, unit)
        with MDSWriter(
            out=part, columns=columns, compression=compression, hashes=["xxh3_64"], size_limit=size_limit
        ) as w:
            for i in range(count):
                gi = len(ids)
                n_tok = seq_len - 1 - (gi % 4) if pad_every and gi % pad_every == pad_every - 1 else seq_len
                toks = rng.integers(4, vocab_size, n_tok)
                logits = (
                    teacher_logits(teacher, toks)
                    if teacher is not None
                    else rng.standard_normal((n_tok, vocab_size)).astype(np.float32) * 3
                )
                if selection == "sample":
                    tr = sample_select(logits, top_k, seed=gi).padded(seq_len)
                else:
                    tr = truncate(logits, top_p, top_k).padded(seq_len)
                tokens = np.concatenate([toks, np.zeros(seq_len - n_tok, np.int64)])
                sid = sample_id(source, unit, i)
                w.write(
                    build_sample(
                        sample_id=sid,
                        tokens=tokens,
                        n_tokens=n_tok,
                        doc_starts=np.array([0]),
                        truncated=tr,
                        codec=cdc,
                        vocab_size=vocab_size,
                        top_k=top_k,
                        unit=unit,
                    )
                )
                ids.append(sid)
                all_tokens.append(tokens)
                n_tok_total += n_tok
        with open(os.path.join(part, INDEX_NAME)) as f:
            part_index = json.load(f)
        for shard in part_index["shards"]:
            for key in ("raw_data", "zip_data"):
                if shard.get(key):
                    shard[key]["basename"] = f"{PARTS_DIR}/{unit}/{shard[key]['basename']}"
            shards.append(shard)
    if write_root_index:
        with open(os.path.join(out, INDEX_NAME), "w") as f:
            json.dump({"version": 2, "shards": shards}, f)
    manifest = Manifest(
        teacher=Teacher(id="tiny-teacher" if teacher is not None else "random", revision="sha256:0"),
        tokenizer=Tokenizer(fingerprint=fp, separator_id=0, add_bos=False),
        vocab_size=vocab_size,
        seq_len=seq_len,
        truncation=Truncation(method=selection, top_p=1.0 if selection == "sample" else top_p, top_k=top_k),
        codec=Codec(name=cdc.name, params=cdc.params()),
        sources=[Source(uri="memory://test", fingerprint=source)],
        source_fingerprint=source,
        settings_fingerprint="sha256:settings",
        counts=Counts(
            documents=n_samples,
            packed_documents=n_samples,
            dead_letters=0,
            sequences=n_samples,
            tokens=n_tok_total,
            units=units,
        ),
    )
    if write_manifest:
        with open(os.path.join(out, MANIFEST_NAME), "w") as f:
            f.write(manifest.to_json())
    return {"manifest": manifest, "sample_ids": ids, "tokens": all_tokens}
