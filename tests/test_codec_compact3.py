"""compact3: compact2 plus the next token as a hint. Same decoded signal as compact2, fewer bytes
when the text's next token is a kept id, pinned bytes, clear errors without the tokens."""

import hashlib

import numpy as np
import pytest
from codec_damage import assert_damage_fails_cleanly
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from schemas import CodecError, Compact2Codec, Compact3Codec, build_sample, decode_sample, make_codec, truncate
from schemas.kept import KeptEntries

GOLDEN_COMPACT3 = (
    "e5c2f0ecca832efa3606a9291919fd59c622780d435aeca5a91542711b74b631"  # compact3, mass_floor 0.75, constriction 0.5.0
)
GOLDEN_COMPACT3_FORMAT1 = "9cb8e7fd6af3a4710ce26a6bb25ae0f2a87ae500cf103148c2099bc24ab717a4"  # mass_floor 0


def text_like(seed: int, t: int = 64, v: int = 3000, follow: float = 0.6):
    """Zipf-like logits and tokens where the next token is the top id with probability `follow`,
    another kept id or an unkept one otherwise (as on real text)."""
    rng = np.random.default_rng(seed)
    z = (-1.1 * np.log(np.arange(1, v + 1))[rng.permutation(v)] + rng.standard_normal((t, v)) * 2.0).astype(np.float32)
    tokens = rng.integers(0, v, t)
    for i in range(t - 1):
        r = rng.random()
        if r < follow:
            tokens[i + 1] = int(np.argmax(z[i]))
        elif r < follow + 0.2:
            tokens[i + 1] = int(np.argsort(-z[i])[rng.integers(1, 8)])
    return z, tokens


def test_compact3_decodes_what_compact2_decodes_in_fewer_bytes():
    z, tokens = text_like(0, t=256, follow=0.9)
    tr = truncate(z, 0.95, 50)
    c2, c3 = Compact2Codec(), Compact3Codec()
    cols2, cols3 = c2.encode(tr), c3.encode(tr, tokens=tokens)
    d2, d3 = c2.decode(tr.counts, cols2), c3.decode(tr.counts, cols3, tokens=tokens)
    assert (
        np.array_equal(d2.ids, d3.ids) and np.array_equal(d2.logp, d3.logp) and np.array_equal(d2.log_tail, d3.log_tail)
    )
    assert len(cols3["teacher_tail"]) < 0.8 * len(cols2["teacher_tail"])  # the tail as predicted by the levels
    saved_bits = 8 * (len(cols2["teacher_ids"]) - len(cols3["teacher_ids"]))
    assert saved_bits > 3 * 256  # per position; ~4.3 on a real teacher and real text (bench/codec)
    # text whose next token is never kept costs only a few stream headers more
    _, unrelated = text_like(0, t=256, follow=0.0)
    unrelated[1:] = z.shape[1] - 1 - np.argmax(z[:-1], axis=1)  # the least likely id: never kept
    assert len(c3.encode(tr, tokens=unrelated)["teacher_ids"]) <= len(cols2["teacher_ids"]) + 48
    # the tokens are part of the code: other tokens decode to other (wrong) ids, or fail
    other = tokens.copy()
    other[1:] = (other[1:] + 1) % z.shape[1]
    try:
        assert not np.array_equal(c3.decode(tr.counts, cols3, tokens=other).ids, d3.ids)
    except CodecError:
        pass


@settings(max_examples=120, deadline=None)
@given(
    z=hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(2, 50)), elements=st.floats(-30, 30, width=32)),
    p=st.floats(0.05, 1.0),
    k=st.integers(1, 50),
    follow=st.lists(st.integers(-1, 60), min_size=6, max_size=6),
    kl=st.sampled_from([1e-7, 7.5e-4, 0.1]),
)
def test_compact3_round_trip(z, p, k, follow, kl):
    """Any kept set, any tokens (a kept id at any rank, or not kept): compact2's decoded signal."""
    t, v = z.shape
    tr = truncate(z, p, min(k, v))
    order = np.argsort(-z, axis=1, kind="stable")
    tokens = np.array([order[i - 1, f % v] if f >= 0 and i else (f % v + 1) % v for i, f in enumerate(follow[:t])])
    c2, c3 = Compact2Codec(kl_target=kl), Compact3Codec(kl_target=kl)
    d2 = c2.decode(tr.counts, c2.encode(tr))
    d3 = c3.decode(tr.counts, c3.encode(tr, tokens=tokens), tokens=tokens)
    assert (
        np.array_equal(d2.ids, d3.ids) and np.array_equal(d2.logp, d3.logp) and np.array_equal(d2.log_tail, d3.log_tail)
    )


def test_compact3_through_the_sample_with_padding():
    """build_sample / decode_sample hand the sample's tokens to the codec; padding has no signal."""
    z, tokens = text_like(1, t=40)
    tr = truncate(z[:32], 0.95, 30)
    pad = 8
    padded = KeptEntries(
        np.concatenate([tr.counts, np.zeros(pad, np.int64)]),
        tr.ids,
        tr.logp,
        np.concatenate([tr.log_tail, np.full(pad, -np.inf, np.float32)]),
    )
    codec = make_codec("compact3")
    s = build_sample(
        sample_id=1,
        tokens=tokens,
        n_tokens=32,
        doc_starts=np.zeros(1),
        truncated=padded,
        codec=codec,
        vocab_size=3000,
        top_k=30,
        unit="u",
    )
    d = decode_sample(s, codec)
    ref = Compact2Codec().decode(padded.counts, Compact2Codec().encode(padded))
    assert np.array_equal(d.ids, ref.ids) and np.array_equal(d.logp, ref.logp)
    assert d.counts.tolist()[-pad:] == [0] * pad


def test_compact3_bytes_are_pinned():
    z, tokens = text_like(6, t=64, v=2000)
    for mass_floor, golden in ((0.75, GOLDEN_COMPACT3), (0.0, GOLDEN_COMPACT3_FORMAT1)):
        cols = Compact3Codec(kl_target=7.5e-4, tail_step=1 / 16, mass_floor=mass_floor).encode(
            truncate(z, 0.95, 50), tokens=tokens
        )
        assert hashlib.sha256(b"".join(cols[k] for k in sorted(cols))).hexdigest() == golden


def test_compact3_needs_the_tokens():
    z, tokens = text_like(2, t=8)
    tr = truncate(z, 0.9, 10)
    c3 = Compact3Codec()
    with pytest.raises(CodecError, match="needs the sample's tokens"):
        c3.encode(tr)
    cols = c3.encode(tr, tokens=tokens)
    with pytest.raises(CodecError, match="needs the sample's tokens"):
        c3.decode(tr.counts, cols)
    with pytest.raises(CodecError, match="7 tokens for 8 positions"):
        c3.decode(tr.counts, cols, tokens=tokens[:7])
    assert make_codec("compact3", {"kl_target": 5e-4}) == Compact3Codec(kl_target=5e-4)


@settings(max_examples=60, deadline=None)
@given(
    col=st.sampled_from(["teacher_ids", "teacher_values", "teacher_tail"]),
    where=st.floats(0, 1),
    byte=st.integers(0, 255),
)
def test_compact3_damaged_bytes_fail_cleanly(col, where, byte):
    z, tokens = text_like(8, t=24, v=400)
    assert_damage_fails_cleanly(Compact3Codec(), truncate(z, 0.95, 30), tokens, col, where, byte)


@pytest.mark.parametrize("vocab", [(1 << 18) + 5, 1 << 32])
def test_compact3_large_vocabularies(vocab):
    """Ids up to 2^32 - 1, hinted or not."""
    ids = np.array([0, 7, vocab - 1, 3, vocab - 1, 9], dtype=np.int64)
    tr = KeptEntries(
        np.array([3, 3]),
        ids,
        np.log(np.array([0.5, 0.3, 0.2, 0.6, 0.3, 0.1], np.float32)),
        np.array([-np.inf, -np.inf], np.float32),
    )
    for tokens in ([0, vocab - 1], [0, 1]):
        c3 = Compact3Codec()
        d = c3.decode(tr.counts, c3.encode(tr, tokens=np.array(tokens)), tokens=np.array(tokens))
        assert d.ids.tolist() == [0, 7, vocab - 1, 3, 9, vocab - 1]
