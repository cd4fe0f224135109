"""compact5: compact4 primed with a dataset's prime. It decodes exactly compact2's signal, spends
fewer bytes than compact4 where the prime holds the same text, pins its bytes, and its prime file
refuses damage."""

import hashlib

import numpy as np
import pytest
from codec_damage import assert_damage_fails_cleanly
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_codec_compact4 import _same_signal, repeating_text

from schemas import CodecError, Compact2Codec, Compact4Codec, make_codec, make_stored_codec, truncate
from schemas.codec_compact5 import Compact5Codec, Prime
from schemas.kept import KeptEntries

# compact5 over repeating_text(11): the prime its first 96 tokens, the sample the next 64; constriction 0.5.0
GOLDEN_COMPACT5 = "9e482661d40106bd6f6024b375043afb0ab38607ba021cd199e20cf2b6e5e983"


def _split(seed: int, n_prime: int, n_sample: int, p: float = 0.95, k: int = 50, v: int = 800):
    """One prose-like text: the prime from its first n_prime tokens (two windows), the sample after."""
    z, tokens = repeating_text(seed, t=n_prime + n_sample, v=v)
    tr = truncate(z, p, k)
    offs = tr.offsets()
    part = lambda a, b: KeptEntries(
        tr.counts[a:b], tr.ids[offs[a] : offs[b]], tr.logp[offs[a] : offs[b]], tr.log_tail[a:b]
    )  # noqa: E731
    half = n_prime // 2
    prime = Prime.from_signal([(tokens[:half], part(0, half)), (tokens[half:n_prime], part(half, n_prime))])
    return prime, part(n_prime, n_prime + n_sample), tokens[n_prime:]


def test_compact5_decodes_compact2s_signal_in_fewer_bytes_than_compact4():
    prime, tr, tokens = _split(0, 512, 128, v=1500)
    c5 = Compact5Codec(prime=prime)
    c4, c2 = Compact4Codec(), Compact2Codec(kl_target=c5.kl_target)
    cols5, cols4 = c5.encode(tr, tokens=tokens), c4.encode(tr, tokens=tokens)
    assert _same_signal(c2.decode(tr.counts, c2.encode(tr)), c5.decode(tr.counts, cols5, tokens=tokens))
    n5, n4 = sum(map(len, cols5.values())), sum(map(len, cols4.values()))
    assert n5 < 0.9 * n4, (n5, n4)  # 0.83 on this text


def test_compact5_params_name_the_prime():
    """A writer's settings name the prime's size; a manifest adds its SHA-256, and a reader handed
    another prime, or none, refuses instead of decoding against it."""
    prime, tr, tokens = _split(1, 64, 8)
    other, _, _ = _split(2, 64, 8)
    settings = make_codec("compact5", {"prime_tokens": 4096})
    assert settings.params() == {"kl_target": 8e-4, "tail_step": 1 / 16, "mass_floor": 0.75, "prime_tokens": 4096}
    primed = settings.with_prime(prime)
    assert primed.params()["prime_sha256"] == prime.digest != other.digest
    assert Prime.from_bytes(prime.to_bytes()).digest == prime.digest
    stored = make_stored_codec("compact5", primed.params())  # as a reader builds it from the manifest
    cols = primed.encode(tr, tokens=tokens)
    assert _same_signal(
        stored.with_prime(prime).decode(tr.counts, cols, tokens=tokens), primed.decode(tr.counts, cols, tokens=tokens)
    )
    with pytest.raises(CodecError, match="no prime loaded"):
        stored.decode(tr.counts, cols, tokens=tokens)
    with pytest.raises(CodecError, match="gs://b/ds/codec_prime.bin: its SHA-256 .* coded against another prime"):
        stored.with_prime(other, where="gs://b/ds/codec_prime.bin")
    with pytest.raises(CodecError, match="prime_tokens must be an integer"):
        make_codec("compact5", {"prime_tokens": 0})
    with pytest.raises(CodecError, match="prime_sha256 must be 64 hex digits"):
        make_codec("compact5", {"prime_sha256": "abc"})


def test_predictors_reach_into_the_prime():
    """Two tokens before one, the sample before the prime: the sample's first position follows a
    separator, like a document start in the prime."""
    one = lambda i: KeptEntries(
        np.array([1]), np.array([i]), np.array([0.0], np.float32), np.array([-np.inf], np.float32)
    )  # noqa: E731
    cat = lambda parts: KeptEntries(
        np.concatenate([p.counts for p in parts]),
        np.concatenate([p.ids for p in parts]),  # noqa: E731
        np.concatenate([p.logp for p in parts]),
        np.concatenate([p.log_tail for p in parts]),
    )
    prime = Prime.from_signal(
        [(np.array([5, 6, 7]), cat([one(50), one(60), one(70)])), (np.array([6, 7]), cat([one(61), one(71)]))]
    )
    assert prime.tokens.tolist() == [5, 6, 7, -1, 6, 7, -1]
    c5 = Compact5Codec(prime=prime)
    s_src, kind, src = c5._sources(np.array([6, 7, 9, 7]), np.array([1, 1, 1, 1]))
    # t0 (-1, 6): the prime's position 4; t1 (6, 7): position 5; t2: none; t3 (9, 7): no pair, token 7 at t1
    assert s_src.tolist() == [0, 1, -1, 2 + 1] and kind.tolist() == [0, 0, 0, 1]
    assert src.known_ids.tolist() == [61, 71] and src.q == 2


@settings(max_examples=80, deadline=None)
@given(
    z=hnp.arrays(np.float32, st.tuples(st.integers(2, 24), st.integers(2, 40)), elements=st.floats(-30, 30, width=32)),
    p=st.floats(0.05, 1.0),
    k=st.integers(1, 40),
    words=st.lists(st.integers(0, 4), min_size=24, max_size=24),
    cut=st.integers(1, 23),
    pad=st.integers(0, 3),
)
def test_compact5_round_trip(z, p, k, words, cut, pad):
    """Any kept sets, the prime and the sample sharing tokens (predictors in both, repeats of prime
    slots and of repeats of them), padding without signal: compact2's decoded signal."""
    t, v = z.shape
    cut = min(cut, t - 1)
    full = truncate(z, p, min(k, v))
    tokens = np.array(words[:t]) % v
    offs = full.offsets()
    prime = Prime.from_signal(
        [
            (
                tokens[:cut],
                KeptEntries(full.counts[:cut], full.ids[: offs[cut]], full.logp[: offs[cut]], full.log_tail[:cut]),
            )
        ]
    )
    tr = KeptEntries(
        np.concatenate([full.counts[cut:], np.zeros(pad, np.int64)]),
        full.ids[offs[cut] :],
        full.logp[offs[cut] :],
        np.concatenate([full.log_tail[cut:], np.full(pad, -np.inf, np.float32)]),
    )
    sample_tokens = np.concatenate([tokens[cut:], np.zeros(pad, np.int64)])
    c5 = Compact5Codec(prime=prime)
    c2 = Compact2Codec(kl_target=c5.kl_target)
    assert _same_signal(
        c2.decode(tr.counts, c2.encode(tr)),
        c5.decode(tr.counts, c5.encode(tr, tokens=sample_tokens), tokens=sample_tokens),
    )


def test_compact5_bytes_are_pinned():
    prime, tr, tokens = _split(11, 96, 64)
    cols = Compact5Codec(kl_target=8e-4, tail_step=1 / 16, mass_floor=0.75, prime=prime).encode(tr, tokens=tokens)
    assert hashlib.sha256(b"".join(cols[k] for k in sorted(cols))).hexdigest() == GOLDEN_COMPACT5


@settings(max_examples=40, deadline=None)
@given(
    col=st.sampled_from(["teacher_ids", "teacher_values", "teacher_tail"]),
    where=st.floats(0, 1),
    byte=st.integers(0, 255),
)
def test_compact5_damaged_bytes_fail_cleanly(col, where, byte):
    prime, tr, tokens = _split(8, 48, 24, k=30, v=400)
    assert_damage_fails_cleanly(Compact5Codec(prime=prime), tr, tokens, col, where, byte)


def test_damaged_prime_files_are_refused():
    prime, _, _ = _split(3, 64, 8)
    buf = prime.to_bytes()
    with pytest.raises(CodecError, match="not a pdistill codec prime"):
        Prime.from_bytes(b"PK" + buf[2:], where="gs://b/ds/codec_prime.bin")
    with pytest.raises(CodecError, match="gs://b/ds/codec_prime.bin: corrupt"):
        Prime.from_bytes(buf[:-7], where="gs://b/ds/codec_prime.bin")
    import zstandard

    raw = zstandard.ZstdDecompressor().decompress(buf[8:])
    with pytest.raises(CodecError, match="do not hold"):
        Prime.from_bytes(buf[:8] + zstandard.ZstdCompressor().compress(raw[:-4]))
    dup = bytearray(raw)
    dup[-4:] = raw[-8:-4]  # the last position's last id twice
    with pytest.raises(CodecError, match="kept twice"):
        Prime.from_bytes(buf[:8] + zstandard.ZstdCompressor().compress(bytes(dup)))
    with pytest.raises(CodecError, match="counts sum"):
        Prime(np.array([1, 2]), np.array([1, 1]), np.array([5]))
