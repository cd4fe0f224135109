"""The MDS sample: one packed sequence of `seq_len` tokens with its teacher signal.

Columns (MDS encodings; the token and count dtypes follow the vocab size and top_k):
  sample_id       uint64          stable hash of (source fingerprint, unit, index in unit)
  tokens          ndarray:<tok>   [seq_len] token ids, padded with `pad_id` after n_tokens
  n_tokens        uint32          number of real tokens (the rest is padding, masked everywhere)
  doc_starts      json            list of offsets where a document begins inside this sequence (may be
                                  empty: a sequence inside a long document; MDS ndarrays cannot be empty)
  teacher_counts  ndarray:<cnt>   [seq_len] kept entries per position (0 on padding)
  teacher_ids     bytes           codec payload (see schemas.codecs)
  teacher_values  bytes           codec payload
  teacher_tail    bytes           codec payload
  unit            str             the work unit that produced the sample (provenance)
  teacher_next_logp bytes         the teacher's log-probability of each actual next token
                                  (`schemas.next_logp`, format nl1); absent in datasets written
                                  before it existed (`decode_next_logp` gives None for them)

Position t carries the teacher's distribution of the token at t + 1 given tokens[: t + 1].
Decoding to dense arrays is `decode_dense` (`KeptEntries.to_dense`): numpy only, used by the trainer's dataset.
The next-token column follows the same convention: next_logp[t] = log p(tokens[t + 1] | tokens[: t + 1]).
"""

from __future__ import annotations

import numpy as np

from schemas import next_logp as next_logp_codec
from schemas.errors import CodecError, SchemaError
from schemas.kept import DenseTeacher, KeptEntries


def token_dtype(vocab_size: int) -> np.dtype:
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise SchemaError(f"vocab_size {vocab_size} exceeds 2**32")


def count_dtype(top_k: int) -> np.dtype:
    return np.dtype(np.uint8) if top_k <= 255 else np.dtype(np.uint16) if top_k <= 65535 else np.dtype(np.uint32)


NEXT_LOGP_COLUMN = "teacher_next_logp"


def mds_columns(vocab_size: int, top_k: int, *, next_logp: bool = False) -> dict[str, str]:
    """The MDS `columns` mapping for a dataset with this vocabulary and top_k; `next_logp`: with
    the `teacher_next_logp` column (the pipeline writes it; every sample must then carry it)."""
    extra = {NEXT_LOGP_COLUMN: "bytes"} if next_logp else {}
    return {
        "sample_id": "uint64",
        "tokens": f"ndarray:{token_dtype(vocab_size).name}",
        "n_tokens": "uint32",
        "doc_starts": "json",
        "teacher_counts": f"ndarray:{count_dtype(top_k).name}",
        "teacher_ids": "bytes",
        "teacher_values": "bytes",
        "teacher_tail": "bytes",
        "unit": "str",
        **extra,
    }


def build_sample(
    *,
    sample_id: int,
    tokens: np.ndarray,
    n_tokens: int,
    doc_starts: np.ndarray,
    truncated: KeptEntries,
    codec,
    vocab_size: int,
    top_k: int,
    unit: str,
    next_logp: np.ndarray | None = None,
) -> dict:
    """Assemble one MDS sample dict; positions past n_tokens carry no teacher signal.
    `next_logp`: float32 [seq_len] (NaN from n_tokens - 1 on), stored as `teacher_next_logp`
    (write it with `mds_columns(..., next_logp=True)`); None: the sample has no such column."""
    seq_len = int(tokens.shape[0])
    if truncated.num_positions != seq_len:
        raise SchemaError(
            f"sample {sample_id}: teacher signal has {truncated.num_positions} positions, tokens {seq_len}"
        )
    if (truncated.counts[n_tokens:] != 0).any():
        raise SchemaError(f"sample {sample_id}: teacher signal on padding positions")
    return {
        "sample_id": np.uint64(sample_id),
        "tokens": np.asarray(tokens, dtype=token_dtype(vocab_size)),
        "n_tokens": np.uint32(n_tokens),
        "doc_starts": [int(x) for x in np.asarray(doc_starts).reshape(-1)],
        "teacher_counts": np.asarray(truncated.counts, dtype=count_dtype(top_k)),
        **(codec.encode(truncated, tokens=tokens) if codec.needs_tokens else codec.encode(truncated)),
        "unit": unit,
        **({} if next_logp is None else {NEXT_LOGP_COLUMN: _encode_next_logp(sample_id, next_logp, n_tokens, seq_len)}),
    }


def _encode_next_logp(sample_id: int, values: np.ndarray, n_tokens: int, seq_len: int) -> bytes:
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    if values.shape[0] != seq_len:
        raise SchemaError(f"sample {sample_id}: next_logp has {values.shape[0]} positions, tokens {seq_len}")
    if not np.isnan(values[max(int(n_tokens) - 1, 0) :]).all():
        raise SchemaError(f"sample {sample_id}: next_logp has a value past the last real token's position")
    try:
        return next_logp_codec.encode(values)
    except CodecError as e:
        raise SchemaError(f"sample {sample_id}: {e}") from None


def decode_next_logp(sample: dict) -> np.ndarray | None:
    """float32 [seq_len] teacher log-probabilities of the actual next tokens (NaN where none),
    within `schemas.next_logp.bound()` nats; None for a sample written before the column existed."""
    data = sample.get(NEXT_LOGP_COLUMN)
    if data is None:
        return None
    seq_len = int(np.asarray(sample["tokens"]).shape[0])
    where = (
        f"sample {int(sample['sample_id'])}: column {NEXT_LOGP_COLUMN}" if "sample_id" in sample else NEXT_LOGP_COLUMN
    )
    return next_logp_codec.decode(data, seq_len, where=where)


def decode_sample(sample: dict, codec) -> KeptEntries:
    counts = np.asarray(sample["teacher_counts"], dtype=np.int64)
    cols = {k: sample[k] for k in ("teacher_ids", "teacher_values", "teacher_tail")}
    if codec.needs_tokens:  # compact3 on: the next token is part of the code (`schemas.codecs.Codec`)
        return codec.decode(counts, cols, tokens=sample["tokens"])
    return codec.decode(counts, cols)


def decode_dense(sample: dict, codec, k: int) -> DenseTeacher:
    """One MDS sample's teacher signal as dense [T, K] arrays with a validity mask."""
    return decode_sample(sample, codec).to_dense(k)
