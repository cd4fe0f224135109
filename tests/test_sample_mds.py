"""A sample round trip through the real streaming.MDSWriter and StreamingDataset."""

import numpy as np
import pytest

from schemas import Compact2Codec, CompactCodec, build_sample, decode_dense, mds_columns, sample_id, truncate
from schemas.identity import fingerprint_tokenizer, tokenizer_fingerprint
from schemas.kept import KeptEntries
from schemas.sample import token_dtype

streaming = pytest.importorskip("streaming")


def make_samples(n, seq_len=16, vocab=300, k=8, codec=None):
    rng = np.random.default_rng(0)
    codec = codec or CompactCodec()
    out, truth = [], []
    for i in range(n):
        n_tok = seq_len if i < n - 1 else seq_len - 5  # the last one is padded
        z = rng.standard_normal((n_tok, vocab)).astype(np.float32) * 3
        tr = truncate(z, 0.9, k)
        pad = seq_len - n_tok
        tr_full = KeptEntries(
            np.concatenate([tr.counts, np.zeros(pad, np.int64)]),
            tr.ids,
            tr.logp,
            np.concatenate([tr.log_tail, np.full(pad, -np.inf, np.float32)]),
        )
        tokens = np.concatenate([rng.integers(0, vocab, n_tok), np.zeros(pad, np.int64)])
        sid = sample_id("sha256:src", "u00000-00000", i)
        out.append(
            build_sample(
                sample_id=sid,
                tokens=tokens,
                n_tokens=n_tok,
                doc_starts=np.array([0, 3]),
                truncated=tr_full,
                codec=codec,
                vocab_size=vocab,
                top_k=k,
                unit="u00000-00000",
            )
        )
        truth.append((sid, tokens, tr_full))
    return out, truth


@pytest.mark.parametrize("codec", [CompactCodec(), Compact2Codec()], ids=lambda c: c.name)
def test_mds_round_trip(tmp_path, codec):
    from streaming import MDSWriter, StreamingDataset

    samples, truth = make_samples(5, codec=codec)
    with MDSWriter(out=str(tmp_path / "ds"), columns=mds_columns(300, 8), compression="zstd", hashes=["xxh3_64"]) as w:
        for s in samples:
            w.write(s)
    ds = StreamingDataset(local=str(tmp_path / "ds"), batch_size=1, shuffle=False)
    assert len(ds) == 5
    for i, (sid, tokens, tr) in enumerate(truth):
        got = ds[i]
        assert int(got["sample_id"]) == sid
        assert got["tokens"].dtype == token_dtype(300)
        assert np.array_equal(got["tokens"], tokens)
        dense = decode_dense(got, codec, 8)
        assert dense.ids.shape == (16, 8)
        assert np.array_equal(dense.mask.sum(1), tr.counts)
        np.testing.assert_allclose(dense.log_tail, tr.log_tail, atol=1 / 32 + 1e-6)
        # masked slots are -inf, valid slots sum to one
        assert np.isneginf(dense.logp[~dense.mask]).all()
        rows = tr.counts > 0
        np.testing.assert_allclose(np.exp(np.where(dense.mask, dense.logp, -np.inf)).sum(1)[rows], 1, rtol=1e-5)
    assert int(ds[4]["n_tokens"]) == 11


def test_sample_ids_are_stable_and_distinct():
    a = sample_id("sha256:src", "u00001-00000", 3)
    assert a == sample_id("sha256:src", "u00001-00000", 3)
    assert len({sample_id("s", "u", i) for i in range(1000)}) == 1000
    assert a != sample_id("sha256:src", "u00001-00000", 4) != sample_id("sha256:other", "u00001-00000", 3)
    assert 0 <= a < 1 << 64


def test_wide_vocab_uses_uint32_tokens():
    assert mds_columns(1 << 16, 50)["tokens"] == "ndarray:uint16"
    assert mds_columns((1 << 16) + 1, 50)["tokens"] == "ndarray:uint32"
    assert mds_columns(262_144, 300)["teacher_counts"] == "ndarray:uint16"


def test_tokenizer_fingerprint():
    class Tok:
        all_special_tokens = ["<eos>"]

        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    a = fingerprint_tokenizer(Tok({"a": 0, "b": 1}))
    assert a == fingerprint_tokenizer(Tok({"b": 1, "a": 0}))
    assert a != fingerprint_tokenizer(Tok({"a": 1, "b": 0}))
    assert tokenizer_fingerprint({"a": 0}).startswith("sha256:")
