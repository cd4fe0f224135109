"""Hostile inputs on the real DirectRunner: nothing is lost silently, nothing kills the job, no
secret is persisted, and settings the teacher cannot serve are refused before anything is written.

Every document read ends up packed or in dead_letter/ (a record counts for the documents it stands
for); the manifest's counts reconcile in total and per source, and flags each source that was not
read to its end.
"""

import gzip
import http.server
import json
import os
import threading

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from fixtures_models import make_texts  # noqa: E402

from pipelines.config import PipelineConfig  # noqa: E402
from pipelines.job import run  # noqa: E402
from schemas import Manifest  # noqa: E402


def config(inputs, out, teacher, **kw) -> PipelineConfig:
    base = dict(
        inputs=inputs,
        teacher=teacher,
        output=str(out),
        seq_len=32,
        top_p=0.9,
        top_k=8,
        batch_size=4,
        rows_per_unit=4,
        progress=False,
    )
    return PipelineConfig(**{**base, **kw})


def small_run_argv(inputs, teacher, out, *extra) -> list[str]:
    """`pdistill logits` arguments for a small run of the tiny teacher (seq_len 32, top-8), then `extra`."""
    return ["--input", str(inputs), "--teacher", str(teacher), "--output", str(out), "--seq-len", "32",
            "--top-k", "8", "--no-progress", *extra]  # fmt: skip


def jsonl(texts) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


def dead_letters(out) -> list[dict]:
    d = os.path.join(out, "dead_letter")
    return (
        [json.loads(line) for f in sorted(os.listdir(d)) for line in open(os.path.join(d, f))]
        if os.path.isdir(d)
        else []
    )


def manifest(out) -> Manifest:
    return Manifest.from_json(open(os.path.join(out, "manifest.json")).read())


def assert_reconciles(out) -> tuple[Manifest, list[dict]]:
    """documents = packed + dead letters, in total and per source; dead letters sum to the counter."""
    m, dead = manifest(out), dead_letters(out)
    c = m.counts
    assert c.reconciles()
    assert c.dead_letters == sum(d["documents"] for d in dead)
    for s in m.sources:
        assert s.documents == s.packed_documents + s.dead_letters
    for k in ("documents", "packed_documents", "dead_letters"):
        assert getattr(c, k) == sum(getattr(s, k) for s in m.sources)
    assert c.incomplete_files == sum(not s.complete for s in m.sources)
    return m, dead


def test_truncated_streams_are_dead_lettered_and_flagged(tiny_teacher, tmp_path):
    import zstandard

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a_good.jsonl").write_bytes(jsonl(make_texts(5, seed=1)))
    zst = zstandard.ZstdCompressor().compress(jsonl(make_texts(40, seed=2)))
    (lake / "b_cut50.jsonl.zst").write_bytes(zst[: len(zst) // 2])
    body = jsonl(make_texts(600, seed=3))
    gz = gzip.compress(body)
    (lake / "c_cut60.jsonl.gz").write_bytes(gz[: len(gz) * 6 // 10])
    txt = zstandard.ZstdCompressor().compress(" ".join(make_texts(30, seed=4)).encode())
    (lake / "d_cut.txt.zst").write_bytes(txt[: len(txt) // 2])
    plain = jsonl(make_texts(20, seed=5))
    cut_at = plain.index(b"\n", len(plain) // 2) - 5  # inside the record that straddles the middle
    (lake / "e_cut.jsonl").write_bytes(plain[:cut_at])
    out = tmp_path / "ds"
    report = run(config([str(lake / "*")], out, tiny_teacher))
    m, dead = assert_reconciles(out)
    by_name = {os.path.basename(s.uri): s for s in m.sources}
    assert by_name["a_good.jsonl"].complete and by_name["a_good.jsonl"].packed_documents == 5
    cut = ["b_cut50.jsonl.zst", "c_cut60.jsonl.gz", "d_cut.txt.zst"]
    assert m.counts.incomplete_files == 4 and report.summary["incomplete_files"] == 4
    for name in cut:
        s = by_name[name]
        assert not s.complete and "truncated" in s.problem and s.packed_documents == 0  # a partial file is not used
        (d,) = [d for d in dead if d["file"].endswith(name)]
        size = os.path.getsize(lake / name)
        assert d["kind"] == "truncated_file" and d["incomplete"] is True
        assert d["position"]["compressed_byte"] == size and f"compressed byte {size}" in d["reason"]
        assert s.documents == s.dead_letters == d["documents"]
    # the gzip stream decodes progressively: the lines read before the cut are counted, not packed
    c = by_name["c_cut60.jsonl.gz"]
    assert 0 < c.documents < 600 and c.documents == body[
        : [d for d in dead if "c_cut60" in d["file"]][0]["position"]["decoded_bytes"]
    ].count(b"\n")
    assert by_name["d_cut.txt.zst"].documents == 1  # a text file is one document: counted, not "empty"
    # an uncompressed JSONL cut inside a record: its whole lines stand alone and are used, the cut
    # record is a dead letter and the file is flagged
    e = by_name["e_cut.jsonl"]
    assert (
        not e.complete
        and "looks truncated" in e.problem
        and (e.packed_documents, e.dead_letters) == (plain[:cut_at].count(b"\n"), 1)
    )
    assert m.counts.packed_documents == 5 + e.packed_documents


def test_every_document_is_counted_and_poison_pills_are_dead_letters(tiny_teacher, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = tmp_path / "lake"
    lake.mkdir()
    good = make_texts(6, seed=5)
    lines = [
        json.dumps({"text": good[0]}),
        r'{"text": "lone \ud800 x"}',
        '{"text": 5}',
        '{"text": null}',
        r'{"text": "pair \ud83d\ude00 is fine"}',
        json.dumps({"text": good[1]}),
    ]
    (lake / "a.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.table({"text": [f"row {i} " + good[2] for i in range(12)]}), lake / "b.parquet", row_group_size=4)
    raw = bytearray((lake / "b.parquet").read_bytes())  # corrupt row group 1 (rows 4..7)
    col = pq.ParquetFile(lake / "b.parquet").metadata.row_group(1).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    raw[start : start + col.total_compressed_size] = b"\xab" * col.total_compressed_size
    (lake / "b.parquet").write_bytes(bytes(raw))
    pq.write_table(pa.table({"body": good[3:6] + good[3:6] + [good[3]]}), lake / "c.parquet")  # 7 rows, no text
    (lake / "d.parquet").write_bytes(b"PAR1 not really")
    with open(os.fsencode(lake) + b"/e_caf\xe9.jsonl", "wb") as f:  # a file name that is not UTF-8
        f.write(jsonl(good[4:5]) + b'{"text": [1]}\n')
    out = tmp_path / "ds"
    run(config([str(lake / "*")], out, tiny_teacher))  # the lone surrogate used to kill the job (TypeError)
    m, dead = assert_reconciles(out)
    by_name = {os.path.basename(s.uri): s for s in m.sources}
    kinds = {(os.path.basename(d["file"]), d["kind"], d["documents"]) for d in dead}
    assert kinds == {
        ("a.jsonl", "invalid_unicode", 1),
        ("a.jsonl", "wrong_type", 1),
        ("a.jsonl", "missing_text", 1),
        ("b.parquet", "unreadable_row_group", 4),
        ("c.parquet", "missing_text", 7),
        ("d.parquet", "unreadable_file", 0),
        ("e_caf\\udce9.jsonl", "wrong_type", 1),
    }
    (pill,) = [d for d in dead if d["kind"] == "invalid_unicode"]
    assert "U+D800" in pill["reason"] and pill["position"] == {"byte": len(lines[0]) + 1}
    assert (by_name["a.jsonl"].documents, by_name["a.jsonl"].packed_documents) == (6, 3)
    assert (by_name["b.parquet"].documents, by_name["b.parquet"].packed_documents) == (12, 8)
    assert by_name["b.parquet"].complete  # every row is accounted for
    assert (by_name["c.parquet"].documents, by_name["c.parquet"].dead_letters) == (7, 7)
    d = by_name["d.parquet"]  # its rows cannot be counted: flagged, not claimed as documents
    assert (d.documents, d.complete) == (0, False) and "cannot read" in d.problem
    assert (m.counts.documents, m.counts.incomplete_files) == (6 + 12 + 7 + 2, 1)


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_lake(tmp_path):
    """A real HTTP server over a folder (fsspec's HTTPFileSystem reads it); yields (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: _Files(*a, directory=str(root), **kw))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_credentials_in_input_uris_are_never_persisted(tiny_teacher, tmp_path, http_lake, capsys, caplog):
    import logging

    from pipelines.cli import main

    caplog.set_level(logging.DEBUG)  # every log record of every library, not only what reaches stderr
    host, root = http_lake
    (root / "a.jsonl").write_bytes(jsonl(make_texts(4, seed=6)) + b'{"text": 7}\n')
    uri = f"http://reader:s3cr3t-pw@{host}/a.jsonl?X-Amz-Signature=SIGSECRET&token=TOKSECRET&v=2"
    out = tmp_path / "ds"
    assert main(small_run_argv(uri, tiny_teacher, str(out), "--format", "jsonl")) == 0
    printed = "".join(capsys.readouterr()) + caplog.text
    written = {
        os.path.relpath(os.path.join(r, f), out): open(os.path.join(r, f), "rb").read()
        for r, _, fs in os.walk(out)
        for f in fs
    }
    for secret in (b"s3cr3t-pw", b"SIGSECRET", b"TOKSECRET"):
        assert not [name for name, data in written.items() if secret in data], secret
        assert secret.decode() not in printed
    m, dead = assert_reconciles(out)
    redacted = f"http://reader:***@{host}/a.jsonl?X-Amz-Signature=***&token=***&v=2"
    assert [s.uri for s in m.sources] == [redacted] and dead[0]["file"] == redacted
    settings = json.loads(written["_settings.json"])
    assert list(settings["source_versions"]) == [redacted]
    # a rotated signature or token is the same input: the re-run finds the dataset complete
    rotated = uri.replace("SIGSECRET", "SIG2").replace("TOKSECRET", "TOK2")
    assert main(small_run_argv(rotated, tiny_teacher, str(out), "--format", "jsonl")) == 0
    assert "already complete" in capsys.readouterr().out
    # a missing input's error names it without the secret
    assert (
        main(
            [
                "--input",
                uri.replace("a.jsonl", "gone.jsonl"),
                "--teacher",
                tiny_teacher,
                "--output",
                str(tmp_path / "ds2"),
                "--format",
                "jsonl",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "gone.jsonl" in err and "s3cr3t-pw" not in err and "TOKSECRET" not in err
    assert caplog.records and not [s for s in ("s3cr3t-pw", "SIGSECRET", "TOKSECRET") if s in caplog.text]


def test_seq_len_beyond_the_teachers_positions_is_refused(tiny_teacher, tmp_path, capsys):
    from pipelines.cli import main

    lake = tmp_path / "a.jsonl"
    lake.write_bytes(jsonl(make_texts(3, seed=7)))
    out = tmp_path / "ds"
    assert main(["--input", str(lake), "--teacher", tiny_teacher, "--output", str(out), "--seq-len", "1024"]) == 2
    err = capsys.readouterr().err
    assert "'seq_len' is 1024" in err and "at most 512 positions" in err and not out.exists()


def test_a_forward_that_cannot_fit_in_memory_is_refused(tiny_teacher, tmp_path, capsys):
    from pipelines.cli import main

    lake = tmp_path / "a.jsonl"
    lake.write_bytes(jsonl(make_texts(3, seed=7)))
    out = tmp_path / "ds"
    # 2^24 x 512 x vocab 320 float32 logits = 10 TiB: refused before anything is written
    assert (
        main(
            [
                "--input",
                str(lake),
                "--teacher",
                tiny_teacher,
                "--output",
                str(out),
                "--seq-len",
                "512",
                "--batch-size",
                str(1 << 24),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'batch_size' 16777216 x 'seq_len' 512" in err and "GiB" in err and "logits 10240.00" in err
    assert not out.exists()


def test_a_sequence_the_teacher_cannot_score_is_a_dead_letter_not_a_failed_job(tiny_teacher, tmp_path, capsys):
    """A teacher that overflows on one input (non-finite logits, as a half-precision teacher can)
    used to fail the job on every re-run. The sequence becomes a dead letter with its tokens; the
    rest of the dataset is written, and the counts say what was not scored."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.cli import print_report
    from schemas import DatasetDir

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, teacher)
    tok = AutoTokenizer.from_pretrained(str(teacher))
    poison = tok("~", add_special_tokens=False)["input_ids"]
    assert len(poison) == 1
    model = AutoModelForCausalLM.from_pretrained(str(teacher))
    with torch.no_grad():
        model.model.embed_tokens.weight[poison[0]] = float("inf")  # overflows wherever "~" is read
    model.save_pretrained(str(teacher), safe_serialization=True)

    lake = tmp_path / "lake"
    lake.mkdir()
    texts = make_texts(30, seed=5)
    texts[17] = texts[17] + " ~ " + texts[3]
    (lake / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    common = dict(
        inputs=[str(lake / "*.jsonl")], seq_len=32, top_k=8, rows_per_unit=10, bytes_per_unit=1 << 20, progress=False
    )
    report = run(PipelineConfig(teacher=str(teacher), output=str(tmp_path / "ds"), **common))
    clean = run(PipelineConfig(teacher=tiny_teacher, output=str(tmp_path / "clean"), **common))
    c = Manifest.from_json((tmp_path / "ds" / "manifest.json").read_text()).counts
    ref = Manifest.from_json((tmp_path / "clean" / "manifest.json").read_text()).counts
    assert c.unscored_sequences >= 1 and ref.unscored_sequences == 0
    # nothing lost: written + unscored is what the clean run wrote; documents still reconcile
    assert c.sequences + c.unscored_sequences == ref.sequences
    assert c.tokens + c.unscored_tokens == ref.tokens
    assert c.reconciles() and (c.documents, c.packed_documents, c.dead_letters) == (30, 30, 0)
    letters = [
        json.loads(line)
        for f in sorted((tmp_path / "ds" / "dead_letter").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    unscored = [d for d in letters if d["kind"] == "teacher_unscored"]
    assert len(unscored) == len(letters) == c.unscored_sequences
    assert sum(len(d["tokens"]) for d in unscored) == c.unscored_tokens
    assert all(d["documents"] == 0 and "not finite" in d["reason"] and d["file"].endswith("a.jsonl") for d in unscored)
    assert any(poison[0] in d["tokens"] for d in unscored)
    assert DatasetDir(str(tmp_path / "ds")).verify().whole
    print_report(report)
    assert f"could not score {c.unscored_sequences} sequences" in capsys.readouterr().out
    assert clean.summary["unscored_sequences"] == 0
