"""Fault matrix, trainer rows: a real SIGKILL of a training process, then autoresume.

Each case trains 8 steps (checkpoint every 2) in a subprocess that kills itself at a chosen point
(trainer/faults.py, PDISTILL_TEST_KILL), then runs the same command again (autoresume). The
result must equal an uninterrupted run in deterministic CPU mode: the same final weights, bit for
bit, and the same samples and losses at every step; what a kill loses is the steps since the last
checkpoint, which are recomputed (never skipped, never applied twice).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

from test_trainer import REPO, base_cfg, lake, read_log  # noqa: E402,F401  (lake: fixture)

CASES = {  # case: (kill point, batch, checkpoint expected to resume from)
    "mid-step": ("mid-step", 6, "ep0-ba4-rank0.pt"),
    "checkpoint-write": ("checkpoint-write", 6, "ep0-ba4-rank0.pt"),
}


def train_subprocess(cfg_path, workdir, kill=None):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    env.pop("PDISTILL_TEST_KILL", None)
    if kill:
        env["PDISTILL_TEST_KILL"] = json.dumps({"point": kill[0], "batch": kill[1]})
    return subprocess.run(
        [sys.executable, "-m", "trainer", str(cfg_path)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def setup_run(lake, folder):
    import yaml

    raw = base_cfg(
        lake,
        folder,
        run={
            "save_folder": str(folder / "ckpt"),
            "run_name": "fm",
            "autoresume": True,
            "save_interval": "2ba",
            "max_duration": "8ba",
        },
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def final_weights(folder):
    state = torch.load(str(folder / "ckpt" / "ep0-ba8-rank0.pt"), map_location="cpu", weights_only=False)
    return state["state"]["model"]


def by_step(folder):
    """The last record of each step (a step redone after a kill is logged again)."""
    return {r["step"]: r for r in read_log(folder / "samples")}


@pytest.fixture(scope="module")
def straight(lake, tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    p = train_subprocess(setup_run(lake, folder), folder)
    assert p.returncode == 0, p.stderr[-3000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_trainer_resumes_to_the_uninterrupted_result(lake, straight, tmp_path, case):
    point, batch, resume_from = CASES[case]
    cfg = setup_run(lake, tmp_path)
    killed = train_subprocess(cfg, tmp_path, kill=(point, batch))
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: no cleanup ran
    assert os.readlink(tmp_path / "ckpt" / "latest-rank0.pt") == resume_from
    logged_before = len(read_log(tmp_path / "samples"))

    resumed = train_subprocess(cfg, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if point == "checkpoint-write":
        assert (tmp_path / "ckpt" / f"ep0-ba{batch}-rank0.pt.torn").exists()  # kept aside, not deleted

    want, got = final_weights(straight), final_weights(tmp_path)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    a, b = by_step(straight), by_step(tmp_path)
    assert sorted(a) == sorted(b) == list(range(8))
    for s in range(8):
        assert (a[s]["sample_ids"], a[s]["loss"]) == (b[s]["sample_ids"], b[s]["loss"]), s
    redone = len(read_log(tmp_path / "samples")) - 8  # steps logged twice: those since the checkpoint
    assert redone == logged_before - int(resume_from.split("-ba")[1].split("-")[0])
    print(f"| trainer: {case} | batch {batch} | yes, from {resume_from} | 0 samples; {redone} step(s) recomputed |")


@pytest.mark.parametrize("latest", [None, "ep0-ba2-rank0.pt"])
def test_recover_checkpoints_after_a_kill_between_save_and_symlink(tmp_path, latest):
    """Composer removes `latest` and then creates it again; a kill in between leaves it missing (or
    still pointing at an older checkpoint when the kill came right after the write)."""
    from trainer.checkpoints import recover_checkpoints

    for b in (2, 4):
        torch.save({"state": {"b": b}}, str(tmp_path / f"ep0-ba{b}-rank0.pt"))
    (tmp_path / "ep0-ba6-rank0.pt").write_bytes(b"PK\x03\x04" + b"\0" * 100)  # torn
    if latest:
        os.symlink(latest, tmp_path / "latest-rank0.pt")
    actions = recover_checkpoints(str(tmp_path))
    assert os.readlink(tmp_path / "latest-rank0.pt") == "ep0-ba4-rank0.pt"
    assert sorted(os.listdir(tmp_path)) == [
        "ep0-ba2-rank0.pt",
        "ep0-ba4-rank0.pt",
        "ep0-ba6-rank0.pt.torn",
        "latest-rank0.pt",
    ]
    assert actions[0].startswith("ep0-ba6-rank0.pt: torn")
    assert recover_checkpoints(str(tmp_path)) == []  # nothing left to do
