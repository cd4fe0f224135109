"""Autoresume refuses a checkpoint made with other settings, unless a change is allowed on purpose.

Composer restores weights, optimizer state (and its learning rate) and the data position from the
latest checkpoint whatever the config says now; pdistill stores a fingerprint of what must not
change with every checkpoint (trainer/fingerprint.py) and compares it on load.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

from composer.core import Callback  # noqa: E402
from make_dataset import make_tokenizer, tiny_llama_config, write_dataset  # noqa: E402
from test_trainer import base_cfg, lake, read_log  # noqa: E402,F401  (lake: fixture)
from train_raw import train_raw  # noqa: E402


class LRLog(Callback):
    """The optimizer's learning rate used at each step."""

    def __init__(self):
        self.lrs: dict[int, float] = {}

    def after_dataloader(self, state, logger):
        self.lrs[int(state.timestamp.batch)] = state.optimizers[0].param_groups[0]["lr"]


@pytest.fixture
def stopped(lake, tmp_path):
    """A run stopped (with its checkpoint) after 3 of 8 steps, and a function giving a resume config."""
    raw = base_cfg(
        lake,
        tmp_path,
        run={"save_folder": str(tmp_path / "ckpt"), "run_name": "r", "autoresume": True, "stop_after": "3ba"},
    )
    train_raw(raw)
    n = iter(range(100))

    def resume(**sections):
        again = copy.deepcopy(raw)
        again["run"]["stop_after"] = None
        again["data"]["local_cache"] = str(tmp_path / f"cache{next(n)}")  # one cache per dataset object
        for sec, vals in sections.items():
            again[sec].update(vals)
        return again

    return raw, resume


def test_refuses_another_dataset_loss_or_batch(lake, stopped, tmp_path):
    from trainer.errors import ResumeMismatch

    _, resume = stopped
    other = tmp_path / "other"
    write_dataset(str(other), make_tokenizer(), n_samples=48, units=3, seed=11, source="sha256:other")
    cases = [
        (
            resume(data={"streams": [{"uri": str(other)}]}),
            r"  data\.streams\[0\]\.dataset: 'sha256:\w+' -> 'sha256:\w+'",
        ),
        (resume(distill={"kind": "reverse_kl"}), "  distill.kind: 'forward_kl' -> 'reverse_kl'"),
        (resume(data={"batch_size": 8}), "  data.batch_size: 4 -> 8"),
        (resume(optim={"lr": 1e-3}), r"  optim\.lr: 0\.003 -> 0\.001\n.*run\.allow_changed=\[optim\.lr\]"),
    ]
    for raw, diff in cases:
        with pytest.raises(ResumeMismatch, match=diff) as e:
            train_raw(raw)
        assert "was made with other settings" in str(e.value)


def test_refuses_another_model_shape(stopped):
    from trainer.errors import ResumeMismatch

    _, resume = stopped
    with pytest.raises(
        ResumeMismatch, match="model.shape: the checkpoint in run.save_folder holds a student of other shapes"
    ):
        train_raw(resume(model={"hf_config": tiny_llama_config(hidden=64)}))


def test_an_allowed_lr_change_takes_effect(lake, stopped, tmp_path):
    """Resuming at lr 1e-3 from a checkpoint trained at 3e-3 (run.allow_changed: [optim.lr]) uses the
    new LR at every remaining step: the same LRs as a run at 1e-3 from the start."""
    _, resume = stopped
    resumed = LRLog()
    train_raw(
        resume(optim={"lr": 1e-3}, run={"allow_changed": ["optim.lr"], "sample_log_dir": str(tmp_path / "s2")}), resumed
    )
    assert sorted(resumed.lrs) == [3, 4, 5, 6, 7]
    straight = LRLog()
    train_raw(base_cfg(lake, tmp_path / "straight", optim={"lr": 1e-3}), straight)
    for step in range(3, 8):
        assert resumed.lrs[step] == pytest.approx(straight.lrs[step], rel=1e-12), step
    assert resumed.lrs[4] < 2e-3  # not the checkpoint's 3e-3 schedule


def test_resume_without_changes_is_accepted_and_saves_the_fingerprint(stopped, tmp_path):
    _, resume = stopped
    tr = train_raw(
        resume(run={"max_duration": "8ba", "sample_log_dir": str(tmp_path / "s3")})
    )  # max_duration may change
    assert [r["step"] for r in read_log(tmp_path / "s3")] == [3, 4, 5, 6, 7]
    ckpt = torch.load(str(tmp_path / "ckpt" / "latest-rank0.pt"), map_location="cpu", weights_only=False)
    fp = ckpt["state"]["callbacks"]["RunFingerprint"]["fingerprint"]
    assert fp["optim.lr"] == 3e-3 and fp["data.batch_size"] == 4 and fp["distill.kind"] == "forward_kl"
    assert fp["data.streams[0].dataset"].startswith("sha256:")
    assert tr.state.timestamp.batch.value == 8


def test_cli_mismatch_is_a_message(stopped, tmp_path, capsys):
    import yaml

    from trainer.cli import main

    _, resume = stopped
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(resume(scheduler={"alpha_f": 0.5})))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "pdistill train: refused: run.autoresume:" in err and "scheduler.alpha_f: 0.1 -> 0.5" in err
    assert "Traceback" not in err


def test_allow_changed_names_fingerprint_keys(lake, tmp_path):
    from trainer.config import ConfigError

    raw = base_cfg(lake, tmp_path, run={"allow_changed": ["optim.lr", "nonsense.key"]})
    with pytest.raises(ConfigError, match=r"run.allow_changed\[1\]: 'nonsense.key' is not a key"):
        train_raw(raw)
