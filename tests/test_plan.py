"""`pdistill plan`: deterministic stratified sampling, dead letters counted as the run counts them,
clear errors, the throughput model, and planned vs actual through `pdistill inspect --plan`."""

import gzip
import json
import os
import shutil

import pytest

pytest.importorskip("apache_beam")

from fixtures_models import make_texts  # noqa: E402

from pdistill import plan as plan_cli  # noqa: E402
from pdistill.plan.estimate import document_lengths, throughput, time_and_cost  # noqa: E402
from pdistill.plan.sample import choose_units, draw  # noqa: E402
from pipelines.sources import expand_inputs, plan_units  # noqa: E402


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("plan-lake")
    for i in range(3):
        (d / f"a{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in make_texts(40, seed=i)))
    pq.write_table(pa.table({"text": make_texts(48, seed=7)}), d / "b.parquet", row_group_size=8)
    return str(d)


def listing(lake):
    files = expand_inputs([os.path.join(lake, "*")])
    return files, plan_units(files, rows_per_unit=8, bytes_per_unit=1200)


def test_sample_is_deterministic_and_stratified(lake):
    files, units = listing(lake)
    a = draw(files, units, "text", seed=3, max_units=64, sample_fraction=0.1)
    b = draw(files, units, "text", seed=3, max_units=64, sample_fraction=0.1)
    assert [k[:2] for k in a.docs] == [k[:2] for k in b.docs] and a.docs
    other = draw(files, units, "text", seed=4, max_units=64, sample_fraction=0.1)
    assert [k[:2] for k in other.docs] != [k[:2] for k in a.docs]
    docs = sum(r.good for r in a.read)
    assert docs == 3 * 40 + 48 and sum(a.draws) == -(-docs // 10)  # ceil(10 %) of what was read
    # systematic by bytes over the units in plan order: a unit holding more text than the spacing
    # between draws is always drawn from
    spacing = sum(r.text_bytes for r in a.read) / sum(a.draws)
    per_unit = {u for u, _, _ in a.docs}
    assert all(r.name in per_unit for r in a.read if r.text_bytes >= spacing) and len(per_unit) > 1
    # fewer units than files allows: one unit from each of 4 files before any file gives two
    chosen = choose_units(units, 4, seed=3)
    assert len({u.uri for u in chosen}) == 4
    assert {u.name for u in choose_units(list(reversed(units)), 4, seed=3)} == {u.name for u in chosen}
    assert sum(draw(files, units, "text", seed=3, sample_docs=7).draws) == 7


def test_sample_is_the_same_in_processes_with_other_hash_seeds(lake):
    """Names, not Python's per-process string hashing or listing order, decide the sample."""
    import subprocess
    import sys

    code = (
        "import json, os, sys; from pdistill.plan.sample import draw; "
        "from pipelines.sources import expand_inputs, plan_units; "
        "files = expand_inputs([os.path.join(sys.argv[1], '*')]); "
        "units = plan_units(files, rows_per_unit=8, bytes_per_unit=1200); "
        "s = draw(files, units, 'text', seed=3, max_units=3, sample_fraction=0.1); "
        "print(json.dumps([[u, i] for u, i, _ in s.docs]))"
    )
    keys = []
    for hash_seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code, lake], env=env, capture_output=True, text=True, check=True)
        keys.append(out.stdout.strip())
    assert keys[0] == keys[1] == keys[2] and keys[0] != "[]"


def test_document_lengths_speak_for_the_lake_not_the_size_proportional_draws(tmp_path):
    """200 short documents (10 words) and 20 long ones (500 words): the draws, by bytes, are mostly
    long documents; the plan's distribution must be the lake's (median 10 words), not theirs (500)."""
    d = tmp_path / "lake"
    d.mkdir()
    texts = [" ".join(["short"] * 10)] * 200 + [" ".join(["long"] * 500)] * 20
    order = sorted(range(len(texts)), key=lambda i: (i * 7919) % len(texts))  # long ones spread out
    (d / "a.jsonl").write_text("".join(json.dumps({"text": texts[i]}) + "\n" for i in order))
    files = expand_inputs([str(d / "*")])
    s = draw(files, plan_units(files, rows_per_unit=1000, bytes_per_unit=1 << 20), "text", seed=1, sample_fraction=0.05)
    words = [len(t.split()) for _, _, t in s.docs]  # a whitespace "tokenizer"
    assert sorted(words)[len(words) // 2] == 500  # the draws themselves: mostly long documents
    per_byte = sum(w * n for w, n in zip(words, s.draws)) / sum(len(t) * n for (_, _, t), n in zip(s.docs, s.draws))
    dl = document_lengths(s.doc_bytes, per_byte, seq_len=64)
    # one tokens/byte for all (here 0.17 words/byte for the short ones, 0.2 for the long): within 20 %
    assert (
        dl["documents"] == 220 and dl["p50"] == pytest.approx(10, rel=0.2) and dl["p99"] == pytest.approx(500, rel=0.2)
    )
    assert dl["share_longer_than_seq_len"] == pytest.approx(20 / 220)  # 9 % of documents
    assert dl["token_share_in_longer_than_seq_len"] == pytest.approx(10000 / 12000, rel=0.05)  # 83 % of tokens
    assert dl["mean"] == pytest.approx(12000 / 220, rel=0.2)


def test_throughput_model_is_stated_and_overridable():
    shape = {"params": 1_000_000_000, "layers": 24, "width": 2048}
    flops = 2 * 1e9 + 2 * 24 * 1024 * 2048
    t = throughput(measured_tps=100.0, seq_len=1024, shape=shape, gpu="H100", mfu=0.5)
    assert t["model"] == "flops" and t["tokens_per_s"] == pytest.approx(989e12 * 0.5 / flops)
    assert "989" in t["how"] and "MFU 0.5" in t["how"]
    assert throughput(measured_tps=100.0, seq_len=1024, shape=shape, gpu="a100")["mfu"] == 0.4
    assert throughput(measured_tps=100.0, seq_len=1024, shape=shape, tokens_per_second=5e4)["tokens_per_s"] == 5e4
    assert throughput(measured_tps=100.0, seq_len=1024, shape=shape)["model"] == "measured"
    # wall time: spread over the workers, but a unit is one task
    pred = {
        "tokens": dict.fromkeys(("estimate", "low", "high"), 3.6e6),
        "largest_unit_tokens": dict.fromkeys(("estimate", "low", "high"), 1.8e5),
    }
    tc = time_and_cost(pred, 1000.0, 4, 2.5)
    assert tc["accelerator_hours"]["estimate"] == pytest.approx(1.0) and tc["cost"]["estimate"] == pytest.approx(2.5)
    assert tc["wall_hours"]["estimate"] == pytest.approx(0.25)
    assert time_and_cost(pred, 1000.0, 100, None)["wall_hours"]["estimate"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="unknown accelerator"):
        throughput(measured_tps=1.0, seq_len=8, shape=shape, gpu="abacus")


def test_unreachable_lake_and_wrong_teacher_fail_clearly(tiny_teacher, lake, tmp_path, capsys):
    missing = str(tmp_path / "no-such-bucket" / "*.jsonl")
    out = tmp_path / "plan.json"
    assert plan_cli.main(["--input", missing, "--teacher", tiny_teacher, "--plan", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdistill plan: error:") and missing in err and not out.exists()
    bad = tmp_path / "teacher"
    bad.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tiny_teacher, name), bad)
    (bad / "config.json").write_text("{ not json")
    assert plan_cli.main(["--input", os.path.join(lake, "*"), "--teacher", str(bad), "--plan", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"teacher {bad}" in err and "Traceback" not in err and not out.exists()
    assert plan_cli.main(["--input", os.path.join(lake, "*"), "--teacher", tiny_teacher, "--sample-fraction", "0"]) == 2
    assert "--sample-fraction" in capsys.readouterr().err
    (tmp_path / "plain").write_text("mine")  # a --plan below a file: refused before the sample is read
    blocked = tmp_path / "plain" / "plan.json"
    assert plan_cli.main(["--input", os.path.join(lake, "*"), "--teacher", tiny_teacher, "--plan", str(blocked)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"pdistill plan: error: --plan {blocked}: cannot write to it (Not a directory")
        and "Traceback" not in err
        and len(err.strip().splitlines()) == 1
    ), err
    assert (
        plan_cli.main(
            ["--input", os.path.join(lake, "*"), "--teacher", tiny_teacher, "--config", str(tmp_path / "none.yaml")]
        )
        == 2
    )
    assert f"--config {tmp_path / 'none.yaml'}: cannot read it (No such file or directory)" in capsys.readouterr().err


@pytest.mark.slow
def test_plan_counts_dead_letters_like_the_run(tiny_teacher, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pdistill.inspect import main as inspect_main
    from pipelines.config import PipelineConfig
    from pipelines.job import run

    d = tmp_path / "lake"
    d.mkdir()
    good = make_texts(60, seed=9)
    lines = [json.dumps({"text": t}).encode() for t in good[:40]]
    lines[5], lines[17] = b'{"text": "unterminated', json.dumps({"body": "no text key"}).encode()
    (d / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    pq.write_table(pa.table({"text": good[40:50] + [None, ""]}), d / "c.parquet", row_group_size=4)
    pq.write_table(pa.table({"content": good[50:]}), d / "d.parquet")  # no text column
    (d / "e.parquet").write_bytes(b"not a parquet file at all")
    (d / "f.jsonl.gz").write_bytes(gzip.compress(json.dumps({"text": good[0]}).encode() + b"\n" * 50)[:-12])
    common = [
        "--input",
        str(d / "*"),
        "--teacher",
        tiny_teacher,
        "--seq-len",
        "32",
        "--top-k",
        "16",
        "--rows-per-unit",
        "4",
        "--bytes-per-unit",
        "1500",
    ]
    plan_path = tmp_path / "plan.json"
    assert (
        plan_cli.main(
            common
            + [
                "--sample-fraction",
                "0.25",
                "--plan",
                str(plan_path),
                "--gpu",
                "l4",
                "--price-per-hour",
                "0.8",
                "--workers",
                "4",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "dead letters" in table and "FLOPs model" in table and "tokens on average, median" in table
    plan = json.loads(plan_path.read_text())
    dl = plan["document_tokens"]
    assert dl["seq_len"] == 32 and dl["p10"] <= dl["p50"] <= dl["p90"] <= dl["p99"] <= dl["max"]
    run(
        PipelineConfig(
            inputs=[str(d / "*")],
            teacher=tiny_teacher,
            output=str(tmp_path / "ds"),
            seq_len=32,
            top_k=16,
            rows_per_unit=4,
            bytes_per_unit=1500,
            progress=False,
        )
    )
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())["counts"]
    pred = plan["predicted"]
    # every unit was read: documents, dead letters and parts are what the run counts, exactly
    # a.jsonl: 40 lines, 2 bad; c.parquet: 12 rows, 2 bad; d.parquet: 10 rows without the text column;
    # e.parquet (not Parquet) and f.jsonl.gz (truncated): files not read to their end, no documents
    assert pred["documents"]["estimate"] == m["documents"] == 40 + 12 + 10
    assert pred["dead_letters"]["estimate"] == m["dead_letters"] == 2 + 2 + 10
    assert pred["incomplete_files"]["estimate"] == m["incomplete_files"] == 2
    kinds = plan["sample"]["dead_letter_kinds"]
    assert (kinds["malformed_json"], kinds["missing_text"], kinds["empty_text"]) == (1, 1 + 1 + 10, 1)
    assert pred["parts"]["estimate"] == m["units"]
    assert abs(pred["tokens"]["estimate"] / m["tokens"] - 1) < 0.15
    wall, hours = pred["wall_hours"]["estimate"], pred["accelerator_hours"]["estimate"]
    assert hours / 4 <= wall <= hours and pred["cost"]["estimate"] == pytest.approx(hours * 0.8)
    # the same plan again: same sample, same numbers
    again = tmp_path / "again.json"
    assert plan_cli.main(common + ["--sample-fraction", "0.25", "--plan", str(again), "--json"]) == 0
    capsys.readouterr()
    second = json.loads(again.read_text())
    assert second["sample"]["keys"] == plan["sample"]["keys"]
    assert second["predicted"]["tokens"] == pred["tokens"]
    # planned vs actual
    inspect_main([str(tmp_path / "ds"), "--plan", str(plan_path), "--json", "--samples", "2"])
    rows = json.loads(capsys.readouterr().out)["planned_vs_actual"]
    assert rows["dead_letters"]["error"] == 0 and rows["documents"]["actual"] == m["documents"]
    assert rows["incomplete_files"]["actual"] == 2 and rows["incomplete_files"]["error"] == 0
    assert abs(rows["dataset_bytes"]["error"]) < 0.15


def test_missing_bucket_on_an_object_store_fails_clearly(s3_bucket, tiny_teacher, tmp_path, capsys):
    missing = s3_bucket.replace("s3://", "s3://no-such-bucket-") + "/*.jsonl"
    assert plan_cli.main(["--input", missing, "--teacher", tiny_teacher, "--plan", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdistill plan: error: input s3://no-such-bucket-") and "Traceback" not in err
