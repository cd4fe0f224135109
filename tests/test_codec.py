"""Codec round trips, fidelity bounds, large vocabularies and corrupt payloads."""

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from schemas import CodecError, Compact2Codec, CompactCodec, ExactCodec, fidelity, make_codec, truncate, varint
from schemas.codec import renormalise
from schemas.kept import KeptEntries


def sort_by_id(tr):
    pos = np.repeat(np.arange(tr.counts.shape[0]), tr.counts)
    o = np.lexsort((tr.ids, pos))
    return tr.ids[o], renormalise(tr.logp, tr.counts)[o]


GOLDEN_COMPACT2 = (
    "7a8286b7b25b679fc7ee8e85e775aba1d824b479cc4f382b42d7146ff14959ad"  # compact2, mass_floor 0.75, constriction 0.5.0
)
GOLDEN_COMPACT2_FORMAT1 = "5500db4dcd0f526ec6ef0bbdb5a26a6c86045564f13e62d2d386e0b4bc846a9c"  # mass_floor 0

logits_strategy = hnp.arrays(
    np.float32, st.tuples(st.integers(1, 5), st.integers(2, 60)), elements=st.floats(-30, 30, width=32)
)


@settings(max_examples=150, deadline=None)
@given(
    z=logits_strategy,
    p=st.floats(0.05, 1.0),
    k=st.integers(1, 60),
    codec_name=st.sampled_from(["exact", "compact", "compact2"]),
)
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
    if codec_name == "compact2":  # tail log-mass to 1/16 nat
        np.testing.assert_allclose(d.log_tail, tr.log_tail, atol=1 / 32 + 1e-6)
    else:
        np.testing.assert_allclose(d.log_tail, tr.log_tail, atol=2e-3, rtol=2e-3)
    if codec_name == "exact":
        np.testing.assert_allclose(d.logp, lp, atol=1e-5)
    elif codec_name == "compact2":
        # the guarantee (tests/test_codec_kl_bound.py tries adversarial inputs)
        assert fidelity.codec_kl(tr, d) <= Compact2Codec().kl_bound() + 1e-6
    else:
        # error per entry at most half a step in the log domain, before renormalisation
        assert fidelity.codec_kl(tr, d) <= CompactCodec().kl_bound(k) + 1e-6


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
    for codec in (ExactCodec(), CompactCodec(), Compact2Codec()):
        d = codec.decode(tr.counts, codec.encode(tr))
        assert d.ids.max() == vocab - 1
        assert np.array_equal(d.ids, sort_by_id(tr)[0])


def test_ids_up_to_2_pow_32():
    ids = np.array([0, 5, (1 << 32) - 1], dtype=np.int64)
    tr = KeptEntries(
        np.array([3]), ids, np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32)), np.array([-np.inf], np.float32)
    )
    for codec in (ExactCodec(), CompactCodec(), Compact2Codec()):
        assert codec.decode(tr.counts, codec.encode(tr)).ids.tolist() == ids.tolist()


def test_padding_positions_have_no_entries():
    z = np.random.default_rng(2).standard_normal((4, 50)).astype(np.float32)
    tr = truncate(z, 0.9, 10)
    padded = KeptEntries(
        np.concatenate([tr.counts, [0, 0]]),
        tr.ids,
        tr.logp,
        np.concatenate([tr.log_tail, [-np.inf, -np.inf]]).astype(np.float32),
    )
    for codec in (CompactCodec(), Compact2Codec()):
        d = codec.decode(padded.counts, codec.encode(padded))
        assert d.counts.tolist()[-2:] == [0, 0] and d.ids.shape == tr.ids.shape
        assert np.isneginf(d.log_tail[-2:]).all()


def test_encoding_is_deterministic():
    z = np.random.default_rng(4).standard_normal((16, 300)).astype(np.float32)
    for codec in (CompactCodec(), Compact2Codec()):
        a, b = codec.encode(truncate(z, 0.95, 50)), codec.encode(truncate(z.copy(), 0.95, 50))
        assert a == b


def test_compact2_bytes_are_pinned():
    """The same input gives these exact bytes: a changed coder or model (e.g. a constriction
    upgrade) would strand every stored dataset, so it must show up here first."""
    z = (np.random.default_rng(6).standard_normal((64, 2000)) * 2.5).astype(np.float32)
    for mass_floor, golden in ((0.75, GOLDEN_COMPACT2), (0.0, GOLDEN_COMPACT2_FORMAT1)):
        cols = Compact2Codec(kl_target=7.5e-4, tail_step=1 / 16, mass_floor=mass_floor).encode(truncate(z, 0.95, 50))
        assert hashlib.sha256(b"".join(cols[k] for k in sorted(cols))).hexdigest() == golden


def test_compact2_is_smaller_than_compact_at_the_kl_target():
    rng = np.random.default_rng(0)
    z = (-1.2 * np.log(np.arange(1, 5001)) + rng.standard_normal((256, 5000)) * 1.5).astype(np.float32)
    tr = truncate(z, 0.95, 100)
    sizes = {}
    for codec in (CompactCodec(), Compact2Codec()):
        cols = codec.encode(tr)
        d = codec.decode(tr.counts, cols)
        assert fidelity.codec_kl(tr, d) < 1e-3
        sizes[codec.name] = sum(len(v) for v in cols.values())
    assert sizes["compact2"] < 0.75 * sizes["compact"]


def test_corrupt_payload_is_an_error():
    z = np.random.default_rng(5).standard_normal((4, 100)).astype(np.float32)
    tr = truncate(z, 0.9, 20)
    for codec in (ExactCodec(), CompactCodec(), Compact2Codec()):
        cols = codec.encode(tr)
        cols["teacher_values"] = cols["teacher_values"][:-1]
        with pytest.raises(CodecError, match="corrupt"):
            codec.decode(tr.counts, cols)
    cols = CompactCodec().encode(tr)
    cols["teacher_ids"] = cols["teacher_ids"][:-2]
    with pytest.raises(CodecError):
        CompactCodec().decode(tr.counts, cols)
    for col in ("teacher_ids", "teacher_values", "teacher_tail"):
        for cut in (1, 4, 9):
            cols = Compact2Codec().encode(tr)
            cols[col] = cols[col][:-cut]
            with pytest.raises(CodecError, match="corrupt"):
                Compact2Codec().decode(tr.counts, cols)
    cols = Compact2Codec().encode(tr)  # counts that do not match the payload
    with pytest.raises(CodecError, match="corrupt"):
        Compact2Codec().decode(tr.counts + 1, cols)


def test_codec_settings_errors():
    with pytest.raises(
        CodecError,
        match=r"unknown codec 'zip'; known: \['compact', 'compact2', 'compact3', 'compact4', 'compact5', 'exact'\]",
    ):
        make_codec("zip")
    with pytest.raises(CodecError, match="kl_target"):
        make_codec("compact2", {"kl_target": 0.0})
    assert make_codec("compact2", Compact2Codec(kl_target=1e-4).params()) == Compact2Codec(kl_target=1e-4)
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


def test_entropy_block_round_trip_and_refusals():
    from schemas import entropy

    rng = np.random.default_rng(7)
    own = [rng.geometric(0.3, 5000) - 1, np.zeros(7, np.int64), np.zeros(0, np.int64), np.array([3])]
    given = rng.integers(0, 50, 300)
    blk = entropy.encode([(s, None) for s in own] + [(given, np.ones(50))])
    dec = entropy.Decoder(blk, 5000)
    got = [dec.next() for _ in own] + [dec.next(np.ones(50), 300)]
    dec.finish()
    for a, b in zip(got, own + [given]):
        assert a.tolist() == list(b)
    # a stream coded under its own histogram costs about its empirical entropy
    p = np.bincount(own[0]) / own[0].shape[0]
    ideal_bits = -(own[0].shape[0] * p[p > 0] * np.log2(p[p > 0])).sum()
    assert len(entropy.encode([(own[0], None)])) * 8 < 1.05 * ideal_bits + 800
    with pytest.raises(CodecError, match="corrupt"):
        entropy.decode(blk[:-4], 4, 5000)
    with pytest.raises(CodecError, match="corrupt"):
        entropy.Decoder(blk[:3], 5000)
    with pytest.raises(CodecError, match="corrupt"):  # a stream longer than the caller allows
        entropy.decode(blk, 4, 100)
    with pytest.raises(CodecError, match="alphabet"):
        entropy.encode([(np.array([5]), np.ones(3))])


@settings(max_examples=60, deadline=None)
@given(
    col=st.sampled_from(["teacher_ids", "teacher_values", "teacher_tail"]),
    where=st.floats(0, 1),
    byte=st.integers(0, 255),
)
def test_compact2_damaged_bytes_fail_cleanly(col, where, byte):
    """A damaged payload is a CodecError or decodes to the right shapes; never a crash or a hang
    (silent damage inside the coded words is what the shards' xxh3 hashes catch)."""
    z = (np.random.default_rng(8).standard_normal((24, 400)) * 2.5).astype(np.float32)
    tr = truncate(z, 0.95, 30)
    codec = Compact2Codec()
    cols = codec.encode(tr)
    buf = bytearray(cols[col])
    i = min(int(where * len(buf)), len(buf) - 1)
    buf[i] = byte
    cols[col] = bytes(buf)
    try:
        d = codec.decode(tr.counts, cols)
    except CodecError:
        return
    assert d.ids.shape[0] == tr.counts.sum() and d.log_tail.shape == tr.log_tail.shape
