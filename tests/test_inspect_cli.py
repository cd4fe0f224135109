"""`pdistill inspect` measures fidelity from storage; the `pdistill` command dispatches."""
import json
import os
import shutil
import subprocess
import sys

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
    assert report["codec"].startswith("compact2") and report["stored_bytes_per_kept_entry"] > 0
    # re-running the teacher reproduces the stored ids: only quantization error remains
    assert 0 <= report["codec_kl"] < report["codec_kl_bound"] * 2 <= 2e-3
    assert report["total_kl"] > report["codec_kl"]


def test_inspect_refuses_an_incomplete_dataset(tmp_path):
    tok = make_tokenizer()
    out = str(tmp_path / "ds")
    write_dataset(out, tok, n_samples=2, write_manifest=False)
    with pytest.raises(SystemExit, match="incomplete: no manifest.json"):
        inspect.main([out])


def test_inspect_fails_when_counts_do_not_reconcile(dataset, capsys, tmp_path):
    out, _, _ = dataset
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    manifest["counts"]["dead_letters"] += 1
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    rc, report = run_inspect(capsys, str(bad))
    assert rc == 1 and report["counts_reconcile"] is False


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
