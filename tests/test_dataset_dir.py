"""schemas.DatasetDir: the layout the pipeline writes and every reader relies on, in one object.

The datasets here are laid out by tests/make_dataset.py, which writes the documented layout by
hand: an independent oracle for what DatasetDir builds and reads.
"""

import json
import os
import shutil

import pytest

from schemas import DatasetDir, IncompleteDataset
from tests.make_dataset import make_tokenizer, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dd") / "ds")
    info = write_dataset(out, make_tokenizer(), n_samples=6, units=3)
    return out, info


def _part_copy(out: str, unit: str, tmp_path) -> str:
    """A part as the writer leaves it in local temp space (publish_part adds its stats there)."""
    return shutil.copytree(os.path.join(out, "parts", unit), tmp_path / "local" / unit)


def test_root_index_and_manifest_are_what_the_documented_layout_holds(dataset):
    out, info = dataset
    d = DatasetDir(out)
    units = sorted(os.listdir(os.path.join(out, "parts")))
    assert d.finished_units() == set(units)
    with open(os.path.join(out, "index.json")) as f:
        assert d.root_index(units) == json.load(f)  # basenames parts/<unit>/..., units in sorted order
    assert d.read_manifest() == info["manifest"]
    v = d.verify()
    assert v.whole and v.shards_checked == len(d.read_index()["shards"])
    assert d.stored_bytes() == sum(
        os.path.getsize(os.path.join(out, "parts", u, n))
        for u in units
        for n in os.listdir(os.path.join(out, "parts", u))
        if n.startswith("shard.")
    )


def test_publishing_writes_the_same_bytes_a_reader_expects(dataset, tmp_path):
    out, info = dataset
    units = sorted(os.listdir(os.path.join(out, "parts")))
    copy = DatasetDir(str(tmp_path / "copy"))
    for unit in units:
        copy.publish_part(unit, _part_copy(out, unit, tmp_path), {"unit": unit})
    assert copy.finished_units() == set(units) and copy.read_stats(units[0]) == {"unit": units[0]}
    with pytest.raises(IncompleteDataset, match="missing index.json and manifest.json"):
        copy.open_checked()
    copy.publish_index(copy.root_index(units))
    copy.publish_manifest(info["manifest"])
    index, manifest = copy.open_checked()
    assert manifest == info["manifest"] and index == DatasetDir(out).read_index()
    assert copy.verify().whole


def test_a_part_is_published_with_its_index_last(dataset, tmp_path):
    out, _ = dataset
    unit = sorted(os.listdir(os.path.join(out, "parts")))[0]
    d, order = DatasetDir(str(tmp_path / "o")), []
    d.publish_part(unit, _part_copy(out, unit, tmp_path), {"unit": unit}, after_each=order.append)
    assert order[-2:] == ["stats.json", "index.json"]  # stats before the part's commit marker


def test_samples_are_read_through_a_cache_folder_outside_the_dataset(tmp_path):
    path = str(tmp_path / "ds")
    ident = "sha256:0123456789abcdef"
    a = DatasetDir(path).stream_args(str(tmp_path / "cache"), identity=ident)
    b = DatasetDir("file://" + path).stream_args(str(tmp_path / "cache"), identity=ident)
    assert a == b and a["remote"] == path
    assert os.path.dirname(a["local"]) == str(tmp_path / "cache")
    assert os.path.dirname(DatasetDir(path).stream_args("/c", local="/mine", identity=ident)["local"]) == "/mine"
    assert DatasetDir("s3://bucket/ds").stream_args("/c", identity=ident)["remote"] == "s3://bucket/ds"


def test_one_claim_wins_and_holds_the_first_record(tmp_path):
    d = DatasetDir(str(tmp_path / "out"))
    assert d.read_claim() is None
    assert d.claim({"settings_fingerprint": "sha256:a"}) is True
    assert d.claim({"settings_fingerprint": "sha256:b"}) is False
    assert d.read_claim() == {"settings_fingerprint": "sha256:a"}
    assert d.top_level().claimed and not d.top_level().finished
