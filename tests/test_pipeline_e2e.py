"""The teacher pass end to end on the real DirectRunner with a tiny random Llama.

One clean in-process run (module fixture) is the reference; every other run (other batch size,
retried bundles, resumed after a failure, multi-process) must produce the same files byte for
byte, hence the same sample ids and decoded content.
"""

import gzip
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from fixtures_models import make_texts  # noqa: E402

from pipelines.config import PipelineConfig  # noqa: E402
from pipelines.job import SettingsMismatch, run  # noqa: E402
from schemas import Manifest, decode_dense, make_codec, sample_id  # noqa: E402


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("lake")
    (d / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in make_texts(30, seed=1)))
    (d / "b.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in make_texts(10, seed=2)).encode())
    )
    pq.write_table(pa.table({"text": make_texts(12, seed=3)}), d / "c.parquet", row_group_size=4)
    (d / "d.txt").write_text(" ".join(make_texts(6, seed=4, min_words=20)))  # one long document
    return str(d)


def config(lake, out, **kw) -> PipelineConfig:
    base = dict(
        inputs=[os.path.join(lake, "*")],
        teacher=kw.pop("teacher"),
        output=str(out),
        seq_len=32,
        top_p=0.9,
        top_k=16,
        batch_size=4,
        bytes_per_unit=1500,
        rows_per_unit=8,
        progress=False,
    )
    return PipelineConfig(**{**base, **kw})


def digest(out) -> dict:
    """sha256 of every file the pipeline wrote (call before a StreamingDataset unpacks shards beside them)."""
    out = str(out)
    return {
        os.path.relpath(os.path.join(r, f), out): hashlib.sha256(open(os.path.join(r, f), "rb").read()).hexdigest()
        for r, _, fs in os.walk(out)
        for f in fs
    }


def read_dataset(out) -> list[dict]:
    """Every sample via the stock StreamingDataset, decoded with schemas only."""
    from streaming import StreamingDataset

    m = Manifest.from_json(open(os.path.join(out, "manifest.json")).read())
    codec = make_codec(m.codec.name, m.codec.params)
    ds = StreamingDataset(local=str(out), batch_size=1, shuffle=False)
    rows = []
    for i in range(len(ds)):
        s = ds[i]
        dense = decode_dense(s, codec, m.truncation.top_k)
        rows.append(
            {
                "id": int(s["sample_id"]),
                "unit": s["unit"],
                "tokens": s["tokens"],
                "n": int(s["n_tokens"]),
                "doc_starts": list(s["doc_starts"]),
                "dense": dense,
            }
        )
    del ds
    return rows


@pytest.fixture(scope="module")
def clean(lake, tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "ds"
    report = run(config(lake, out, teacher=tiny_teacher))
    return {"out": str(out), "report": report, "digest": digest(out)}


def test_clean_run_is_complete_and_readable(clean, tiny_teacher, lake):
    out = clean["out"]
    m = Manifest.from_json(open(os.path.join(out, "manifest.json")).read())
    c = m.counts
    assert c.reconciles() and c.documents == 30 + 10 + 12 + 1 and c.dead_letters == 0
    assert c.units == len(os.listdir(os.path.join(out, "parts"))) == 3 + 1 + 2 + 1
    index = json.load(open(os.path.join(out, "index.json")))
    assert all(s["zip_data"]["basename"].startswith("parts/u000") for s in index["shards"])
    assert clean["report"].metrics["teacher_tokens"] == c.tokens and clean["report"].metrics["documents"] == c.documents
    rows = read_dataset(out)
    assert len(rows) == c.sequences and sum(r["n"] for r in rows) == c.tokens
    # ids: the stable hash of (source, unit, index), in global order
    per_unit = {}
    for r in rows:
        per_unit.setdefault(r["unit"], []).append(r)
    assert list(per_unit) == sorted(per_unit)
    for unit, rs in per_unit.items():
        assert [r["id"] for r in rs] == [sample_id(m.source_fingerprint, unit, i) for i in range(len(rs))]
        assert all(r["n"] == 32 for r in rs[:-1])  # only a unit's last sequence may be padded
    # teacher signal on every real position, none on padding
    for r in rows:
        kept = r["dense"].mask.sum(1)
        assert (kept[: r["n"]] > 0).all() and (kept[r["n"] :] == 0).all() and kept.max() <= 16
    assert len({int(k) for r in rows for k in r["dense"].mask.sum(1)[: r["n"]]}) > 3  # truncation varies
    # the tokens are the documents, each followed by the separator (EOS); no BOS (add_bos=False)
    from pipelines.packing import load_tokenizer

    tok = load_tokenizer(tiny_teacher)
    a_units = [u for u in per_unit if u.startswith("u00000-")]
    stream = [t for u in a_units for r in per_unit[u] for t in r["tokens"][: r["n"]].tolist()]
    expected = [t for text in make_texts(30, seed=1) for t in tok(text, add_special_tokens=False)["input_ids"] + [0]]
    assert stream == expected and tok.bos_token_id not in stream
    # doc_starts point at document starts: the first doc of every unit starts at 0
    assert all(per_unit[u][0]["doc_starts"][0] == 0 for u in per_unit)


def test_rerun_is_noop_and_other_settings_are_refused(clean, tiny_teacher, lake, tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PDISTILL_TEST_TEACHER_LOG", str(log))
    report = run(config(lake, clean["out"], teacher=tiny_teacher, batch_size=2))  # batch size: not a setting
    assert report.complete_before and not log.exists()
    with pytest.raises(SettingsMismatch, match=r"top_k: 16 -> 8"):
        run(config(lake, clean["out"], teacher=tiny_teacher, top_k=8))
    # a partly written output is protected the same way (via _settings.json)
    part = tmp_path / "partial"
    shutil.copytree(clean["out"], part)
    os.remove(part / "manifest.json")
    with pytest.raises(SettingsMismatch, match="seq_len: 32 -> 64"):
        run(config(lake, part, teacher=tiny_teacher, seq_len=64))
    assert not log.exists()


def test_retried_bundles_give_the_same_dataset(clean, tiny_teacher, lake, tmp_path, monkeypatch):
    """Each stage fails on the first attempt of some units; the runner retries those bundles."""
    from apache_beam.options.pipeline_options import PipelineOptions

    marks = tmp_path / "marks"
    marks.mkdir()
    faults = [
        {"stage": s, "units": us, "marker_dir": str(marks)}
        for s, us in (
            ("read", ["u00000-00000"]),
            ("teacher", ["u00002-00001", "u00000-00002"]),
            ("sink", ["u00001-00000"]),
        )
    ]
    monkeypatch.setenv("PDISTILL_TEST_FAULTS", json.dumps(faults))
    out = tmp_path / "ds"
    # a half-copied part from an earlier attempt (shards, no index.json) must be overwritten
    # (an earlier attempt had claimed the output: parts never exist without its _settings.json)
    os.makedirs(out / "parts" / "u00001-00000")
    shutil.copy(os.path.join(clean["out"], "_settings.json"), out / "_settings.json")
    (out / "parts" / "u00001-00000" / "shard.00000.mds.zstd").write_bytes(b"torn write")
    # Beam's FnApiRunner (the default DirectRunner) does not retry bundles; the bundle-based
    # DirectRunner does (up to 4 attempts), like Dataflow
    run(
        config(lake, out, teacher=tiny_teacher, batch_size=3),
        options=PipelineOptions(["--runner=BundleBasedDirectRunner"]),
    )
    assert len(os.listdir(marks)) == 4  # every injected failure happened
    assert digest(out) == clean["digest"]


def test_resume_computes_only_missing_parts(clean, tiny_teacher, lake, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    monkeypatch.setenv(
        "PDISTILL_TEST_FAULTS", json.dumps({"stage": "sink", "units": ["u00002-00000"], "mode": "always"})
    )
    with pytest.raises(Exception, match="injected failure"):
        run(config(lake, out, teacher=tiny_teacher))
    assert not (out / "manifest.json").exists()
    published = {u for u in os.listdir(out / "parts") if (out / "parts" / u / "index.json").exists()}
    assert "u00002-00000" not in published
    # a killed run can also leave a part half-copied: drop the index of one published part
    victim = sorted(published)[0] if published else None
    if victim:
        os.remove(out / "parts" / victim / "index.json")
        published.discard(victim)
    monkeypatch.delenv("PDISTILL_TEST_FAULTS")
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PDISTILL_TEST_TEACHER_LOG", str(log))
    report = run(config(lake, out, teacher=tiny_teacher))
    called = {u for line in log.read_text().splitlines() for u in json.loads(line)["units"]}
    all_units = set(os.listdir(os.path.join(clean["out"], "parts")))
    # units without sequences never reach the teacher; every other missing unit does, once
    assert called <= all_units - published and "u00002-00000" in called
    assert report.computed_units == len(all_units - published)
    assert digest(out) == clean["digest"]


def test_resume_of_a_killed_run_skips_published_parts(clean, tiny_teacher, lake, tmp_path, monkeypatch):
    """The state a killed job leaves (settings + some parts, no root index/manifest) resumes exactly."""
    out = tmp_path / "ds"
    units = sorted(os.listdir(os.path.join(clean["out"], "parts")))
    keep = units[::2]
    os.makedirs(out / "parts")
    shutil.copy(os.path.join(clean["out"], "_settings.json"), out / "_settings.json")
    for u in keep:
        shutil.copytree(
            os.path.join(clean["out"], "parts", u), out / "parts" / u, ignore=shutil.ignore_patterns("*.mds")
        )  # raw shards a reader unpacked
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PDISTILL_TEST_TEACHER_LOG", str(log))
    run(config(lake, out, teacher=tiny_teacher))
    called = {u for line in log.read_text().splitlines() for u in json.loads(line)["units"]}
    assert called == set(units) - set(keep)
    assert digest(out) == clean["digest"]


def test_bad_input_goes_to_dead_letter(tiny_teacher, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = tmp_path / "lake"
    lake.mkdir()
    good = make_texts(4, seed=9)
    lines = [
        json.dumps({"text": good[0]}).encode(),
        b'{"text": "unterminated',
        b'{"text": "caf\xe9"}',
        json.dumps({"body": "no text key"}).encode(),
        json.dumps({"text": "  "}).encode(),
        json.dumps({"text": good[1]}).encode(),
    ]
    (lake / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (lake / "b.txt").write_bytes(b"latin-1 \xe9t\xe9")
    pq.write_table(pa.table({"text": [good[2], None, ""]}), lake / "c.parquet")
    pq.write_table(pa.table({"content": [good[3]]}), lake / "d.parquet")
    (lake / "e.parquet").write_bytes(b"not a parquet file at all")
    (lake / "f.jsonl.gz").write_bytes(gzip.compress(json.dumps({"text": good[3]}).encode() + b"\n" * 50)[:-12])
    out = tmp_path / "ds"
    report = run(config(str(lake), out, teacher=tiny_teacher))
    m = Manifest.from_json(open(out / "manifest.json").read())
    dead = [json.loads(line) for f in sorted(os.listdir(out / "dead_letter")) for line in open(out / "dead_letter" / f)]
    # a dead letter counts for the documents it stands for (0 for a file whose rows cannot be counted)
    assert (
        m.counts.reconciles()
        and m.counts.dead_letters == sum(d["documents"] for d in dead) == report.summary["dead_letters"]
    )
    by = {(os.path.basename(d["file"]), d["kind"]) for d in dead}
    assert by == {
        ("a.jsonl", "malformed_json"),
        ("a.jsonl", "not_utf8"),
        ("a.jsonl", "missing_text"),
        ("a.jsonl", "empty_text"),
        ("b.txt", "not_utf8"),
        ("c.parquet", "missing_text"),
        ("c.parquet", "empty_text"),
        ("d.parquet", "missing_text"),
        ("e.parquet", "unreadable_file"),
        ("f.jsonl.gz", "truncated_file"),
    }
    assert all(d["reason"] and isinstance(d["position"], dict) for d in dead)
    a = sorted((d["position"]["byte"], d["kind"]) for d in dead if d["file"].endswith("a.jsonl"))
    assert [p for p, _ in a] == [sum(len(x) + 1 for x in lines[:i]) for i in (1, 2, 3, 4)]
    assert {d["position"]["row"] for d in dead if d["file"].endswith("c.parquet")} == {1, 2}
    # a.jsonl x2, c.parquet x1; documents: a.jsonl 6 + b.txt 1 + c.parquet 3 + d.parquet 1 (its one row) + e.parquet
    # 0 (unreadable: its rows cannot be counted) + f.jsonl.gz 0 (the cut falls before its first line is decoded)
    assert m.counts.packed_documents == 2 + 1 and m.counts.documents == 11
    assert m.counts.incomplete_files == 2 and sorted(os.path.basename(s.uri) for s in m.sources if not s.complete) == [
        "e.parquet",
        "f.jsonl.gz",
    ]


def test_fail_fast_before_any_work(tiny_teacher, lake, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "ds"
    missing = str(tmp_path / "no-such-bucket" / "*.jsonl")
    assert main(["--input", missing, "--teacher", tiny_teacher, "--output", str(out)]) == 2
    assert missing in capsys.readouterr().err and not out.exists()
    bad_teacher = tmp_path / "teacher"
    bad_teacher.mkdir()
    shutil.copy(os.path.join(tiny_teacher, "tokenizer.json"), bad_teacher)
    shutil.copy(os.path.join(tiny_teacher, "tokenizer_config.json"), bad_teacher)
    (bad_teacher / "config.json").write_text("{ not json")
    assert main(["--input", os.path.join(lake, "a.jsonl"), "--teacher", str(bad_teacher), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"teacher {bad_teacher}" in err and not out.exists()


def test_sampled_selection(tiny_teacher, lake, tmp_path):
    out = tmp_path / "ds"
    run(
        config(
            lake, out, teacher=tiny_teacher, inputs=[os.path.join(lake, "c.parquet")], selection="sample", num_draws=12
        )
    )
    m = Manifest.from_json(open(out / "manifest.json").read())
    assert (m.truncation.method, m.truncation.top_k, m.truncation.top_p) == ("sample", 12, 1.0)
    first = digest(out)
    for r in read_dataset(out):
        p = np.exp(np.where(r["dense"].mask, r["dense"].logp, -np.inf)).sum(1)
        np.testing.assert_allclose(p[: r["n"]], 1.0, rtol=1e-5)
    out2 = tmp_path / "ds2"
    run(
        config(
            lake,
            out2,
            teacher=tiny_teacher,
            inputs=[os.path.join(lake, "c.parquet")],
            selection="sample",
            num_draws=12,
            batch_size=1,
        )
    )
    assert digest(out2) == first  # the draws are seeded per sample id: batch size does not matter


@pytest.mark.slow
def test_multi_process_run_is_identical(clean, tiny_teacher, lake, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PDISTILL_TEST_TEACHER_LOG", str(log))
    # one teacher shared by both worker processes (Beam multi_process_shared), batches of 3, not 4
    run(
        config(
            lake,
            out,
            teacher=tiny_teacher,
            batch_size=3,
            direct_running_mode="multi_processing",
            direct_num_workers=2,
            share_model=True,
        )
    )
    assert digest(out) == clean["digest"]  # byte-identical shards, indexes and manifest
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({c["model"]["pid"] for c in calls}) == 1  # every batch ran on the one shared model
    assert all(c["model"]["pid"] != os.getpid() for c in calls)  # ...in a worker process
    assert len(read_dataset(out)) == clean["report"].summary["sequences"]
