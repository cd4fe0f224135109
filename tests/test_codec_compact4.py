"""compact4: compact3 plus the kept set where the same tokens were seen before. Same decoded
signal as compact2, fewer bytes when the text repeats itself, pinned bytes, clear errors."""

import hashlib

import numpy as np
import pytest
from codec_damage import assert_damage_fails_cleanly
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from schemas import (
    CodecError,
    Compact2Codec,
    Compact3Codec,
    Compact4Codec,
    build_sample,
    decode_sample,
    make_codec,
    truncate,
)
from schemas.codec_compact4 import predictors
from schemas.kept import KeptEntries

# compact4, constriction 0.5.0; the same with mass_floor 0 (format 1): no position of this input keeps < 3/4 of the mass
GOLDEN_COMPACT4 = "4b51b4fdf02f4a9609a0f1132d1e21466c54296eafebf510c96b11b600c9e3b7"


def repeating_text(seed: int, t: int = 256, v: int = 3000, n_words: int = 40):
    """Prose-like tokens drawn from a small working vocabulary (so tokens and token pairs recur),
    and logits that depend on the current and previous token plus noise, as a teacher's do."""
    rng = np.random.default_rng(seed)
    words = rng.choice(v, n_words, replace=False)
    tokens = words[np.minimum(rng.zipf(1.3, t), n_words) - 1]
    prior = -1.1 * np.log(np.arange(1, v + 1))[rng.permutation(v)]
    by_token = rng.standard_normal((v, v)).astype(np.float32) if v <= 4000 else None
    z = np.empty((t, v), dtype=np.float32)
    for i in range(t):
        z[i] = (
            prior + 2.0 * by_token[tokens[i]] + 0.7 * by_token[tokens[i - 1] if i else 0] + 0.3 * rng.standard_normal(v)
        )
    return z, tokens


def _same_signal(a, b):
    return np.array_equal(a.ids, b.ids) and np.array_equal(a.logp, b.logp) and np.array_equal(a.log_tail, b.log_tail)


def test_compact4_decodes_what_compact2_decodes_in_fewer_bytes():
    z, tokens = repeating_text(0, v=1500)
    tr = truncate(z, 0.95, 50)
    c4 = Compact4Codec()
    c2, c3 = Compact2Codec(kl_target=c4.kl_target), Compact3Codec(kl_target=c4.kl_target)  # compact4's own default
    cols3, cols4 = c3.encode(tr, tokens=tokens), c4.encode(tr, tokens=tokens)
    d2, d4 = c2.decode(tr.counts, c2.encode(tr)), c4.decode(tr.counts, cols4, tokens=tokens)
    assert _same_signal(d2, d4)
    assert cols4["teacher_tail"] == cols3["teacher_tail"]
    assert len(cols4["teacher_values"]) < len(cols3["teacher_values"])  # drops under the level above them
    # recurring contexts: ids kept before at the same tokens cost far less than dictionary ids
    saved_bits = 8 * (len(cols3["teacher_ids"]) - len(cols4["teacher_ids"]))
    assert saved_bits > 1.0 * tr.ids.shape[0]
    # text with no recurring token has no predictor: a few empty stream headers more than compact3
    distinct = np.arange(tokens.shape[0]) * 5
    assert (predictors(distinct, tr.counts)[0] == -1).all()
    assert len(c4.encode(tr, tokens=distinct)["teacher_ids"]) <= len(c3.encode(tr, tokens=distinct)["teacher_ids"]) + 24
    # the tokens are part of the code: other tokens decode to other (wrong) ids, or fail
    try:
        assert not _same_signal(c4.decode(tr.counts, cols4, tokens=(tokens + 1) % 1500), d4)
    except CodecError:
        pass


def test_predictors_are_the_last_earlier_match():
    """Same two tokens first, else the same token; positions without signal neither predict nor
    are predicted."""
    tokens = np.array([5, 7, 5, 7, 9, 7, 5, 7, 7])
    counts = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1])
    s_of, kind = predictors(tokens, counts)
    assert s_of.tolist() == [-1, -1, 0, 1, -1, -1, 2, 3, 7]
    assert kind.tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 1]  # (7, 5) at 6 was seen at 2, though 5 had no signal


@settings(max_examples=120, deadline=None)
@given(
    z=hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(2, 40)), elements=st.floats(-30, 30, width=32)),
    p=st.floats(0.05, 1.0),
    k=st.integers(1, 40),
    words=st.lists(st.integers(0, 4), min_size=12, max_size=12),
    pad=st.integers(0, 3),
    kl=st.sampled_from([1e-7, 7.5e-4, 0.1]),
)
def test_compact4_round_trip(z, p, k, words, pad, kl):
    """Any kept sets, any recurring tokens (repeats of repeats, hinted ids at the predictor),
    padding without signal: compact2's decoded signal."""
    t, v = z.shape
    tr = truncate(z, p, min(k, v))
    tokens = np.array(words[:t]) % v
    tr = KeptEntries(
        np.concatenate([tr.counts, np.zeros(pad, np.int64)]),
        tr.ids,
        tr.logp,
        np.concatenate([tr.log_tail, np.full(pad, -np.inf, np.float32)]),
    )
    tokens = np.concatenate([tokens, np.zeros(pad, np.int64)])
    c2, c4 = Compact2Codec(kl_target=kl), Compact4Codec(kl_target=kl)
    d2 = c2.decode(tr.counts, c2.encode(tr))
    assert _same_signal(d2, c4.decode(tr.counts, c4.encode(tr, tokens=tokens), tokens=tokens))


def test_compact4_repeats_of_repeats():
    """One distribution over and over: each position repeats its predictor, which repeats its
    own (pointer chains the length of the sample)."""
    rng = np.random.default_rng(3)
    z = np.tile(rng.standard_normal(300).astype(np.float32) * 3, (64, 1))
    tokens = np.full(64, 7)
    tr = truncate(z, 0.99, 40)
    c4 = Compact4Codec()
    c2 = Compact2Codec(kl_target=c4.kl_target)
    cols = c4.encode(tr, tokens=tokens)
    assert _same_signal(c2.decode(tr.counts, c2.encode(tr)), c4.decode(tr.counts, cols, tokens=tokens))
    assert len(cols["teacher_ids"]) < 0.2 * len(
        Compact3Codec(kl_target=c4.kl_target).encode(tr, tokens=tokens)["teacher_ids"]
    )  # ~0.1


def test_compact4_one_position_predicting_two():
    """A position kept with 50 ids is the predictor of two later ones (of "7 3" by its two tokens,
    of "9 3" by its token alone): 101 repeat flags for 55 entries. The decoder once capped every
    stream at the entry count and refused this valid sample as corrupt (a written dataset that no
    trainer could read)."""
    tokens = np.array([7, 3, 9, 3, 7, 3])
    z = np.full((6, 300), -30.0, dtype=np.float32)
    z[1, :50] = np.linspace(3.0, 0.0, 50)  # position 1: 50 ids kept
    for i in (0, 2, 3, 4, 5):
        z[i, 100 + i] = 10.0  # the others: one
    tr = truncate(z, 0.999, 60)
    assert tr.counts.tolist() == [1, 50, 1, 1, 1, 1]
    s_of, _ = predictors(tokens, tr.counts)
    assert s_of[3] == 1 and s_of[5] == 1
    c4 = Compact4Codec()
    c2 = Compact2Codec(kl_target=c4.kl_target)
    assert _same_signal(
        c2.decode(tr.counts, c2.encode(tr)), c4.decode(tr.counts, c4.encode(tr, tokens=tokens), tokens=tokens)
    )


def test_compact4_through_the_sample():
    z, tokens = repeating_text(1, t=48, v=600)
    tr = truncate(z, 0.95, 30)
    codec = make_codec("compact4")
    s = build_sample(
        sample_id=1,
        tokens=tokens,
        n_tokens=48,
        doc_starts=np.zeros(1),
        truncated=tr,
        codec=codec,
        vocab_size=600,
        top_k=30,
        unit="u",
    )
    c2 = Compact2Codec(kl_target=codec.kl_target)
    assert _same_signal(decode_sample(s, codec), c2.decode(tr.counts, c2.encode(tr)))


def test_compact4_bytes_are_pinned():
    z, tokens = repeating_text(6, t=64, v=800)
    for mass_floor in (0.75, 0.0):
        cols = Compact4Codec(kl_target=7.5e-4, tail_step=1 / 16, mass_floor=mass_floor).encode(
            truncate(z, 0.95, 50), tokens=tokens
        )
        assert hashlib.sha256(b"".join(cols[k] for k in sorted(cols))).hexdigest() == GOLDEN_COMPACT4


def test_compact4_needs_the_tokens():
    z, tokens = repeating_text(2, t=8, v=300)
    tr = truncate(z, 0.9, 10)
    c4 = Compact4Codec()
    with pytest.raises(CodecError, match="needs the sample's tokens"):
        c4.encode(tr)
    cols = c4.encode(tr, tokens=tokens)
    with pytest.raises(CodecError, match="needs the sample's tokens"):
        c4.decode(tr.counts, cols)
    with pytest.raises(CodecError, match="7 tokens for 8 positions"):
        c4.decode(tr.counts, cols, tokens=tokens[:7])
    assert make_codec("compact4", {"kl_target": 5e-4}) == Compact4Codec(kl_target=5e-4)


@settings(max_examples=60, deadline=None)
@given(
    col=st.sampled_from(["teacher_ids", "teacher_values", "teacher_tail"]),
    where=st.floats(0, 1),
    byte=st.integers(0, 255),
)
def test_compact4_damaged_bytes_fail_cleanly(col, where, byte):
    z, tokens = repeating_text(8, t=24, v=400)
    assert_damage_fails_cleanly(Compact4Codec(), truncate(z, 0.95, 30), tokens, col, where, byte)


@pytest.mark.parametrize("vocab", [(1 << 18) + 5, 1 << 32])
def test_compact4_large_vocabularies(vocab):
    """Ids up to 2^32 - 1, hinted, repeated or from the dictionary."""
    ids = np.array([0, 7, vocab - 1, 3, vocab - 1, 9, vocab - 1, 7, 0], dtype=np.int64)
    p = np.log(np.array([0.5, 0.3, 0.2, 0.6, 0.3, 0.1, 0.5, 0.3, 0.2], np.float32))
    tr = KeptEntries(np.array([3, 3, 3]), ids, p, np.full(3, -np.inf, np.float32))
    for tokens in ([5, vocab - 1, 5], [5, 1, 5], [vocab - 1, vocab - 1, vocab - 1]):
        c4 = Compact4Codec()
        d = c4.decode(tr.counts, c4.encode(tr, tokens=np.array(tokens)), tokens=np.array(tokens))
        assert d.ids.tolist() == [0, 7, vocab - 1, 3, 9, vocab - 1, 0, 7, vocab - 1]


def test_entropy_tables_and_per_symbol_models():
    """compact4's entropy pieces: histograms carried in the header, symbols each under its own
    row of counts, decoded in order; a row without counts is refused, not mis-decoded."""
    from schemas import entropy

    rows = np.array([[3, 1, 0], [0, 2, 5], [1, 1, 1], [9, 1, 0]])
    sym = np.array([0, 2, 1, 0])
    buf = entropy.encode([(entropy.TABLE, np.array([4, 0, 2])), (sym, rows), (np.array([1, 1, 0]), None)])
    dec = entropy.Decoder(buf, 8)
    assert dec.table().tolist() == [4, 0, 2]
    assert dec.rows(rows.astype(np.float64)).tolist() == sym.tolist()
    assert dec.next().tolist() == [1, 1, 0]
    dec.finish()
    with pytest.raises(CodecError, match="outside its model"):
        entropy.encode([(np.array([2]), np.array([[1, 1, 0]]))])  # a symbol its row gives no count
    dec = entropy.Decoder(buf, 8)
    dec.table()
    with pytest.raises(CodecError, match="corrupt sample"):
        dec.rows(np.zeros((4, 3)))
