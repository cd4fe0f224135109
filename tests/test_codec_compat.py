"""Old datasets stay readable: the checked-in v1 `compact` dataset inspects, decodes and trains
after compact2 became the default; a manifest naming an unknown codec is refused with the list.

tests/fixtures/compact_v1/ was written by the codec of its day (tests/fixtures/build_compact_v1.py)
and is never rewritten: it is the proof that today's reader still understands those bytes.
"""

import copy
import json
import os
import shutil

import numpy as np
import pytest

from pdistill import inspect
from schemas import Manifest, decode_dense, make_codec
from tests.make_dataset import make_teacher, make_tokenizer, tiny_llama_config

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "compact_v1")


@pytest.fixture
def v1(tmp_path):
    """A copy (StreamingDataset(local=...) writes decompressed shards beside the originals)."""
    out = tmp_path / "compact_v1"
    shutil.copytree(FIXTURE, out)
    return out


def test_fixture_is_small_and_v1():
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(FIXTURE) for f in fs)
    assert size < 200_000
    with open(os.path.join(FIXTURE, "manifest.json")) as f:
        m = Manifest.from_json(f.read())
    assert (m.codec.name, m.codec.params) == ("compact", {"step": 0.0625})


def test_v1_dataset_inspects_with_its_codec_bound(v1, tmp_path, capsys):
    teacher_dir = str(tmp_path / "teacher")
    make_teacher(teacher_dir, make_tokenizer())  # the fixture's teacher: seeded, rebuilt here
    rc = inspect.main([str(v1), "--teacher", teacher_dir, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["codec"] == "compact {'step': 0.0625}"
    assert report["counts_reconcile"] and report["sequences_in_index"] == 12
    # designed for step^2 / 24; guaranteed step^2 / 8 plus what top_k = 8 entries clipped at 255 steps can hold
    assert report["codec_kl_design"] == pytest.approx(0.0625**2 / 24)
    assert report["codec_kl_bound"] == pytest.approx(0.0625**2 / 8 + 7 * np.exp(-255 / 16))
    assert report["stored_bytes_per_kept_entry"] > 0
    # the stored v1 bytes decode to what a fresh teacher run gives, up to the 1/16-nat step
    assert 0 <= report["codec_kl"] <= report["codec_kl_bound"]


def test_v1_dataset_decodes_through_streaming(v1):
    from streaming import StreamingDataset

    with open(v1 / "manifest.json") as f:
        m = Manifest.from_json(f.read())
    ds = StreamingDataset(local=str(v1), batch_size=1, shuffle=False)
    codec = make_codec(m.codec.name, m.codec.params)
    for i in range(len(ds)):
        s = ds[i]
        dense = decode_dense(s, codec, m.truncation.top_k)
        n = int(s["n_tokens"])
        assert dense.mask[:n].any(1).all() and not dense.mask[n:].any()
        np.testing.assert_allclose(np.exp(np.where(dense.mask, dense.logp, -np.inf)).sum(1)[:n], 1, rtol=1e-5)


def test_v1_dataset_trains(v1, tmp_path):
    pytest.importorskip("composer")
    from trainer.config import config_from_dict
    from trainer.train import train

    tok_dir = str(tmp_path / "tok")
    make_tokenizer(tok_dir)
    raw = {
        "data": {
            "streams": [{"uri": str(v1)}],
            "batch_size": 4,
            "num_canonical_nodes": 1,
            "local_cache": str(tmp_path / "cache"),
            "shuffle": False,
        },
        "model": {"hf_config": tiny_llama_config(seq_len=16), "tokenizer": tok_dir},
        "distill": {
            "mode": "offline",
            "kind": "forward_kl",
            "tau": 1.0,
            "chunk_size": 16,
            "alpha": {"name": "constant", "value": 0.9},
        },
        "optim": {"lr": 3e-3},
        "run": {
            "max_duration": "3ba",
            "device": "cpu",
            "seed": 5,
            "loggers": [],
            "eval_interval": "100ba",
            "save_interval": "100ba",
            "sample_log_dir": str(tmp_path / "samples"),
        },
    }
    trainer = train(config_from_dict(copy.deepcopy(raw)))
    assert int(trainer.state.timestamp.batch) == 3
    recs = [
        json.loads(line) for f in sorted((tmp_path / "samples").glob("*.jsonl")) for line in f.read_text().splitlines()
    ]
    assert recs and all(np.isfinite(r["kd"]) and r["kd"] > 0 for r in recs)


def test_unknown_codec_is_refused_with_the_known_list(v1, capsys):
    with open(v1 / "manifest.json") as f:
        raw = json.load(f)
    raw["codec"] = {"name": "compact9", "params": {}}
    (v1 / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(
        SystemExit,
        match=r"unknown codec 'compact9'; known: \['compact', 'compact2', 'compact3', 'compact4', 'compact5', 'exact'\]",
    ):
        inspect.main([str(v1)])
    pytest.importorskip("composer")  # the trainer's reader refuses it too, with a message
    from trainer import cli

    cfg = v1.parent / "cfg.yaml"
    cfg.write_text(
        json.dumps(
            {
                "data": {"streams": [{"uri": str(v1)}], "batch_size": 4, "local_cache": str(v1.parent / "cache")},
                "model": {"hf_config": tiny_llama_config(seq_len=16), "tokenizer": str(v1.parent / "tok")},
                "run": {"max_duration": "1ba", "device": "cpu", "loggers": []},
            }
        )
    )
    make_tokenizer(str(v1.parent / "tok"))
    assert cli.main([str(cfg)]) == 2
    assert (
        "unknown codec 'compact9'; known: ['compact', 'compact2', 'compact3', 'compact4', 'compact5', 'exact']"
        in capsys.readouterr().err
    )
