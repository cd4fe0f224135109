"""Fault matrix, pipeline half: `pdistill logits` killed with SIGKILL at each point where a run
can die, then re-run; the result must equal a clean run byte for byte (every file: shards,
part and root indexes, stats, dead letters, manifest, the output's claim).

The kill is real: the command runs in a subprocess and `pipelines.faults` (stage, "kill") sends
SIGKILL to that process at the chosen point, so no exception handler, `finally` or retry runs.
The re-run is the same command (in this process). Each case prints one row of the README's
fault-matrix table: | case | where killed | recovered | lost |.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from fixtures_models import make_texts  # noqa: E402

from pipelines.config import PipelineConfig  # noqa: E402
from pipelines.job import run  # noqa: E402
from schemas import Manifest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = dict(seq_len=32, top_p=0.9, top_k=16, bytes_per_unit=1200)

# case -> (where killed, the faults spec; units are picked from the clean run's sorted unit names)
CASES = {
    "before the first part": (
        "after the output is claimed, at the first unit's read (nothing published)",
        lambda units: {"stage": "read", "units": "*"},
    ),
    "mid-part": (
        "after a part's first shard is copied, before its stats and index",
        lambda units: {"stage": "upload", "units": [units[len(units) // 2]]},
    ),
    "inside a shard write": (
        "a part's first shard written to its temp file, not yet renamed (orphan temp file left)",
        lambda units: {"stage": "write", "units": [units[len(units) // 2]]},
    ),
    "between parts": (
        "before a later part is written (earlier parts published)",
        lambda units: {"stage": "sink", "units": [units[-1]]},
    ),
    "during publish": (
        "after the root index.json, before manifest.json",
        lambda units: {"stage": "publish", "units": ["root"]},
    ),
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    d = tmp_path_factory.mktemp("lake")
    lines = [json.dumps({"text": t}) for t in make_texts(24, seed=7)]
    lines.insert(5, '{"text": "unterminated')  # one dead letter
    (d / "a.jsonl").write_text("\n".join(lines) + "\n")
    return str(d)


def digest(out):
    out = str(out)
    return {
        os.path.relpath(os.path.join(r, f), out): hashlib.sha256(open(os.path.join(r, f), "rb").read()).hexdigest()
        for r, _, fs in os.walk(out)
        for f in fs
    }


def config(lake, teacher, out):
    return PipelineConfig(
        inputs=[os.path.join(lake, "*.jsonl")], teacher=teacher, output=str(out), progress=False, **FLAGS
    )


@pytest.fixture(scope="module")
def clean(lake, tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "ds"
    run(config(lake, tiny_teacher, out))
    m = Manifest.from_json((out / "manifest.json").read_text())
    assert m.counts.dead_letters == 1 and m.counts.units >= 3
    return {"out": out, "digest": digest(out), "units": sorted(os.listdir(out / "parts")), "manifest": m}


def killed_command(lake, teacher, out, fault):
    argv = [
        sys.executable,
        "-m",
        "pdistill.cli",
        "logits",
        "--input",
        os.path.join(lake, "*.jsonl"),
        "--teacher",
        teacher,
        "--output",
        str(out),
        "--no-progress",
    ]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in FLAGS.items()]
    env = {
        **os.environ,
        "PDISTILL_TEST_FAULTS": json.dumps({**fault, "mode": "kill"}),
        "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
    }
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_killed_pipeline_resumes_to_the_clean_dataset(case, clean, lake, tiny_teacher, tmp_path):
    where, fault = CASES[case]
    out = tmp_path / "ds"
    proc = killed_command(lake, tiny_teacher, out, fault(clean["units"]))
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    left = digest(out)
    assert "manifest.json" not in left and "_settings.json" in left  # claimed, never committed
    published_before = {u for u in clean["units"] if f"parts/{u}/index.json" in left}
    if case == "mid-part":
        victim = fault(clean["units"])["units"][0]
        assert f"parts/{victim}/index.json" not in left and any(k.startswith(f"parts/{victim}/shard.") for k in left)
    if case == "inside a shard write":
        victim = fault(clean["units"])["units"][0]
        assert [k for k in left if k.startswith(f"parts/{victim}/")] and all(
            ".tmp-" in k for k in left if k.startswith(f"parts/{victim}/")
        )  # only the orphan
    if case == "during publish":
        assert "index.json" in left and published_before == set(clean["units"])

    report = run(config(lake, tiny_teacher, out))  # the same command again
    assert report.computed_units == len(clean["units"]) - len(published_before)
    got = digest(out)
    assert got == clean["digest"]
    m = Manifest.from_json((out / "manifest.json").read_text())
    lost = clean["manifest"].counts.documents - m.counts.packed_documents - m.counts.dead_letters
    assert lost == 0 and m.counts == clean["manifest"].counts
    print(
        f"\n| {case} | {where} | yes: byte-identical, {report.computed_units}/{len(clean['units'])} parts recomputed "
        f"| {lost} |"
    )


def remote_digest(uri):
    from schemas import storage

    fs, path = storage.fs_and_path(uri)
    fs.invalidate_cache()
    root = path.rstrip("/")
    return {p[len(root) + 1 :]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in fs.find(root)}


@pytest.mark.slow
def test_killed_mid_part_on_s3_resumes_to_the_clean_dataset(clean, lake, tiny_teacher, s3_bucket):
    """The same kill with the output on the S3 emulator: the resumed dataset's objects equal the
    clean local run's files byte for byte."""
    from schemas import storage

    out = storage.join(s3_bucket, "ds")
    victim = clean["units"][len(clean["units"]) // 2]
    proc = killed_command(lake, tiny_teacher, out, {"stage": "upload", "units": [victim]})
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    left = remote_digest(out)
    assert "manifest.json" not in left and f"parts/{victim}/index.json" not in left
    assert any(k.startswith(f"parts/{victim}/shard.") for k in left)
    report = run(config(lake, tiny_teacher, out))
    assert 0 < report.computed_units < len(clean["units"])
    assert remote_digest(out) == clean["digest"]
    print(
        f"\n| mid-part, output on S3 (moto) | {CASES['mid-part'][0]} | yes: byte-identical, "
        f"{report.computed_units}/{len(clean['units'])} parts recomputed | 0 |"
    )
