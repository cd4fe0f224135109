"""Nothing mixed, nothing overwritten: who may write into an output (pipelines/output.py).

Each test reproduces a case where the pipeline used to mix or overwrite data: runs with
different settings racing for one output, a foreign folder (a plain MDS dataset) taken as an
output, an output inside its own input, orphan temporary files after a kill, and a part written
with other settings slipping into a published dataset. Real DirectRunner, tiny random teacher,
real S3/GCS emulators (tests/objectstore.py).
"""

import hashlib
import json
import os
import shutil

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from fixtures_models import make_texts  # noqa: E402
from racing import release_together  # noqa: E402

from pipelines.config import PipelineConfig  # noqa: E402
from pipelines.job import prepare, run  # noqa: E402
from pipelines.output import (  # noqa: E402
    ForeignOutput,
    OutputInsideInput,
    PartMismatch,
    SettingsMismatch,
    claim_output,
    input_base,
)
from schemas import storage  # noqa: E402

SETTINGS = dict(seq_len=32, top_p=0.9, top_k=16, batch_size=4, bytes_per_unit=1200, progress=False)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    d = tmp_path_factory.mktemp("lake")
    (d / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in make_texts(24, seed=5)))
    return str(d)


def cfg(lake, out, teacher, **kw):
    return PipelineConfig(
        **{"inputs": [os.path.join(lake, "*.jsonl")], "teacher": teacher, "output": str(out), **SETTINGS, **kw}
    )


def digest(out):
    out = str(out)
    return {
        os.path.relpath(os.path.join(r, f), out): hashlib.sha256(open(os.path.join(r, f), "rb").read()).hexdigest()
        for r, _, fs in os.walk(out)
        for f in fs
    }


@pytest.fixture(scope="module")
def clean(lake, tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "ds"
    run(cfg(lake, out, tiny_teacher))
    return {"out": str(out), "digest": digest(out)}


# ---------------------------------------------------------------- racing claims


def race_claims(output, n=6):
    """n threads, two different settings, released together: exactly one setting may win."""

    def one(i):  # anything but SettingsMismatch fails the assertions below, shown with its message
        return claim_output(output, f"sha256:{i % 2}", {"settings": {"top_k": [3, 8][i % 2]}})

    results = release_together(one, n)
    passed = {i % 2 for i, r in enumerate(results) if r is False}
    refused = [r for r in results if isinstance(r, SettingsMismatch)]
    assert all(r is False or isinstance(r, SettingsMismatch) for r in results), results
    assert len(passed) == 1, results  # one setting won ...
    winner = passed.pop()
    assert all(results[i] is False for i in range(winner, n, 2)), results  # ... every run with it may go on
    assert len(refused) == n // 2 and all(r is not False for i, r in enumerate(results) if i % 2 != winner)
    assert all(f"top_k: {[3, 8][winner]!r} -> {[3, 8][1 - winner]!r}" in str(r) for r in refused)
    assert (
        json.loads(storage.read_text(storage.join(output, "_settings.json")))["settings_fingerprint"]
        == f"sha256:{winner}"
    )


def test_concurrent_claims_local(tmp_path):
    for i in range(5):
        race_claims(str(tmp_path / f"out{i}"))


def test_concurrent_claims_s3(s3_bucket):
    race_claims(storage.join(s3_bucket, "out"))


def test_concurrent_claims_gcs(gcs_bucket):
    race_claims(storage.join(gcs_bucket, "out"))


@pytest.mark.slow
def test_two_commands_with_different_settings_started_together(lake, tiny_teacher, tmp_path):
    """Two `pdistill logits` processes, top_k 3 and 8, same output: one finishes, the other is
    refused with a message, and the dataset is not mixed (manifest, claim and shards agree)."""
    import subprocess
    import sys

    out = tmp_path / "ds"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p
            for p in [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]
            if p
        ),
    }
    procs = {
        k: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pdistill.cli",
                "logits",
                "--input",
                os.path.join(lake, "*.jsonl"),
                "--teacher",
                tiny_teacher,
                "--output",
                str(out),
                "--seq-len",
                "32",
                "--top-k",
                str(k),
                "--bytes-per-unit",
                "1200",
                "--no-progress",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (3, 8)
    }
    done = {k: (p.wait(timeout=300), p.stderr.read()) for k, p in procs.items()}
    winners = [k for k, (rc, _) in done.items() if rc == 0]
    assert len(winners) == 1, done
    (loser,) = set(done) - set(winners)
    rc, err = done[loser]
    assert rc == 2 and "other settings" in err and "Traceback" not in err, err
    from streaming import StreamingDataset

    from pipelines.output import SETTINGS_NAME
    from schemas import Manifest, make_codec

    m = Manifest.from_json((out / "manifest.json").read_text())
    claim = json.loads((out / SETTINGS_NAME).read_text())
    assert m.truncation.top_k == claim["settings"]["settings"]["top_k"] == winners[0]
    assert m.settings_fingerprint == claim["settings_fingerprint"]
    parts = [json.loads((out / "parts" / u / "stats.json").read_text()) for u in os.listdir(out / "parts")]
    assert {p["settings_fingerprint"] for p in parts} == {m.settings_fingerprint}
    ds = StreamingDataset(local=str(out), remote=None, batch_size=1, shuffle=False)
    codec = make_codec(m.codec.name, m.codec.params)
    from schemas import decode_dense

    kept = max(int(decode_dense(ds[i], codec, m.truncation.top_k).mask.sum(1).max()) for i in range(len(ds)))
    assert kept <= winners[0]


# ---------------------------------------------------------------- publish verification


def test_publish_refuses_a_part_written_with_other_settings(clean, lake, tiny_teacher, tmp_path):
    other = tmp_path / "other"
    run(cfg(lake, other, tiny_teacher, top_k=8))
    out = tmp_path / "ds"
    shutil.copytree(clean["out"], out, ignore=shutil.ignore_patterns("*.mds"))
    for name in ("manifest.json", "index.json"):
        os.remove(out / name)
    victim = sorted(os.listdir(out / "parts"))[1]
    shutil.rmtree(out / "parts" / victim)
    shutil.copytree(other / "parts" / victim, out / "parts" / victim)  # a part of the top_k=8 run
    with pytest.raises(PartMismatch, match=rf"part .*parts/{victim} was written with settings sha256:"):
        run(cfg(lake, out, tiny_teacher))
    assert not (out / "manifest.json").exists() and not (out / "index.json").exists()
    shutil.rmtree(out / "parts" / victim)  # what the message says to do
    run(cfg(lake, out, tiny_teacher))
    assert digest(out) == clean["digest"]


def test_a_run_resumed_by_an_encoder_with_other_defaults_is_refused(clean, lake, tiny_teacher, tmp_path, monkeypatch):
    """An upgrade mid-run: parts written by the encoder before compact4's KL guarantee (kl_target 7.5e-4,
    no mass_floor) must not be published under today's defaults (8e-4, 3/4). The decoders derive the
    value step from the manifest's kl_target: published that way, the old parts would decode to
    values ~3 % off, silently. The claim fingerprints the parameters as the encoder resolves them, not
    as the config spells them (`codec_params: {}` both times); spelling out the old ones resumes."""
    import dataclasses

    from schemas import Manifest
    from schemas import codec as codec_module

    @dataclasses.dataclass(frozen=True)
    class OlderCompact4(codec_module.Compact4Codec):  # the encoder of the pdistill that started the run
        kl_target: float = 7.5e-4
        mass_floor: float = 0.0

    out = tmp_path / "ds"
    with monkeypatch.context() as m:
        m.setitem(codec_module.CODECS, "compact4", OlderCompact4)
        m.setenv(
            "PDISTILL_TEST_FAULTS",
            json.dumps({"stage": "publish", "units": ["root"], "mode": "once", "marker_dir": str(tmp_path)}),
        )
        with pytest.raises(Exception, match="injected failure at publish"):
            run(cfg(lake, out, tiny_teacher))
    assert (out / "_settings.json").exists() and not (out / "manifest.json").exists()

    with pytest.raises(
        SettingsMismatch, match=r"codec_params\.kl_target: 0\.00075 -> 0\.0008.*codec_params\.mass_floor: 0\.0 -> 0\.75"
    ):
        run(cfg(lake, out, tiny_teacher))
    assert not (out / "manifest.json").exists()

    run(cfg(lake, out, tiny_teacher, codec_params={"kl_target": 7.5e-4, "mass_floor": 0.0}))
    params = Manifest.from_json((out / "manifest.json").read_text()).codec.params
    assert params["kl_target"] == 7.5e-4 and params["mass_floor"] == 0.0
    # the defaults spelled out are the defaults: same fingerprint, so the clean run's output is done
    spelled = codec_module.make_codec("compact4").params()
    assert (
        cfg(lake, out, tiny_teacher, codec_params=spelled).settings_fingerprint()
        == cfg(lake, out, tiny_teacher).settings_fingerprint()
    )


# ---------------------------------------------------------------- foreign outputs


def write_plain_mds(folder):
    import numpy as np
    from streaming import MDSWriter

    with MDSWriter(out=str(folder), columns={"tokens": "ndarray:int32"}, compression="zstd") as w:
        for i in range(5):
            w.write({"tokens": np.arange(i, i + 4, dtype=np.int32)})


def test_foreign_local_output_is_refused(lake, tiny_teacher, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "plain"
    write_plain_mds(out)
    before = digest(out)
    with pytest.raises(ForeignOutput, match=r"not empty.*index\.json, shard\.00000\.mds\.zstd"):
        prepare(cfg(lake, out, tiny_teacher))
    argv = [
        "--input",
        os.path.join(lake, "*.jsonl"),
        "--teacher",
        tiny_teacher,
        "--output",
        str(out),
        "--seq-len",
        "32",
        "--no-progress",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not a pdistill output" in err and "index.json" in err and "Traceback" not in err
    assert digest(out) == before  # nothing overwritten, nothing added

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("mine")
    with pytest.raises(ForeignOutput, match="README.txt"):
        prepare(cfg(lake, notes, tiny_teacher))
    assert os.listdir(notes) == ["README.txt"]
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    with pytest.raises(ForeignOutput, match="a-file"):
        prepare(cfg(lake, a_file, tiny_teacher))
    assert a_file.read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare(cfg(lake, empty, tiny_teacher)).todo  # an empty folder is fine


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_unwritable_output_is_refused_before_any_work(where, lake, tiny_teacher, tmp_path, capsys):
    """An output below a file (or on a disk that takes no new folders) is one line naming it, exit
    2, before the teacher is loaded; it used to be a NotADirectoryError traceback at the claim."""
    from pipelines.cli import main

    if where == "under-a-file":
        (tmp_path / "plain").write_text("mine")
        out, reason = str(tmp_path / "plain" / "ds"), f"Not a directory: {tmp_path / 'plain'} is a file"
    else:
        out, reason = "/sys/pdistill-output/ds", ": /sys)"  # sysfs: no new folders, even for root
        try:
            os.makedirs("/sys/pdistill-output")
            os.rmdir("/sys/pdistill-output")
            pytest.skip("/sys takes new folders here")
        except FileNotFoundError:
            pytest.skip("no /sys here")
        except OSError:
            pass
    assert (
        main(
            [
                "--input",
                os.path.join(lake, "*.jsonl"),
                "--teacher",
                tiny_teacher,
                "--output",
                out,
                "--seq-len",
                "32",
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"pdistill logits: error: output {out}: cannot write to it (") and reason in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    if where == "under-a-file":
        assert (tmp_path / "plain").read_text() == "mine"


def test_claimed_output_with_foreign_files_is_refused(clean, lake, tiny_teacher, tmp_path):
    out = tmp_path / "ds"
    os.makedirs(out)
    shutil.copy(os.path.join(clean["out"], "_settings.json"), out)
    (out / "shard.00000.mds.zstd").write_bytes(b"someone else's")
    with pytest.raises(ForeignOutput, match="never writes: shard.00000.mds.zstd"):
        prepare(cfg(lake, out, tiny_teacher))


@pytest.mark.parametrize("store", ["s3_bucket", "gcs_bucket"])
def test_foreign_remote_output_is_refused(store, request, lake, tiny_teacher, tmp_path):
    local = tmp_path / "plain"
    write_plain_mds(local)
    out = storage.join(request.getfixturevalue(store), "plain")
    storage.upload_dir(str(local), out, last=("index.json",))
    index = storage.read_bytes(storage.join(out, "index.json"))
    with pytest.raises(ForeignOutput, match=r"index\.json"):
        prepare(cfg(lake, out, tiny_teacher))
    assert storage.read_bytes(storage.join(out, "index.json")) == index
    assert not storage.exists(storage.join(out, "_settings.json"))


# ---------------------------------------------------------------- output vs input


@pytest.mark.parametrize("rel_out", [".", "ds", "deep/er/ds"])
def test_output_inside_the_input_folder_is_refused(rel_out, tiny_teacher, tmp_path, capsys):
    from pipelines.cli import main

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.jsonl").write_text(json.dumps({"text": "one document"}) + "\n")
    out = os.path.normpath(os.path.join(lake, rel_out))
    for pattern in (
        str(lake),
        str(lake / "*"),
        str(lake / "*.jsonl"),
        str(lake / "**" / "*.jsonl"),
        "file://" + str(lake),
    ):
        with pytest.raises(OutputInsideInput, match="inside the input folder"):
            prepare(cfg(str(lake), out, tiny_teacher, inputs=[pattern]))
    assert main(["--input", str(lake / "*"), "--teacher", tiny_teacher, "--output", out]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert sorted(os.listdir(lake)) == ["a.jsonl"]  # refused before anything was written


def test_input_inside_the_output_is_refused(tiny_teacher, tmp_path):
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "a.jsonl").write_text(json.dumps({"text": "one document"}) + "\n")
    with pytest.raises(OutputInsideInput, match="inside the output"):
        prepare(cfg(str(tmp_path / "lake"), tmp_path, tiny_teacher))


def test_remote_output_inside_remote_input_is_refused(s3_bucket, tiny_teacher):
    with pytest.raises(OutputInsideInput, match="inside the input folder"):
        prepare(
            cfg("", storage.join(s3_bucket, "lake", "ds"), tiny_teacher, inputs=[storage.join(s3_bucket, "lake", "*")])
        )
    # a sibling folder, or the same path in another bucket, is fine for the check
    from pipelines.output import refuse_overlap

    refuse_overlap(storage.join(s3_bucket, "lake-ds"), [storage.join(s3_bucket, "lake", "*")])
    refuse_overlap("s3://other-bucket/data/lake/ds", [storage.join(s3_bucket, "lake", "*")])


def test_input_base():
    assert input_base("s3://b/lake/*.jsonl") == "s3://b/lake"
    assert input_base("/x/lake/**/p[0-9].parquet") == "/x/lake"
    assert input_base("/x/lake/") == "/x/lake"
    assert input_base("*.jsonl") == "."


# ---------------------------------------------------------------- orphans of a kill


def test_resume_removes_orphan_temp_files_of_unfinished_parts_only(clean, lake, tiny_teacher, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    units = sorted(os.listdir(os.path.join(clean["out"], "parts")))
    victim = units[-1]
    monkeypatch.setenv("PDISTILL_TEST_FAULTS", json.dumps({"stage": "sink", "units": [victim], "mode": "always"}))
    with pytest.raises(Exception, match="injected failure"):
        run(cfg(lake, out, tiny_teacher))
    monkeypatch.delenv("PDISTILL_TEST_FAULTS")
    hexes = iter(f"{i:032x}" for i in range(100))
    # what a kill inside schemas.storage.write_bytes_atomic / schemas.claim leaves behind
    orphans = [
        f"parts/{victim}/shard.00000.mds.zstd.tmp-{next(hexes)}",
        f"parts/{victim}/index.json.tmp-{next(hexes)}",
        f"dead_letter/{victim}.jsonl.tmp-{next(hexes)}",
        f"index.json.tmp-{next(hexes)}",
        f"manifest.json.tmp-{next(hexes)}",
    ]
    # not ours to delete: a temp file in a published part, and names we never write
    kept = [
        f"parts/{units[0]}/shard.00000.mds.zstd.tmp-{next(hexes)}",
        f"parts/{victim}/notes.tmp-1",
        f"parts/{victim}/shard.00000.mds.zstd.tmp-partial",
    ]
    for rel in orphans + kept:
        os.makedirs(os.path.dirname(out / rel), exist_ok=True)
        (out / rel).write_bytes(b"half written")
    run(cfg(lake, out, tiny_teacher))
    left = digest(out)
    assert not [o for o in orphans if o in left]
    assert all(k in left for k in kept)
    assert {k: v for k, v in left.items() if k not in kept} == clean["digest"]
