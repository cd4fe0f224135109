"""Bytes already on storage keep their meaning: compact2/3/4 columns written by the format-1
encoders (tests/fixtures/codec_format1, built by build_codec_format1.py before the encoders
changed) decode to exactly what they decoded to when they were written."""

import hashlib
import os

import numpy as np
import pytest

from schemas import make_stored_codec

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "codec_format1")
COLUMNS = ("teacher_ids", "teacher_tail", "teacher_values")
# sha256 of each fixture's columns: the golden-bytes digests the format-1 encoders were pinned to
FORMAT1_DIGESTS = {
    "compact2": "5500db4dcd0f526ec6ef0bbdb5a26a6c86045564f13e62d2d386e0b4bc846a9c",
    "compact3": "9cb8e7fd6af3a4710ce26a6bb25ae0f2a87ae500cf103148c2099bc24ab717a4",
    "compact4": "4b51b4fdf02f4a9609a0f1132d1e21466c54296eafebf510c96b11b600c9e3b7",
}


@pytest.mark.parametrize("name", sorted(FORMAT1_DIGESTS))
def test_format1_bytes_decode_as_they_did(name):
    f = np.load(os.path.join(FIXTURES, f"{name}.npz"))
    cols = {c: f[c].tobytes() for c in COLUMNS}
    assert hashlib.sha256(b"".join(cols[c] for c in COLUMNS)).hexdigest() == FORMAT1_DIGESTS[name]
    codec = make_stored_codec(name, {"kl_target": 7.5e-4, "tail_step": 1 / 16})  # a format-1 manifest's params
    assert codec.mass_floor == 0 and codec.kl_bound() == float("inf")  # written before the guarantee
    kw = {"tokens": f["tokens"]} if name != "compact2" else {}
    d = codec.decode(f["counts"], cols, **kw)
    assert np.array_equal(d.counts, f["counts"])
    assert np.array_equal(d.ids, f["ids"])
    assert np.array_equal(d.log_tail, f["log_tail"])
    # log-probs come from libm's log and exp (an ulp may differ on another CPU); a changed level is ~1e-2
    np.testing.assert_array_max_ulp(d.logp, f["logp"], maxulp=1)
