"""`pdistill cache`: the copies a replaced dataset leaves in a run's cache are found and removed,
and nothing else is: not the copy in use, not a folder the trainer did not make, nothing outside
the folder the command was given (`schemas.cache_folders`)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from pdistill.cli import main as pdistill
from schemas.cache_folders import MARKER, mark, scan, stale


def _key_dirs(root) -> list[str]:
    return sorted(c.path for c in scan(str(root))[0])


def test_the_copy_of_a_replaced_dataset_is_pruned_and_training_goes_on(tmp_path, capsys):
    pytest.importorskip("composer")
    from make_dataset import make_tokenizer, write_dataset
    from test_hostile_storage import logged_ids, pdistill_train, train_cfg

    tok_dir = str(tmp_path / "tok")
    tokenizer = make_tokenizer(tok_dir)
    path, cache = tmp_path / "ds", tmp_path / "cache"
    raw = train_cfg(tok_dir, str(path), str(tmp_path / "samples"), local_cache=str(cache))
    write_dataset(str(path), tokenizer, n_samples=16, units=1, seed=1, source="sha256:dataset-A")
    assert pdistill_train(tmp_path, raw) == 0
    (old,) = _key_dirs(cache)
    shutil.rmtree(path)
    b = write_dataset(str(path), tokenizer, n_samples=16, units=1, seed=2, source="sha256:dataset-B")
    assert pdistill_train(tmp_path, raw) == 0
    folders = _key_dirs(cache)
    assert len(folders) == 2 and old in folders
    (new,) = set(folders) - {old}

    capsys.readouterr()
    assert pdistill(["cache", "list", str(cache)]) == 0
    out = capsys.readouterr().out
    assert old in out and new in out and "2 cache folders" in out and str(path) in out

    assert pdistill(["cache", "prune", str(cache), "--dry-run"]) == 0
    assert f"would remove {old}" in capsys.readouterr().out and _key_dirs(cache) == folders

    assert pdistill(["cache", "prune", str(cache)]) == 0
    assert f"removing {old}" in capsys.readouterr().out
    assert not os.path.exists(old) and _key_dirs(cache) == [new]

    shutil.rmtree(tmp_path / "samples")  # the kept copy still serves the dataset now at the path
    assert pdistill_train(tmp_path, raw) == 0
    assert logged_ids(tmp_path / "samples") <= set(b["sample_ids"])
    assert _key_dirs(cache) == [new]


def _fake(folder, remote: str, used: float, payload: bytes = b"x" * 100) -> str:
    os.makedirs(folder, exist_ok=True)
    (open(os.path.join(folder, "shard.00000.mds"), "wb")).write(payload)
    mark(str(folder), remote, "sha256:" + os.path.basename(str(folder)), now=used)
    return str(folder)


def test_only_older_copies_per_location_go_and_older_than_adds_unused_ones(tmp_path):
    now = time.time()
    root = tmp_path / "c"
    a_old = _fake(root / "train" / ("a" * 16), "s3://b/ds", now - 10)
    a_new = _fake(root / "train" / ("b" * 16), "s3://b/ds", now - 5)
    other = _fake(root / "train" / ("c" * 16), "s3://b/other", now - 40 * 86400)
    a_eval = _fake(root / "eval" / ("d" * 16), "s3://b/ds", now - 20)  # another cache: its only copy
    folders, skipped = scan(str(root))
    assert skipped == [] and sorted(c.path for c in folders) == sorted([a_old, a_new, other, a_eval])
    assert [c.path for c in stale(folders, now=now)] == [a_old]
    assert sorted(c.path for c in stale(folders, older_than_days=30, now=now)) == sorted([a_old, other])
    assert all(c.size == 100 + os.path.getsize(os.path.join(c.path, MARKER)) for c in folders)


def test_the_marker_keeps_no_secret(tmp_path):
    mark(str(tmp_path / ("e" * 16)), "s3://AKIAKEY:TOPSECRET@bucket/ds", "sha256:x")
    text = (tmp_path / ("e" * 16) / MARKER).read_text()
    assert "TOPSECRET" not in text and json.loads(text)["remote"] == "s3://AKIAKEY:***@bucket/ds"


def test_what_it_did_not_make_or_what_lies_outside_is_left_alone(tmp_path, capsys):
    now = time.time()
    root = tmp_path / "c"
    outside = tmp_path / "precious"
    keep = _fake(outside / ("f" * 16), "s3://b/ds", now - 100)  # a real folder elsewhere, older copy
    _fake(root / ("1" * 16), "s3://b/ds", now)
    os.symlink(keep, root / ("2" * 16))  # a cache-looking symlink to it
    _fake(root / "not-a-key", "s3://b/ds", now - 50)  # a marker in a folder we never name so
    bad = root / ("3" * 16)
    bad.mkdir()
    (bad / MARKER).write_text('{"remote": "s3://b/ds", "used": "yesterday"}')
    _fake(root / "x" / "y" / "z" / ("4" * 16), "s3://b/ds", now - 60)  # deeper than a cache sits

    capsys.readouterr()
    assert pdistill(["cache", "prune", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 of 1 cache folders" in out, out
    assert f"left alone: {root / 'not-a-key'} (not a cache key folder name)" in out
    assert f"left alone: {bad} (marker without remote, identity and used)" in out
    assert os.path.isdir(keep) and os.path.isdir(root / "not-a-key") and os.path.isdir(bad)
    assert os.path.isdir(root / "x" / "y" / "z" / ("4" * 16)) and os.path.islink(root / ("2" * 16))


def test_bad_arguments_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        pdistill(["cache", "list", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="--older-than: -1.0 is not a number of days"):
        pdistill(["cache", "prune", str(tmp_path), "--older-than", "-1"])
