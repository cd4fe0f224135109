"""`pdistill demo --tiny`: the real teacher, the real pipeline and trainer, end to end (slow)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from schemas.codec import DEFAULT_CODEC

REPORT_FIELDS = [
    "held-out LM loss: teacher",
    "held-out LM loss: LM-only baseline",
    "held-out LM loss: distilled (PD*, pd_best as shipped)",
    "held-out LM loss: vanilla PD",
    "distilled - baseline",
    "beyond the spread?",
    "held-out bits per byte: teacher (its stored pass)",
    "held-out bits per byte: LM-only baseline",
    "held-out bits per byte: distilled (PD*, pd_best as shipped)",
    "held-out bits per byte: vanilla PD",
    "storage: this dataset",
    "storage: naive fixed-k",
    "storage: full fp32 logits",
    "codec fidelity",
    "pipeline throughput",
    "bare teacher forward",
    "resume",
    "wall time: corpus",
    "wall time: teacher",
    "wall time: logits",
    "wall time: heldout",
    "wall time: baseline",
    "wall time: distilled",
    "wall time: vanilla",
    "wall time: seed2",
]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_tiny_end_to_end(tmp_path, real_teacher):
    lake = tmp_path / "lake"
    # the teacher stage reuses a finished import (its marker); tests/test_teacher_import.py covers
    # the import itself on the same session-wide checkpoint
    shutil.copytree(real_teacher[0], lake / "teacher")
    proc = subprocess.run(
        [sys.executable, "-m", "pdistill.cli", "demo", "--tiny", "--lake", str(lake)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # the manifests' counts reconcile (every document is packed or dead-lettered)
    for name in ("logits", "heldout"):
        m = json.loads((lake / name / "manifest.json").read_text())
        c = m["counts"]
        assert c["documents"] == c["packed_documents"] + c["dead_letters"] > 0
        assert c["tokens"] > 0 and c["sequences"] > 0
        assert m["truncation"]["top_p"] == 0.95 and m["truncation"]["top_k"] == 50
        assert m["codec"]["name"] == DEFAULT_CODEC  # the demo shows the product default
        assert m["tokenizer"]["separator_id"] == 0 and m["tokenizer"]["add_bos"] is False
        # the teacher pass's own progress line, echoed by the demo, counted what the manifest holds
        assert f"[demo] {name}: done, {c['tokens']:,} tokens ({c['sequences']:,} sequences)" in proc.stdout
        # its report, read by the demo as data (--report-json), is the manifest's counts
        assert json.loads((lake / "logs" / f"{name}.report.json").read_text())["summary"] == c
    corpus = json.loads((lake / "corpus" / "corpus.json").read_text())
    m = json.loads((lake / "logits" / "manifest.json").read_text())
    assert m["counts"]["documents"] == corpus["splits"]["train"]["documents"]

    # the report exists with every field, and the PNG
    report = (lake / "report.md").read_text()
    for field in REPORT_FIELDS:
        assert field in report, field
    assert (lake / "heldout_loss.png").stat().st_size > 1000
    s = json.loads((lake / "report.json").read_text())

    # losses are finite, the resume happened; pd_best ran as shipped (no override), 2 seeds + vanilla
    for key in ("teacher_heldout_loss", "baseline_heldout_loss", "distilled_heldout_loss", "vanilla_heldout_loss"):
        assert math.isfinite(s[key]) and s[key] > 0, key
    assert s["seeds"] == 2 and len(s["baseline_heldout_losses"]) == len(s["distilled_heldout_losses"]) == 2
    assert s["baseline_heldout_loss"] == pytest.approx(sum(s["baseline_heldout_losses"]) / 2)
    assert s["spread"] >= 0 and isinstance(s["distilled_beats_baseline_beyond_spread"], bool)
    # held-out bits per byte: every student's (per seed) and the teacher's from its stored pass, finite;
    # the same positions and bytes under the same tokenizer, so bits per byte / nats per token is one
    # constant (tokens / (ln 2 x bytes)) for every student and, up to its stored 1/256-nat grid, the teacher
    for key in ("teacher_heldout_bpb", "baseline_heldout_bpb", "distilled_heldout_bpb", "vanilla_heldout_bpb"):
        assert math.isfinite(s[key]) and s[key] > 0, key
    assert len(s["baseline_heldout_bpbs"]) == len(s["distilled_heldout_bpbs"]) == 2
    assert all(math.isfinite(v) and v > 0 for v in s["baseline_heldout_bpbs"] + s["distilled_heldout_bpbs"])
    assert s["distilled_heldout_bpb"] == pytest.approx(sum(s["distilled_heldout_bpbs"]) / 2)
    assert s["baseline_heldout_bpb_std"] >= 0 and s["distilled_heldout_bpb_std"] >= 0
    ratios = [b / c for b, c in zip(s["baseline_heldout_bpbs"], s["baseline_heldout_losses"])]
    ratios += [b / c for b, c in zip(s["distilled_heldout_bpbs"], s["distilled_heldout_losses"])]
    ratios.append(s["vanilla_heldout_bpb"] / s["vanilla_heldout_loss"])
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3), ratios
    assert s["teacher_heldout_bpb"] / s["teacher_heldout_loss"] == pytest.approx(ratios[0], rel=2e-2)
    assert s["teacher_heldout_bpb"] < min(s["baseline_heldout_bpbs"])  # the pre-trained teacher, far ahead
    assert f"{s['teacher_heldout_bpb']:.4f}" in report and f"{s['distilled_heldout_bpb']:.4f}" in report
    cmd = json.loads((lake / "stages" / "distilled.json").read_text())["segments"][1]["cmd"]
    assert "pd_best" in cmd and not any(a.startswith("distill.") for a in cmd)
    assert s["teacher_heldout_loss"] < 6.0  # a real pre-trained teacher
    assert s["resumed"] is True
    assert s["resume_resumed_at_step"] == s["resume_stopped_at_step"] + 1
    assert s["manifest_counts_reconcile"] is True
    assert s["storage_on_disk_bytes_per_token"] < s["storage_naive_fixed_k_bytes_per_token"]
    assert s["codec_kl_nats"] < 0.01
    stages = json.loads((lake / "stages" / "distilled.json").read_text())
    assert stages["resume"]["checkpoints_before_resume"]  # a checkpoint existed when the run resumed
    # the curves come from the trainer's metrics.jsonl: every step once across the two segments,
    # an eval every eval_interval (3) steps, alpha following pd_best's WSD schedule up to 0.9
    assert [s for s, _ in stages["train_total"]] == list(range(1, 13))
    assert [s for s, _ in stages["eval_loss"]] == [3, 6, 9, 12]
    assert [s for s, _ in stages["eval_bpb"]] == [3, 6, 9, 12]
    assert stages["alpha"][0] == [1, 0.0] and max(a for _, a in stages["alpha"]) == pytest.approx(0.9)

    # a re-run reuses every finished stage
    proc2 = subprocess.run(
        [sys.executable, "-m", "pdistill.cli", "demo", "--tiny", "--lake", str(lake)], capture_output=True, text=True
    )
    assert proc2.returncode == 0, proc2.stdout[-4000:] + proc2.stderr[-4000:]
    for name in ("corpus", "teacher", "logits", "heldout", "measure", "baseline", "distilled", "vanilla", "seed2"):
        assert f"{name}: finished earlier" in proc2.stdout, name

    # bench.recipes --quick on the same lake: one teacher pass (the demo's stages, reused), 3 recipes
    proc3 = subprocess.run(
        [sys.executable, "-m", "bench.recipes", "--quick", "--lake", str(lake)], capture_output=True, text=True
    )
    assert proc3.returncode == 0, proc3.stdout[-4000:] + proc3.stderr[-4000:]
    assert "logits: finished earlier" in proc3.stdout
    res = json.loads((lake / "recipes" / "results.json").read_text())
    assert sorted(r["name"] for r in res["rows"]) == [
        "LM-only",
        "PD* as shipped (pd_best)",
        "vanilla PD (NLL, tau 1, alpha 1)",
    ]
    assert all(math.isfinite(r["mean"]) for r in res["rows"]) and "| LM-only | 1 |" in proc3.stdout
    assert (lake / "recipes" / "recipes.png").stat().st_size > 1000

    # bench.cross_tokenizer --quick on the same lake: a student tokenizer from the lake, LM-only and pd_cross
    proc4 = subprocess.run(
        [sys.executable, "-m", "bench.cross_tokenizer", "--quick", "--lake", str(lake)], capture_output=True, text=True
    )
    assert proc4.returncode == 0, proc4.stdout[-4000:] + proc4.stderr[-4000:]
    cross = json.loads((lake / "cross" / "results.json").read_text())
    assert sorted(r["name"] for r in cross["rows"]) == ["foreign LM-only", "foreign PD* (pd_cross)"]
    assert all(0 < r["mean"] < 20 for r in cross["rows"]) and 0 < cross["teacher_bpb"] < 5
    assert cross["teacher_bpb"] < min(r["mean"] for r in cross["rows"])  # the teacher is the reference
