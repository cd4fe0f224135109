"""Create-if-absent (schemas.claim) on every store we support, against the real emulators.

N threads race to claim one object with different contents: exactly one wins, and the object
holds the winner's bytes. The GCS case runs on the emulator patched in tests/gcs_emulator.py
to answer `ifGenerationMatch=0` as GCS does (the stock emulator ignores it; see that file).
"""
import os

import pytest

from schemas import claim, storage
from racing import release_together


def race(uri, n=8):
    results = release_together(lambda i: claim.create_if_absent(uri, f"claim {i}".encode()), n)
    assert all(isinstance(r, bool) for r in results), results
    winners = [i for i, r in enumerate(results) if r]
    assert len(winners) == 1, results
    assert storage.read_text(uri) == f"claim {winners[0]}"
    assert claim.create_if_absent(uri, b"late") is False and storage.read_text(uri) == f"claim {winners[0]}"
    return winners[0]


def test_local_claim_is_exclusive_and_leaves_no_temp(tmp_path):
    for round_ in range(5):
        race(str(tmp_path / f"out{round_}" / "_settings.json"))
    assert not [f for d, _, fs in os.walk(tmp_path) for f in fs if ".tmp-" in f]


def test_local_claim_without_hard_links(tmp_path, monkeypatch):
    import errno

    def no_link(*a):
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(os, "link", no_link)
    race(str(tmp_path / "out" / "_settings.json"))


def test_s3_claim_is_exclusive(s3_bucket):
    race(storage.join(s3_bucket, "out", "_settings.json"))


def test_gcs_claim_is_exclusive(gcs_bucket):
    race(storage.join(gcs_bucket, "out", "_settings.json"))


def test_other_stores_are_refused_unless_allowed():
    with pytest.raises(claim.ClaimUnsupported, match="memory.*create-if-absent"):
        claim.create_if_absent("memory://pdistill-claim/x", b"a")
    assert claim.create_if_absent("memory://pdistill-claim/x", b"a", allow_unsafe=True) is True
    assert claim.create_if_absent("memory://pdistill-claim/x", b"b", allow_unsafe=True) is False
