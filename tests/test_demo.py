"""`pdistill demo --tiny`: the real teacher, the real pipeline and trainer, end to end (slow)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest


REPORT_FIELDS = [
    "held-out LM loss: teacher",
    "held-out LM loss: LM-only baseline",
    "held-out LM loss: distilled",
    "distilled - baseline",
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
]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_tiny_end_to_end(tmp_path, real_teacher):
    lake = tmp_path / "lake"
    # the teacher stage reuses a finished import (its marker); tests/test_teacher_import.py covers
    # the import itself on the same session-wide checkpoint
    shutil.copytree(real_teacher[0], lake / "teacher")
    proc = subprocess.run([sys.executable, "-m", "pdistill.cli", "demo", "--tiny", "--lake", str(lake)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # the manifests' counts reconcile (every document is packed or dead-lettered)
    for name in ("logits", "heldout"):
        m = json.loads((lake / name / "manifest.json").read_text())
        c = m["counts"]
        assert c["documents"] == c["packed_documents"] + c["dead_letters"] > 0
        assert c["tokens"] > 0 and c["sequences"] > 0
        assert m["truncation"]["top_p"] == 0.95 and m["truncation"]["top_k"] == 50
        assert m["codec"]["name"] == "compact"
        assert m["tokenizer"]["separator_id"] == 0 and m["tokenizer"]["add_bos"] is False
    corpus = json.loads((lake / "corpus" / "corpus.json").read_text())
    m = json.loads((lake / "logits" / "manifest.json").read_text())
    assert m["counts"]["documents"] == corpus["splits"]["train"]["documents"]

    # the report exists with every field, and the PNG
    report = (lake / "report.md").read_text()
    for field in REPORT_FIELDS:
        assert field in report, field
    assert (lake / "heldout_loss.png").stat().st_size > 1000
    s = json.loads((lake / "report.json").read_text())

    # losses are finite, the resume happened
    for key in ("teacher_heldout_loss", "baseline_heldout_loss", "distilled_heldout_loss"):
        assert math.isfinite(s[key]) and s[key] > 0, key
    assert s["teacher_heldout_loss"] < 6.0  # a real pre-trained teacher
    assert s["resumed"] is True
    assert s["resume_resumed_at_step"] == s["resume_stopped_at_step"] + 1
    assert s["manifest_counts_reconcile"] is True
    assert s["storage_on_disk_bytes_per_token"] < s["storage_naive_fixed_k_bytes_per_token"]
    assert s["codec_kl_nats"] < 0.01
    stages = json.loads((lake / "stages" / "distilled.json").read_text())
    assert stages["resume"]["checkpoints_before_resume"]  # a checkpoint existed when the run resumed

    # a re-run reuses every finished stage
    proc2 = subprocess.run([sys.executable, "-m", "pdistill.cli", "demo", "--tiny", "--lake", str(lake)],
                           capture_output=True, text=True)
    assert proc2.returncode == 0, proc2.stdout[-4000:] + proc2.stderr[-4000:]
    for name in ("corpus", "teacher", "logits", "heldout", "measure", "baseline", "distilled"):
        assert f"{name}: finished earlier" in proc2.stdout, name
