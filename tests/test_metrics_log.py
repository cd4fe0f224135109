"""The trainer's JSON-lines metrics (`trainer.metrics_log`), written by a real composer.Trainer.

A reader (the demo, a notebook) relies on: one object per finished step and per evaluation, the
step the numbers describe, Composer's metric names with the same values as its text log, and a
resumed run continuing the same file.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")
pytest.importorskip("streaming")

from make_dataset import make_tokenizer, tiny_llama_config, write_dataset  # noqa: E402
from train_raw import train_raw  # noqa: E402


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    tok = make_tokenizer(str(root / "tok"))
    write_dataset(str(root / "ds"), tok, n_samples=24, units=1)
    write_dataset(str(root / "eval"), tok, n_samples=4, units=1, seed=7, source="sha256:eval")
    return root


def _raw(lake, tmp, **run) -> dict:
    return {
        "data": {
            "streams": [{"uri": str(lake / "ds")}],
            "eval_uri": str(lake / "eval"),
            "batch_size": 4,
            "num_canonical_nodes": 1,
            "local_cache": str(tmp / "cache"),
            "shuffle": False,
        },
        "model": {"hf_config": tiny_llama_config(), "tokenizer": str(lake / "tok")},
        "distill": {"mode": "none", "alpha": None},
        "optim": {"lr": 3e-3},
        "run": {
            "max_duration": "4ba",
            "device": "cpu",
            "seed": 5,
            "loggers": ["file"],
            "log_interval": "1ba",
            "eval_interval": "2ba",
            "save_interval": "2ba",
            "save_folder": str(tmp / "ckpt"),
            "run_name": "m",
            "autoresume": True,
            "log_dir": str(tmp / "logs"),
            **run,
        },
    }


def _text_log(path) -> dict[str, dict[int, float]]:
    """Composer's FileLogger lines: {metric: {batch: value}}."""
    out: dict[str, dict[int, float]] = {}
    for m in re.finditer(r"^\[metric\]\[batch=(\d+)\]: ([^:]+): (\S+)", path.read_text(), re.M):
        out.setdefault(m.group(2).strip(), {})[int(m.group(1))] = float(m.group(3))
    return out


def test_metrics_jsonl_per_step_and_eval_and_resume(lake, tmp_path):
    from trainer.metrics_log import last_step, read_metrics, series

    raw = _raw(lake, tmp_path, stop_after="2ba")
    train_raw(raw)
    path = tmp_path / "logs" / "m" / "metrics.jsonl"
    first = read_metrics(str(path))
    # the last record holds what Composer logs once training stops (its time/* counters)
    assert [(r["kind"], r["step"]) for r in first] == [("train", 1), ("train", 2), ("eval", 2), ("fit", 2)]
    assert last_step(first) == 2
    assert first[2]["label"] == "eval"
    assert set(first[2]["metrics"]) >= {"metrics/eval/LanguageCrossEntropy", "metrics/eval/LanguagePerplexity"}
    assert {"loss/train/total", "loss/train/lm", "distill/alpha", "lr-AdamW/group0"} <= set(first[0]["metrics"])

    # Composer's text log holds the same values (rounded to 4 decimals there, full precision here) under
    # the same names; its training losses sit at batch = step - 1, the eval at batch = step
    text = _text_log(tmp_path / "logs" / "m" / "log-rank0.txt")
    for name, shift in (("loss/train/total", 1), ("metrics/eval/LanguageCrossEntropy", 0)):
        ours = series(first, name)
        assert [s for s, _ in ours] == [k + shift for k in sorted(text[name])], name
        assert [v for _, v in ours] == pytest.approx([text[name][k] for k in sorted(text[name])], abs=1e-4), name

    # resumed from the step-2 checkpoint: the same file continues at step 3
    raw["run"]["stop_after"] = None
    raw["data"]["local_cache"] = str(tmp_path / "cache2")
    train_raw(raw)
    recs = read_metrics(str(path))
    assert [(r["kind"], r["step"]) for r in recs[len(first) :]] == [("train", 3), ("train", 4), ("eval", 4), ("fit", 4)]
    ce = series(recs, "metrics/eval/LanguageCrossEntropy")
    assert [s for s, _ in ce] == [2, 4] and all(0 < v < 20 for _, v in ce)


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    from trainer.metrics_log import read_metrics, series

    p = tmp_path / "metrics.jsonl"
    p.write_text(
        '{"kind": "train", "step": 1, "metrics": {"loss/train/total": 5.0}}\n'
        '{"kind": "train", "step": 1, "metrics": {"loss/train/total": 4.0}}\n{"kind": "tra'
    )
    assert series(read_metrics(str(p)), "loss/train/total") == [(1, 4.0)]  # the last write of a step wins
    assert read_metrics(str(tmp_path / "absent.jsonl")) == []
