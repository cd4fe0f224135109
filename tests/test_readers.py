"""Reading units without a runner: compressed-stream integrity, what dead letters count, poison
pills at the tokenizer, the teacher's limits on a worker, and URI redaction."""

import gzip
import json

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from fixtures_models import make_texts  # noqa: E402

from pipelines.readers import Doc, read_unit  # noqa: E402
from pipelines.sources import detect_format, expand_inputs, plan_units  # noqa: E402
from pipelines.streams import StreamError, decompressed_chunks, lines_of  # noqa: E402
from schemas.redact import redact_text, redact_uri  # noqa: E402


def jsonl(texts) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


def read(path) -> list:
    (unit,) = plan_units(expand_inputs([str(path)]), 1000, 1 << 20)
    return list(read_unit(unit, "text"))


def zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def test_whole_streams_of_several_members_or_frames_read_completely(tmp_path):
    texts = make_texts(30, seed=1)
    a, b = jsonl(texts[:20]), jsonl(texts[20:])
    (tmp_path / "m.jsonl.gz").write_bytes(gzip.compress(a) + gzip.compress(b) + b"\x00" * 64)  # zero padding: ok
    (tmp_path / "f.jsonl.zst").write_bytes(zstd(a) + zstd(b))
    (tmp_path / "e.jsonl.gz").write_bytes(b"")
    for name in ("m.jsonl.gz", "f.jsonl.zst"):
        items = read(tmp_path / name)
        assert [d.text for d in items] == texts and all(isinstance(d, Doc) for d in items)
        assert items[20].position == {"line": 21, "byte": len(a)}
    assert read(tmp_path / "e.jsonl.gz") == []  # an empty file is an empty stream, not a broken one


@pytest.mark.parametrize("comp", ["gz", "zst"])
def test_a_stream_cut_anywhere_is_one_incomplete_dead_letter(tmp_path, comp):
    body = jsonl(make_texts(300, seed=2))
    data = gzip.compress(body) if comp == "gz" else zstd(body)
    for cut in (1, len(data) // 3, len(data) - 1):
        path = tmp_path / f"cut{cut}.jsonl.{comp}"
        path.write_bytes(data[:cut])
        (d,) = read(path)
        assert (d["kind"], d["incomplete"], d["position"]["compressed_byte"]) == ("truncated_file", True, cut)
        assert d["documents"] == body[: d["position"]["decoded_bytes"]].count(b"\n")  # lines read, not packed


@pytest.mark.parametrize("comp", ["gz", "zst"])
def test_a_corrupted_stream_is_one_incomplete_dead_letter(tmp_path, comp):
    import zstandard

    body = jsonl(make_texts(300, seed=2))  # zstd detects corruption with its frame checksum (the CLI's default)
    data = bytearray(
        gzip.compress(body) if comp == "gz" else zstandard.ZstdCompressor(write_checksum=True).compress(body)
    )
    data[len(data) // 2] ^= 0xFF
    (tmp_path / f"flip.jsonl.{comp}").write_bytes(bytes(data))
    (d,) = read(tmp_path / f"flip.jsonl.{comp}")
    assert (d["kind"], d["incomplete"]) == ("corrupt_file", True) and "does not decode" in d["reason"]


def test_trailing_garbage_after_a_member_is_corruption_not_eof(tmp_path):
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(jsonl(["fine"])) + b"garbage!")
    (d,) = read(tmp_path / "g.jsonl.gz")
    assert d["kind"] == "corrupt_file" and d["documents"] == 1 and d["incomplete"]


def test_lines_of_keeps_offsets_across_chunks():
    chunks = [b"ab", b"c\nde", b"", b"f\n\ng", b"h"]
    assert list(lines_of(iter(chunks), 100)) == [(0, b"abc\n", 4), (4, b"def\n", 4), (8, b"\n", 1), (9, b"gh", 2)]
    # a line over the limit is skipped, not held: (offset, None, length)
    assert list(lines_of(iter([b"ok\n0123", b"456789", b"ab\nend"]), limit=6)) == [
        (0, b"ok\n", 3),
        (3, None, 13),
        (16, b"end", 3),
    ]
    with pytest.raises(StreamError):
        list(decompressed_chunks(__import__("io").BytesIO(gzip.compress(b"x" * 100)[:-3]), "gz"))


def test_a_file_that_shrank_since_planning_is_flagged(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(make_texts(20, seed=3)))
    (unit,) = plan_units(expand_inputs([str(path)]), 1000, 1 << 20)
    path.write_bytes(path.read_bytes()[:100])
    last = list(read_unit(unit, "text"))[-1]
    assert last["kind"] == "truncated_file" and last["incomplete"] and "shrank" in last["reason"]


def test_truncated_stream_on_s3_is_detected_through_the_spooled_copy(s3_bucket):
    from schemas import storage

    data = gzip.compress(jsonl(make_texts(200, seed=4)))
    storage.write_bytes_atomic(storage.join(s3_bucket, "lake", "a.jsonl.gz"), data[: len(data) // 2])
    storage.write_bytes_atomic(storage.join(s3_bucket, "lake", "b.jsonl.gz"), data)
    units = plan_units(expand_inputs([storage.join(s3_bucket, "lake", "*")]), 1000, 1 << 20)
    (cut,), whole = list(read_unit(units[0], "text")), list(read_unit(units[1], "text"))
    assert cut["kind"] == "truncated_file" and cut["position"]["compressed_byte"] == len(data) // 2
    assert len(whole) == 200 and all(isinstance(d, Doc) for d in whole)


def test_byte_ranges_of_a_remote_file_skip_an_oversized_line(s3_bucket, monkeypatch):
    import pipelines.readers as readers
    from schemas import storage

    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 300)
    texts = make_texts(40, seed=5)
    body = jsonl(texts[:20]) + b"y" * 5000 + b"\n" + jsonl(texts[20:])
    storage.write_bytes_atomic(storage.join(s3_bucket, "a.jsonl"), body)
    units = plan_units(expand_inputs([storage.join(s3_bucket, "a.jsonl")]), 1000, 700)
    got = [i for u in units for i in read_unit(u, "text")]
    assert [i.text for i in got if isinstance(i, Doc)] == texts
    (d,) = [i for i in got if not isinstance(i, Doc)]
    assert d["kind"] == "record_too_large" and d["position"]["byte"] == len(jsonl(texts[:20]))


def test_tokenizer_failures_cost_only_the_bad_document(tiny_teacher):
    from pipelines.packing import Packer, load_tokenizer, pack_documents

    tok = load_tokenizer(tiny_teacher)
    texts = ["a good one.", "lone \ud800 surrogate", "another good one."]
    with pytest.raises(TypeError):
        tok(texts, add_special_tokens=False)  # the poison pill, as the real tokenizer sees it
    rejected = []
    packer = Packer(seq_len=4, sep_id=0)
    out = pack_documents(texts, tok, packer, "u0", "sha256:x", 0, rejected)
    assert [j for j, _ in rejected] == [1] and isinstance(rejected[0][1], TypeError)
    stream = [t for p in out for t in p.tokens.tolist()] + [t for t in packer.buf]
    good = [tok(t, add_special_tokens=False)["input_ids"] + [0] for t in (texts[0], texts[2])]
    assert stream == good[0] + good[1]


def test_worker_checks_positions_and_memory_before_the_first_forward(tiny_teacher):
    from pipelines.teacher import TeacherRunner
    from pipelines.teacher_limits import TeacherLimitError

    runner = TeacherRunner(tiny_teacher, selection="top_p_k", top_p=0.9, top_k=4, num_draws=4, device="cpu")
    with pytest.raises(TeacherLimitError, match="'seq_len' is 600 .* at most 512 positions"):
        runner.predict(np.zeros((1, 600), dtype=np.int64), [600], [0])
    with pytest.raises(TeacherLimitError, match=r"'batch_size' 8388608 x 'seq_len' 512 .* GiB"):
        runner.check_limits(1 << 23, 512)
    assert len(runner.predict(np.zeros((2, 16), dtype=np.int64), [16, 9], [0, 0])) == 2  # a sane batch runs
    import torch

    # loading or running the teacher must not switch autograd off for the rest of the process
    # (it once called torch.set_grad_enabled(False), and the KD loss tests then failed after it)
    assert torch.is_grad_enabled()


def test_redaction_of_uris():
    assert redact_uri("http://user:pw@h:8/a/b.jsonl?token=t&x=1") == "http://user:***@h:8/a/b.jsonl?token=***&x=1"
    assert redact_uri("https://ghp_TOKEN@github.com/o/r") == "https://***@github.com/o/r"
    assert redact_uri("s3://AKIA:SECRET@bucket/k") == "s3://AKIA:***@bucket/k"
    signed = (
        "https://s.example/b/o.parquet?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc"
        "&X-Amz-Security-Token=tt&sig=s&key=k&se=2026&api_key=q&part=2"
    )
    assert redact_uri(signed) == (
        "https://s.example/b/o.parquet?X-Amz-Algorithm=AWS4&X-Amz-Credential=***"
        "&X-Amz-Signature=***&X-Amz-Security-Token=***&sig=***&key=***&se=2026&api_key=***&part=2"
    )
    for plain in ("gs://b/dir/*.jsonl", "/local/a?b.jsonl", "file:///x/y.parquet", "s3://b/k?"):
        assert redact_uri(plain) == plain
    assert redact_text("input http://u:p@h/x?sig=1: no such file") == "input http://u:***@h/x?sig=***: no such file"
    assert detect_format(signed) == ("parquet", None)  # the query of a signed URL is not part of the file name
    assert detect_format("https://h/a.jsonl.zst?token=t") == ("jsonl", "zst")


def test_manifests_without_the_per_source_fields_still_load():
    from schemas import Manifest
    from schemas.manifest import Codec, Counts, Source, Teacher, Tokenizer, Truncation

    m = Manifest(
        teacher=Teacher("t", "r"),
        tokenizer=Tokenizer("f", 0, False),
        vocab_size=8,
        seq_len=4,
        truncation=Truncation("top_p_k", 0.9, 2),
        codec=Codec("exact", {}),
        sources=[Source("a", "fp")],
        source_fingerprint="s",
        settings_fingerprint="x",
        counts=Counts(documents=3, packed_documents=2, dead_letters=1, sequences=1, tokens=4, units=1),
    )
    raw = json.loads(m.to_json())
    for k in ("documents", "packed_documents", "dead_letters", "complete", "problem"):
        del raw["sources"][0][k]
    del raw["counts"]["incomplete_files"]
    old = Manifest.from_json(json.dumps(raw))
    assert old == m and old.sources[0].complete and old.counts.incomplete_files == 0
    raw["sources"][0]["complete"] = "no"
    with pytest.raises(ValueError, match=r"sources\[0\].complete"):
        Manifest.from_json(json.dumps(raw))


def test_records_too_large_to_hold_are_dead_letters(tmp_path, monkeypatch):
    import pipelines.readers as readers

    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 200)
    junk = b"x" * 1000  # e.g. a binary file without newlines named .jsonl
    lines = [json.dumps({"text": "small one"}).encode(), junk, json.dumps({"text": "small two"}).encode()]
    body = b"\n".join(lines) + b"\n"
    (tmp_path / "a.jsonl").write_bytes(body)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "c.txt").write_bytes(b"word " * 100)
    for name in ("a.jsonl", "b.jsonl.gz"):
        items = read(tmp_path / name)
        assert [i.text for i in items if isinstance(i, Doc)] == ["small one", "small two"]
        (d,) = [i for i in items if not isinstance(i, Doc)]
        assert (
            d["kind"] == "record_too_large"
            and d["position"]["byte"] == len(lines[0]) + 1
            and "1001 bytes" in d["reason"]
        )
    (d,) = read(tmp_path / "c.txt")
    assert d["kind"] == "record_too_large" and d["documents"] == 1
    # a byte range starting inside the huge line skips it without loading it
    units = plan_units(expand_inputs([str(tmp_path / "a.jsonl")]), 1000, 100)
    got = [i for u in units for i in read_unit(u, "text")]
    assert [i.text for i in got if isinstance(i, Doc)] == ["small one", "small two"] and len(got) == 3


def test_lines_of_matches_a_plain_split_whatever_the_chunking():
    from hypothesis import given
    from hypothesis import strategies as st

    @given(
        st.binary(max_size=300).map(lambda b: b.replace(b"\x01", b"\n")),
        st.lists(st.integers(0, 45), max_size=12),
        st.integers(0, 30),
    )
    def check(data, cuts, limit):
        bounds = sorted({min(c * 7, len(data)) for c in cuts} | {0, len(data)})
        chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
        expected, off = [], 0
        lines = [x + b"\n" for x in data.split(b"\n")][:-1]
        if data and not data.endswith(b"\n"):
            lines.append(data.rsplit(b"\n", 1)[-1])  # the last line, without its newline
        for line in lines:
            too_big = len(line) - line.endswith(b"\n") > limit
            expected.append((off, None if too_big else line, len(line)))
            off += len(line)
        assert list(lines_of(iter(chunks), limit=limit)) == expected

    check()


def test_reading_parquet_starts_no_arrow_threads(tmp_path):
    """pyarrow's thread pool can outlive the interpreter (apache/arrow#34314): with threaded
    row-group reads, 3-6 of 20 processes that read one unit aborted at exit here ("terminate called
    without an active exception", exit 134) after finishing their work, so a worker or `pdistill plan`
    reported a failure for work it had done. The reader reads row groups on the calling thread: a
    process that read Parquet has no more OS threads than before (threaded reads added 2 here)."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": make_texts(48, seed=7)}), tmp_path / "b.parquet", row_group_size=8)
    code = (
        "import os, sys; from pipelines.sources import expand_inputs, plan_units; from pipelines.readers import "
        "read_unit; units = plan_units(expand_inputs([sys.argv[1]]), rows_per_unit=8, bytes_per_unit=1200); "
        "before = len(os.listdir('/proc/self/task')); n = sum(1 for u in units for _ in read_unit(u, 'text')); "
        "print(n, len(os.listdir('/proc/self/task')) - before)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b.parquet")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["48", "0"]
