"""Codec round trips, fidelity bounds, large vocabularies and corrupt payloads."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from schemas import CodecError, CompactCodec, ExactCodec, make_codec, truncate
from schemas import fidelity, varint
from schemas.codec import renormalise
from schemas.truncation import Truncated


def sort_by_id(tr):
    pos = np.repeat(np.arange(tr.counts.shape[0]), tr.counts)
    o = np.lexsort((tr.ids, pos))
    return tr.ids[o], renormalise(tr.logp, tr.counts)[o]


logits_strategy = hnp.arrays(
    np.float32, st.tuples(st.integers(1, 5), st.integers(2, 60)), elements=st.floats(-30, 30, width=32)
)


@settings(max_examples=150, deadline=None)
@given(z=logits_strategy, p=st.floats(0.05, 1.0), k=st.integers(1, 60), codec_name=st.sampled_from(["exact", "compact"]))
def test_round_trip(z, p, k, codec_name):
    k = min(k, z.shape[1])
    tr = truncate(z, p, k)
    codec = make_codec(codec_name)
    d = codec.decode(tr.counts, codec.encode(tr))
    ids, lp = sort_by_id(tr)
    assert np.array_equal(d.ids, ids)
    assert np.array_equal(d.counts, tr.counts)
    # decoded log-probs are normalised over each position's kept set
    np.testing.assert_allclose(np.add.reduceat(np.exp(d.logp.astype(np.float64)), d.offsets()[:-1]), 1.0, rtol=1e-5)
    np.testing.assert_allclose(d.log_tail, tr.log_tail, atol=2e-3, rtol=2e-3)
    if codec_name == "exact":
        np.testing.assert_allclose(d.logp, lp, atol=1e-5)
    else:
        # error per entry at most half a step in the log domain, before renormalisation
        assert fidelity.codec_kl(tr, d) <= 0.5 * (1 / 32) ** 2 + 1e-6


def test_compact_kl_on_realistic_logits_is_below_target():
    rng = np.random.default_rng(0)
    # Zipf-like logits: a few likely ids, a long tail
    z = (-1.2 * np.log(np.arange(1, 5001)) + rng.standard_normal((256, 5000)) * 1.5).astype(np.float32)
    tr = truncate(z, 0.95, 100)
    d = CompactCodec().decode(tr.counts, CompactCodec().encode(tr))
    assert fidelity.codec_kl(tr, d) < 1e-3
    assert 0 < fidelity.total_kl(z, d) < 1.0
    # exact codec adds no error; total error is then the truncation's alone
    e = ExactCodec().decode(tr.counts, ExactCodec().encode(tr))
    assert fidelity.codec_kl(tr, e) < 1e-9


@pytest.mark.parametrize("vocab", [(1 << 17) + 5, (1 << 18) + 5, 262_144])
def test_vocabularies_beyond_17_and_18_bits(vocab):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((8, vocab)).astype(np.float32)
    z[:, -3:] += 12.0  # the highest ids are the most likely
    tr = truncate(z, 0.99, 20)
    for codec in (ExactCodec(), CompactCodec()):
        d = codec.decode(tr.counts, codec.encode(tr))
        assert d.ids.max() == vocab - 1
        assert np.array_equal(d.ids, sort_by_id(tr)[0])


def test_ids_up_to_2_pow_32():
    ids = np.array([0, 5, (1 << 32) - 1], dtype=np.int64)
    tr = Truncated(np.array([3]), ids, np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32)), np.array([-np.inf], np.float32))
    for codec in (ExactCodec(), CompactCodec()):
        assert codec.decode(tr.counts, codec.encode(tr)).ids.tolist() == ids.tolist()


def test_padding_positions_have_no_entries():
    z = np.random.default_rng(2).standard_normal((4, 50)).astype(np.float32)
    tr = truncate(z, 0.9, 10)
    padded = Truncated(
        np.concatenate([tr.counts, [0, 0]]), tr.ids, tr.logp, np.concatenate([tr.log_tail, [-np.inf, -np.inf]]).astype(np.float32)
    )
    d = CompactCodec().decode(padded.counts, CompactCodec().encode(padded))
    assert d.counts.tolist()[-2:] == [0, 0] and d.ids.shape == tr.ids.shape


def test_encoding_is_deterministic():
    z = np.random.default_rng(4).standard_normal((16, 300)).astype(np.float32)
    a, b = CompactCodec().encode(truncate(z, 0.95, 50)), CompactCodec().encode(truncate(z.copy(), 0.95, 50))
    assert a == b


def test_corrupt_payload_is_an_error():
    z = np.random.default_rng(5).standard_normal((4, 100)).astype(np.float32)
    tr = truncate(z, 0.9, 20)
    for codec in (ExactCodec(), CompactCodec()):
        cols = codec.encode(tr)
        cols["teacher_values"] = cols["teacher_values"][:-1]
        with pytest.raises(CodecError, match="corrupt"):
            codec.decode(tr.counts, cols)
    cols = CompactCodec().encode(tr)
    cols["teacher_ids"] = cols["teacher_ids"][:-2]
    with pytest.raises(CodecError):
        CompactCodec().decode(tr.counts, cols)


def test_codec_settings_errors():
    with pytest.raises(CodecError, match="unknown codec"):
        make_codec("zip")
    with pytest.raises(CodecError, match="bad parameters"):
        make_codec("compact", {"stepp": 0.1})
    with pytest.raises(CodecError, match="step"):
        CompactCodec(step=0)
    with pytest.raises(CodecError, match="value_dtype"):
        ExactCodec(value_dtype="int8")


@given(st.lists(st.integers(0, (1 << 35) - 1), max_size=200))
def test_varint_round_trip(values):
    arr = np.array(values, dtype=np.uint64)
    assert varint.decode(varint.encode(arr), len(values)).tolist() == values
