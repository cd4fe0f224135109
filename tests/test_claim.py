"""Create-if-absent (schemas.claim) on every store we support, against the real emulators.

N threads race to claim one object with different contents: exactly one wins, and the object
holds the winner's bytes. The GCS case runs on the emulator patched in tests/gcs_emulator.py
to answer `ifGenerationMatch=0` as GCS does (the stock emulator ignores it; see that file).
"""

import os

import pytest
from racing import release_together

from schemas import claim, storage


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


# ------------------------------------------- a run that holds the output cleans up its orphans


def _cleanup_between_write_and_link(monkeypatch, also=None):
    """On the first claim attempt, after its temp file is written and before it is linked, a run
    that already holds this output removes our temp files as a killed run's orphans (what the
    winner of a race does at start-up), then optionally does `also`."""
    from schemas.dataset_dir import DatasetDir

    real, calls = storage.write_temp_beside, []

    def write_then_cleanup(path, data):
        tmp = real(path, data)
        calls.append(tmp)
        if len(calls) == 1:
            assert DatasetDir(os.path.dirname(path)).remove_orphans(set()) == [os.path.basename(tmp)]
            if also:
                also(path)
        return tmp

    monkeypatch.setattr(storage, "write_temp_beside", write_then_cleanup)
    return calls


def test_local_claim_whose_temp_file_is_removed_retries(tmp_path, monkeypatch):
    uri = str(tmp_path / "out" / "_settings.json")
    calls = _cleanup_between_write_and_link(monkeypatch)
    assert claim.create_if_absent(uri, b"mine") is True
    assert len(calls) == 2 and storage.read_text(uri) == "mine"
    assert os.listdir(tmp_path / "out") == ["_settings.json"]


def test_local_claim_whose_temp_file_is_removed_by_the_winner_loses(tmp_path, monkeypatch):
    uri = str(tmp_path / "out" / "_settings.json")

    def winner_claims(path):
        with open(path, "w") as f:
            f.write("theirs")

    calls = _cleanup_between_write_and_link(monkeypatch, also=winner_claims)
    assert claim.create_if_absent(uri, b"mine") is False
    assert len(calls) == 1 and storage.read_text(uri) == "theirs"
    assert os.listdir(tmp_path / "out") == ["_settings.json"]


def test_orphan_cleanup_ignores_a_temp_file_that_vanishes(tmp_path, monkeypatch):
    """A concurrent run removes its own temp file between our listing and our delete: not an error."""
    from fsspec.implementations.local import LocalFileSystem

    from schemas.dataset_dir import DatasetDir

    out = tmp_path / "out"
    out.mkdir()
    (out / f"manifest.json.tmp-{'a' * 32}").write_text("left by a killed run")
    phantom = str(out / f"_settings.json.tmp-{'b' * 32}")

    class ListsAPhantom(LocalFileSystem):
        def find(self, path, **kw):
            return sorted(super().find(path, **kw) + [phantom])

    monkeypatch.setattr(DatasetDir, "_fs", lambda self: (ListsAPhantom(), str(out)))
    assert DatasetDir(str(out)).remove_orphans(set()) == [f"manifest.json.tmp-{'a' * 32}"]
    assert os.listdir(out) == []
