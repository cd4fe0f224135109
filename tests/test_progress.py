"""The teacher pass's progress line (`pipelines.progress`): the ETA arithmetic, and a real run's line."""

from __future__ import annotations

import json
import logging
import os

import pytest

pytest.importorskip("apache_beam")

from pipelines.progress import Counts, Rate, estimate_total, eta_seconds, format_line  # noqa: E402


def test_total_is_estimated_from_the_input_read_and_exact_once_all_is():
    assert estimate_total(Counts(tokens=100, sequences=2), units_todo=8) is None  # no unit read yet
    # 2 of 8 equal units read (weight 1 each), 1,000 tokens between them: ~4,000 in all
    assert estimate_total(Counts(tokens=900, units_read=2, read_tokens=1000, read_weight=2), units_todo=8) == 4000
    # weighted by input bytes: the 2 units read were small (300 of 2,400 bytes to do), so ~8,000
    c = Counts(tokens=900, units_read=2, read_tokens=1000, read_weight=300.0)
    assert estimate_total(c, units_todo=8, weight_todo=2400.0) == 8000
    # every unit read: the packed tokens are the total, whatever the estimate said
    assert estimate_total(Counts(tokens=3000, units_read=8, read_tokens=3500, read_weight=8), units_todo=8) == 3500
    # never below what the teacher has already done
    assert estimate_total(Counts(tokens=5000, units_read=1, read_tokens=500, read_weight=1), units_todo=8) == 5000


def test_unit_weights_are_input_bytes(tmp_path):
    """A Parquet unit weighs its rows' share of the file, a JSONL range its bytes, a gzip file all of it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.progress import unit_weights
    from pipelines.sources import SourceFile, plan_units

    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(24)]}), tmp_path / "a.parquet", row_group_size=16)
    (tmp_path / "b.jsonl").write_text("x" * 2500)
    (tmp_path / "c.jsonl.gz").write_bytes(b"y" * 700)
    files = [
        SourceFile(str(tmp_path / "a.parquet"), 9000, "v", "parquet", None),
        SourceFile(str(tmp_path / "b.jsonl"), 2500, "v", "jsonl", None),
        SourceFile(str(tmp_path / "c.jsonl.gz"), 700, "v", "jsonl", "gz"),
    ]
    units = plan_units(files, rows_per_unit=16, bytes_per_unit=1000)
    w = unit_weights(files, units)
    assert sorted(w.values()) == [500.0, 700.0, 1000.0, 1000.0, 3000.0, 6000.0]  # 16 + 8 rows of 24; 1000+1000+500
    assert sum(w.values()) == 9000 + 2500 + 700


def test_eta_is_what_is_left_over_the_rate():
    assert eta_seconds(1000, 4000, 100.0) == 30.0
    assert eta_seconds(4000, 4000, 100.0) == 0.0
    assert eta_seconds(4100, 4000, 100.0) == 0.0  # a retried bundle counted twice: never negative
    assert eta_seconds(1000, None, 100.0) is None and eta_seconds(1000, 4000, None) is None


def test_rate_is_measured_over_the_recent_window():
    r = Rate(window=10.0)
    assert r.add(0.0, 0) is None  # one observation: no rate
    assert r.add(5.0, 0) is None  # model still loading: nothing done, no rate (not 0 tokens/s)
    assert r.add(10.0, 1000) == pytest.approx(200.0)  # counted from the last observation without tokens
    assert r.add(15.0, 2000) == pytest.approx(200.0)
    # older observations drop out of the window: 3,000 tokens over the last 10 s
    assert r.add(25.0, 5000) == pytest.approx(300.0)


def test_line_shows_tokens_rate_eta_and_parts():
    c = Counts(sequences=48, tokens=12_288, units_read=2, read_tokens=13_000, read_weight=2)
    line = format_line(c, units_todo=8, parts=0, rate=300.0, elapsed=60.0)  # (52,000 - 12,288) / 300 = 132 s
    assert line == (
        "teacher pass: 12,288 / ~52,000 tokens (48 sequences), 300 tokens/s, ETA 2m12s; 0/8 parts published"
    )
    early = format_line(Counts(), units_todo=8, parts=0, rate=None, elapsed=20.0)
    assert "0 tokens" in early and "starting" in early and "ETA after the first unit" in early
    remote = format_line(None, units_todo=8, parts=3, rate=None, elapsed=75.0)
    assert remote == "teacher pass: 3/8 parts published (1m15s)"
    done = format_line(
        Counts(sequences=200, tokens=51_000), units_todo=8, parts=8, rate=None, elapsed=200.0, final=True
    )
    assert (
        done == "teacher pass: done, 51,000 tokens (200 sequences) in 3m20s, 255 tokens/s overall; 8/8 parts published"
    )


def test_a_real_run_reports_the_tokens_it_wrote(tmp_path, tiny_teacher, caplog):
    """`pdistill logits` on the DirectRunner with two worker threads: the workers' counts reach the
    launcher's progress line, whose tokens and sequences are the manifest's; --report-json holds the
    same report as data."""
    from fixtures_models import make_texts

    from pipelines.cli import main

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in make_texts(40, seed=1)))
    report_path = tmp_path / "report.json"
    argv = [
        "--input",
        os.path.join(lake, "*.jsonl"),
        "--teacher",
        tiny_teacher,
        "--output",
        str(tmp_path / "ds"),
        "--seq-len",
        "32",
        "--top-p",
        "0.9",
        "--top-k",
        "16",
        "--batch-size",
        "4",
        "--bytes-per-unit",
        "1500",
        "--direct-running-mode",
        "multi_threading",
        "--direct-num-workers",
        "2",
        "--report-json",
        str(report_path),
    ]
    with caplog.at_level(logging.INFO, logger="pdistill.pipeline"):
        assert main(argv) == 0
    report = json.loads(report_path.read_text())
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert report["summary"] == manifest["counts"] and report["computed_units"] == report["units"] > 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("teacher pass:")]
    c = manifest["counts"]
    assert lines and lines[-1].startswith(
        f"teacher pass: done, {c['tokens']:,} tokens ({c['sequences']:,} sequences) in "
    )
    assert lines[-1].endswith(f"{c['units']}/{c['units']} parts published")
