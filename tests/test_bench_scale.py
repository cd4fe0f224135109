"""bench/scale's quick mode runs the real planner, sink, and trainer dataset at small N and reports
time, memory and growth exponents (the speed targets themselves live in the benchmark's output)."""

import json

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")


@pytest.mark.slow
def test_scale_bench_small_sizes(tmp_path, capsys):
    from bench import scale

    out = tmp_path / "scale.json"
    assert scale.main(["--sizes", "20,60", "--json", str(out), "--keep", str(tmp_path / "work")]) == 0
    printed = capsys.readouterr().out
    assert (
        "| step | N = 20: wall / cpu, memory | N = 60: wall / cpu, memory |" in printed and "resume at 90 %" in printed
    )
    report = json.loads(out.read_text())
    assert (
        set(report["exponents"]) == set(report["cpu_exponents"]) == set(report["memory_exponents"]) == set(scale.STEPS)
    )
    assert all(r["seconds"] > 0 and r["mem_mb"] == r["mem_mb"] for s in scale.STEPS for r in report["results"][s])
    assert [r["units"] for r in report["results"]["plan"]] == [20, 60]  # one unit per synthetic file
    assert [r["samples"] for r in report["results"]["open"]] == [
        20 * scale.SAMPLES_PER_SHARD,
        60 * scale.SAMPLES_PER_SHARD,
    ]
    assert report["results"]["resume"][1]["resume_at_sample"] == int(0.9 * 60 * scale.SAMPLES_PER_SHARD)
    index = json.loads((tmp_path / "work" / "n60" / "dataset" / "index.json").read_text())
    manifest = json.loads((tmp_path / "work" / "n60" / "dataset" / "manifest.json").read_text())
    assert len(index["shards"]) == 60 and manifest["counts"]["sequences"] == 60 * scale.SAMPLES_PER_SHARD
