"""`pdistill inspect` measures fidelity from storage; the `pdistill` command dispatches."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pdistill import cli, inspect
from tests.make_dataset import make_teacher, make_tokenizer, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    tok = make_tokenizer()
    teacher_dir = str(root / "teacher")
    teacher = make_teacher(teacher_dir, tok)
    out = str(root / "ds")
    info = write_dataset(out, tok, teacher=teacher, n_samples=6, seq_len=16, top_p=0.9, top_k=8)
    return out, teacher_dir, info


def run_inspect(capsys, *args):
    rc = inspect.main([*args, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_inspect_reports_counts_and_fidelity(dataset, capsys):
    out, teacher_dir, info = dataset
    rc, report = run_inspect(capsys, out, "--teacher", teacher_dir)
    assert rc == 0
    assert report["counts_reconcile"] and report["sequences_in_index"] == 6
    assert 1 <= report["kept_per_token"] <= 8
    assert report["stored_bytes_per_token"] > 0
    assert 0 < report["mean_tail_mass"] < 1
    assert report["codec"].startswith("compact4") and report["stored_bytes_per_kept_entry"] > 0
    # re-running the teacher reproduces the stored ids: only quantization error remains, within
    # the guaranteed bound (5.09x the design KL the step is set for, which inspect prints beside it)
    assert report["codec_kl_bound"] == pytest.approx(6 * (2 * np.log(2) - 0.75) / 0.75 * report["codec_kl_design"])
    assert 0 <= report["codec_kl"] <= report["codec_kl_bound"] <= 5e-3
    assert report["total_kl"] > report["codec_kl"]


def test_a_dataset_without_a_kl_guarantee_reports_no_bound_in_strict_json(tmp_path, capsys):
    """compact2/3/4 data written before the KL guarantee (mass_floor 0: the format-1 encoder) has no
    bound: `--json` says null, not Infinity, which jq and strict parsers refuse; the text says why."""
    out = str(tmp_path / "ds")
    write_dataset(out, make_tokenizer(), n_samples=2, codec="compact4", codec_params={"mass_floor": 0.0})

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    rc = inspect.main([out, "--json"])
    report = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert rc == 0 and report["verdict"] == "whole"
    assert report["codec_kl_bound"] is None and report["codec_kl_design"] == pytest.approx(8e-4)
    assert inspect.main([out]) == 0
    assert "codec_kl_bound: none (written by an encoder without the KL guarantee)" in capsys.readouterr().out


def test_inspect_refuses_an_incomplete_dataset(tmp_path, capsys):
    tok = make_tokenizer()
    out = str(tmp_path / "ds")
    write_dataset(out, tok, n_samples=2, write_manifest=False)
    rc, report = run_inspect(capsys, out)
    assert rc == 1 and report["verdict"] == "NOT WHOLE"
    assert report["problems"] == [
        "manifest.json: missing: the dataset is incomplete (the pipeline writes the "
        "root index.json, then manifest.json last)"
    ]


def test_inspect_fails_when_counts_do_not_reconcile(dataset, capsys, tmp_path):
    out, _, _ = dataset
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    manifest["counts"]["dead_letters"] += 1
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    rc, report = run_inspect(capsys, str(bad))
    assert rc == 1 and report["counts_reconcile"] is False
    assert report["problems"] == [
        "manifest.json: counts do not reconcile: documents 6 != packed 6 + dead letters 1",
        # and the dead letter it counts is nowhere on storage
        "dead_letter: records stand for 0 dead-lettered documents, manifest.json counts 1",
    ]


def test_cli_help_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("logits", "train", "inspect", "teacher", "demo"):
        assert name in text
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "pdistill")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "pdistill <command>" in res.stdout


# ------------------------------------------------------------------------------------------------
# the verdict: is the dataset whole? (every shard against the index: exists, size, hash)

SHARD = "parts/u00001-00000/shard.00000.mds.zstd"


def _flip_byte(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))


def _damaged(dataset, tmp_path, damage):
    out, _, _ = dataset
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    damage(bad)
    return str(bad)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda d: os.remove(d / SHARD), f"{SHARD}: missing (listed in index.json as shard 1)"),
        (lambda d: os.truncate(d / SHARD, 100), f"{SHARD}: size 100 bytes, index.json records"),
        (lambda d: _flip_byte(d / SHARD), f"{SHARD}: content differs from index.json (xxh3_64"),
        (lambda d: shutil.rmtree(d / "parts" / "u00001-00000"), f"{SHARD}: missing"),
        (lambda d: (d / "index.json").write_text('{"shards": [tru'), "index.json: not valid JSON"),
        (lambda d: (d / "manifest.json").write_text("{"), "manifest.json: not valid JSON"),
        # the files a re-publish reads (a resumed or extended run), checked with the hashes
        (
            lambda d: (d / "parts" / "u00001-00000" / "index.json").write_text('{"shards": [tru'),
            "parts/u00001-00000/index.json: not valid JSON",
        ),
        (
            lambda d: (d / "parts" / "u00001-00000" / "index.json").write_text('{"version": 2, "shards": []}'),
            "parts/u00001-00000/index.json: lists 0 shards, index.json takes 1 from it",
        ),
        (
            lambda d: (d / "parts" / "u00001-00000" / "stats.json").write_text("{"),
            "parts/u00001-00000/stats.json: not valid JSON",
        ),
    ],
    ids=[
        "deleted-shard",
        "truncated-shard",
        "bit-flip",
        "deleted-part",
        "bad-index-json",
        "bad-manifest-json",
        "bad-part-index",
        "part-index-without-its-shards",
        "bad-part-stats",
    ],
)
def test_inspect_verdict_names_the_damaged_file(dataset, tmp_path, capsys, damage, problem):
    bad = _damaged(dataset, tmp_path, damage)
    rc, report = run_inspect(capsys, bad)
    assert rc == 1 and report["verdict"] == "NOT WHOLE"
    assert report["problems"] and report["problems"][0].startswith(problem), report["problems"]
    assert "kept_per_token" not in report  # no statistics of a damaged dataset


def test_inspect_text_output_and_stderr_verdict(dataset, tmp_path, capsys):
    bad = _damaged(dataset, tmp_path, lambda d: os.remove(d / "parts" / "u00001-00000" / "index.json"))
    assert inspect.main([bad]) == 1
    cap = capsys.readouterr()
    assert "verdict: NOT WHOLE" in cap.out
    assert "problem: parts/u00001-00000/index.json: missing (the part folder's commit marker)" in cap.out
    assert f"pdistill inspect: {bad} is not whole: 1 problem(s)" in cap.err
    assert "Traceback" not in cap.err


def test_inspect_skip_hash_checks_sizes_only(dataset, tmp_path, capsys):
    bad = _damaged(dataset, tmp_path, lambda d: _flip_byte(d / SHARD))
    rc, report = run_inspect(capsys, bad, "--skip-hash")
    assert report["shard_check"] == "size only (--skip-hash)" and report["shards_checked"] == 2
    assert not any(p.startswith(SHARD) for p in report["problems"])  # the flip is invisible without hashes
    cut = _damaged(dataset, tmp_path / "cut", lambda d: os.truncate(d / SHARD, 100))
    rc, report = run_inspect(capsys, cut, "--skip-hash")
    assert rc == 1 and report["problems"][0].startswith(f"{SHARD}: size 100 bytes")


def test_inspect_refuses_a_negative_sample_count(dataset, capsys):
    out, _, _ = dataset
    with pytest.raises(SystemExit) as e:
        inspect.main([out, "--samples", "-3"])
    assert e.value.code == 2 and "--samples must be >= 0, got -3" in capsys.readouterr().err


def test_inspect_counts_part_folders_against_the_manifest(dataset, tmp_path, capsys):
    def extra_unit(d):
        m = json.load(open(d / "manifest.json"))
        m["counts"]["units"] += 1  # a part folder the manifest counts is gone
        (d / "manifest.json").write_text(json.dumps(m))

    rc, report = run_inspect(capsys, _damaged(dataset, tmp_path, extra_unit))
    assert rc == 1 and report["problems"] == ["parts: 2 part folders, manifest.json counts 3 units"]


def _snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = os.stat(p).st_mtime_ns
    return out


def test_inspect_does_not_change_what_it_reads(dataset, capsys):
    out, _, _ = dataset
    before = _snapshot(out)
    rc, report = run_inspect(capsys, out)
    assert rc == 0 and report["verdict"] == "whole" and report["sequences_in_index"] == 6
    assert _snapshot(out) == before  # same files, same mtimes: no decompressed shard.*.mds beside them


@pytest.mark.slow
def test_inspect_verdict_on_s3(dataset, s3_bucket, capsys):
    from schemas import storage

    out, _, _ = dataset
    uri = f"{s3_bucket}/ds"
    storage.upload_dir(out, uri, last=("index.json", "manifest.json"))
    rc, report = run_inspect(capsys, uri)
    assert rc == 0 and report["verdict"] == "whole" and report["sequences_in_index"] == 6
    storage.write_bytes_atomic(f"{uri}/{SHARD}", storage.read_bytes(f"{uri}/{SHARD}")[:-1] + b"\0")
    rc, report = run_inspect(capsys, uri)
    assert rc == 1 and report["problems"][0].startswith(f"{SHARD}: content differs")


def test_inspect_bad_teacher_or_missing_dataset_is_a_message(dataset, tmp_path, capsys):
    out, _, _ = dataset
    with pytest.raises(SystemExit, match=f"--teacher {tmp_path / 'nope'}: cannot load a causal LM"):
        inspect.main([out, "--teacher", str(tmp_path / "nope"), "--json"])
    capsys.readouterr()
    rc, report = run_inspect(capsys, str(tmp_path / "nothing-here"))
    assert rc == 1 and report["problems"] == [".: no such dataset (nothing stored under this URI)"]
