"""The Composer trainer end to end on CPU: real composer.Trainer, tiny Llama students, tiny MDS datasets.

Datasets are written directly with streaming.MDSWriter + schemas (tests/make_dataset.py), not by the
Beam pipeline. Every run gets its own shard cache folder (streaming refuses two live datasets on
one cache folder in a process).
"""

from __future__ import annotations

import copy
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")
pytest.importorskip("streaming")

from make_dataset import make_teacher, make_tokenizer, tiny_llama_config, write_dataset  # noqa: E402
from train_raw import train_raw  # noqa: E402
from unwritable import sysfs_folder  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_SAMPLES = 48


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Tokenizer, a tiny teacher, and datasets written from it (compact and exact codec) + eval set."""
    root = tmp_path_factory.mktemp("lake")
    tok = make_tokenizer(str(root / "tok"))
    teacher = make_teacher(str(root / "teacher"), tok)
    write_dataset(str(root / "ds"), tok, n_samples=N_SAMPLES, teacher=teacher, units=3)
    write_dataset(str(root / "ds_exact"), tok, n_samples=16, teacher=teacher, codec="exact", units=1)
    write_dataset(str(root / "eval"), tok, n_samples=8, units=1, seed=7, source="sha256:eval")
    make_tokenizer(str(root / "tok_other"), variant=1)
    return root


@pytest.fixture(autouse=True)
def _restore_torch_determinism():
    """Composer's deterministic mode flips process-wide torch flags; give them back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def base_cfg(lake, tmp, **sections) -> dict:
    raw = {
        "data": {
            "streams": [{"uri": str(lake / "ds")}],
            "batch_size": 4,
            "num_canonical_nodes": 1,
            "local_cache": str(tmp / "cache"),
            "shuffle": True,
            "shuffle_seed": 3,
        },
        "model": {"hf_config": tiny_llama_config(), "tokenizer": str(lake / "tok")},
        "distill": {
            "mode": "offline",
            "kind": "forward_kl",
            "tau": 2.0,
            "chunk_size": 16,
            "alpha": {"name": "wsd", "peak": 0.9, "warmup": 0.25, "decay": 0.25},
        },
        "optim": {"lr": 3e-3},
        "scheduler": {"name": "wsd", "t_warmup": "0.25dur", "t_decay": "0.25dur", "alpha_f": 0.1},
        "run": {
            "max_duration": "8ba",
            "device": "cpu",
            "deterministic": True,
            "seed": 5,
            "loggers": [],
            "eval_interval": "100ba",
            "save_interval": "100ba",
            "sample_log_dir": str(tmp / "samples"),
        },
    }
    for sec, vals in sections.items():
        raw.setdefault(sec, {}).update(vals)
    return raw


def read_log(folder) -> list[dict]:
    recs = []
    for path in sorted(glob.glob(os.path.join(str(folder), "samples-rank*.jsonl"))):
        with open(path) as f:
            recs += [json.loads(line) for line in f]
    return sorted(recs, key=lambda r: (r["step"], r["rank"]))


def student_state(trainer) -> dict:
    m = trainer.state.model
    m = getattr(m, "module", m)
    return {k: v.detach().clone() for k, v in m.student.state_dict().items()}


# ------------------------------------------------------------------------------------------------
# data side


def test_collator_alignment(lake, tmp_path):
    from schemas import fingerprint_tokenizer
    from trainer.config import DataConfig
    from trainer.data import DistillDataset, Expect, as_uint64, build_dataloader

    tok = make_tokenizer()
    ds = DistillDataset(
        DataConfig.of(str(lake / "ds"), shuffle=False),
        batch_size=5,
        cache_dir=str(tmp_path / "c"),
        expect=Expect(vocab_size=64, tokenizer_fingerprint=fingerprint_tokenizer(tok), seq_len=16),
    )
    assert len(ds) == N_SAMPLES and ds.top_k == 8
    b = next(iter(build_dataloader(ds, batch_size=5)))
    assert b["input_ids"].shape == (5, 16) and b["teacher_ids"].shape == (5, 16, 8)
    assert b["teacher_logp"].dtype == torch.float32 and b["teacher_mask"].dtype == torch.bool
    # the 5th sample (index 4) is padded: n_tokens = 15
    n = b["attention_mask"].sum(1)
    assert n.tolist() == [16, 16, 16, 16, 15]
    for i in range(5):
        k = int(n[i])
        assert torch.equal(b["labels"][i, : k - 1], b["input_ids"][i, 1:k])
        assert (b["labels"][i, k - 1 :] == -100).all()
        assert b["position_mask"][i, :k].all() and not b["position_mask"][i, k:].any()
    assert as_uint64(b["sample_id"]) == [int(ds[i]["sample_id"]) for i in range(5)]


def test_streams_mix_and_must_agree(lake, tmp_path):
    from schemas import IncompatibleDataset, fingerprint_tokenizer
    from trainer.config import DataConfig, StreamConfig
    from trainer.data import DistillDataset, Expect

    expect = Expect(vocab_size=64, tokenizer_fingerprint=fingerprint_tokenizer(make_tokenizer()))
    two = DataConfig(
        streams=[
            StreamConfig(uri=str(lake / "ds"), proportion=0.75),
            StreamConfig(uri=str(lake / "eval"), proportion=0.25),
        ]
    )
    ds = DistillDataset(two, batch_size=4, cache_dir=str(tmp_path / "c"), expect=expect, epoch_size=40)
    ids = {int(ds[i]["sample_id"]) for i in range(ds.num_samples)}
    assert len(ds) == 40 and len(ids) > 8
    other = tmp_path / "long"
    write_dataset(str(other), make_tokenizer(), n_samples=4, units=1, seq_len=32)
    with pytest.raises(IncompatibleDataset, match="differ in seq_len: 16 vs 32"):
        DistillDataset(
            DataConfig.of(str(lake / "ds"), str(other)), batch_size=4, cache_dir=str(tmp_path / "c2"), expect=expect
        )


# ------------------------------------------------------------------------------------------------
# resume


def test_resume_equals_uninterrupted(lake, tmp_path):
    """N steps straight vs stop at M and autoresume: same final weights, same losses after M."""
    a = tmp_path / "a"
    raw_a = base_cfg(lake, a, run={"save_folder": str(a / "ckpt"), "run_name": "ra", "autoresume": True})
    straight = student_state(train_raw(raw_a))

    b = tmp_path / "b"
    raw_b = base_cfg(
        lake, b, run={"save_folder": str(b / "ckpt"), "run_name": "rb", "autoresume": True, "stop_after": "3ba"}
    )
    train_raw(raw_b)
    assert [r["step"] for r in read_log(b / "samples")] == [0, 1, 2]
    raw_b2 = copy.deepcopy(raw_b)
    raw_b2["run"]["stop_after"] = None
    raw_b2["data"]["local_cache"] = str(b / "cache2")  # a fresh process would reuse it; here a new folder
    resumed = student_state(train_raw(raw_b2))

    la, lb = read_log(a / "samples"), read_log(b / "samples")
    assert [r["step"] for r in lb] == list(range(8))
    assert [r["sample_ids"] for r in la] == [r["sample_ids"] for r in lb]
    for ra, rb in zip(la, lb):
        assert ra["loss"] == rb["loss"] and ra["alpha"] == rb["alpha"], (ra, rb)
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


# ------------------------------------------------------------------------------------------------
# refusals (each before a Trainer exists, so before the first step)


def _build(raw):
    from trainer.config import config_from_dict
    from trainer.train import build_trainer

    return build_trainer(config_from_dict(raw))


def test_refuses_vocab_mismatch(lake, tmp_path):
    from schemas import IncompatibleDataset

    raw = base_cfg(lake, tmp_path, model={"hf_config": tiny_llama_config(vocab_size=48)})
    with pytest.raises(IncompatibleDataset, match="vocab_size is 64 but the student's is 48"):
        _build(raw)


def test_refuses_tokenizer_mismatch(lake, tmp_path):
    from schemas import IncompatibleDataset

    raw = base_cfg(lake, tmp_path, model={"tokenizer": str(lake / "tok_other")})
    with pytest.raises(IncompatibleDataset, match="tokenizer fingerprint"):
        _build(raw)


@pytest.mark.parametrize("missing", ["manifest.json", "index.json"])
def test_refuses_incomplete_dataset(lake, tmp_path, missing):
    from trainer.data import IncompleteDataset

    tok = make_tokenizer()
    ds = tmp_path / "partial"
    write_dataset(
        str(ds),
        tok,
        n_samples=8,
        units=1,
        write_manifest=missing != "manifest.json",
        write_root_index=missing != "index.json",
    )
    raw = base_cfg(lake, tmp_path, data={"streams": [{"uri": str(ds)}]})
    with pytest.raises(IncompleteDataset, match=f"incomplete dataset {ds}: missing {missing}"):
        _build(raw)


def test_refuses_corrupt_shard(lake, tmp_path):
    from trainer.data import CorruptDataset

    tok = make_tokenizer()
    ds = tmp_path / "corrupt"
    write_dataset(str(ds), tok, n_samples=16, units=2)
    shard = sorted(glob.glob(str(ds / "parts" / "u00001-00000" / "shard.*.mds.zstd")))[0]
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(data))
    raw = base_cfg(lake, tmp_path, data={"streams": [{"uri": str(ds)}]})
    with pytest.raises(CorruptDataset, match="parts/u00001-00000/shard.00000.mds.zstd is corrupt"):
        _build(raw)


def test_refuses_bad_config_via_cli(lake, tmp_path, capsys):
    import yaml

    from trainer.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(base_cfg(lake, tmp_path)))
    assert main([str(path), "distill.temperature=2.0"]) == 2
    assert "distill.temperature: unknown key" in capsys.readouterr().err
    assert main([str(path), "data.batch_size=four"]) == 2
    assert "data.batch_size: expected an integer" in capsys.readouterr().err
    # a dataset refusal goes the same way: one line, exit 2, nothing trained
    assert main([str(path), f"data.streams.0.uri={tmp_path / 'nowhere'}"]) == 2
    assert "incomplete dataset" in capsys.readouterr().err
    assert not (tmp_path / "samples").exists()


def test_refuses_tau_on_a_sampled_dataset(lake, tmp_path, capsys):
    """A dataset written with --selection sample stores log(count / draws): tempering that is not
    tempering the teacher, so `pdistill train` refuses tau != 1 on it before anything is built (one
    line naming the setting and the dataset, exit 2), and trains on it at tau = 1."""
    ds = tmp_path / "sampled"
    write_dataset(str(ds), make_tokenizer(), n_samples=8, units=1, selection="sample")
    assert json.load(open(ds / "manifest.json"))["truncation"]["method"] == "sample"
    raw = base_cfg(lake, tmp_path, data={"streams": [{"uri": str(ds)}]})
    assert raw["distill"]["tau"] == 2.0
    rc = _cli(tmp_path, raw)
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert (
        f"pdistill train: refused: distill.tau: 2.0 cannot be used with dataset {ds}: its teacher signal is sampled"
        in err
        and "set distill.tau=1.0" in err
    ), err[-2000:]
    assert "Traceback" not in err and not (tmp_path / "samples").exists()
    raw["distill"]["tau"] = 1.0
    raw["run"]["max_duration"] = "2ba"
    trainer = train_raw(raw)
    assert int(trainer.state.timestamp.batch) == 2
    assert [r["step"] for r in read_log(tmp_path / "samples")] == [0, 1]


# ------------------------------------------------------------------------------------------------
# live teacher and LM-only


def test_live_teacher_matches_offline(lake, tmp_path):
    """The live teacher's loss equals the offline loss on a dataset written from the same teacher."""
    common = {"streams": [{"uri": str(lake / "ds_exact")}], "shuffle": False}
    distill = {"alpha": {"name": "constant", "value": 0.7}, "top_p": 0.95, "top_k": 8}
    off = train_raw(base_cfg(lake, tmp_path / "off", data=common, distill={**distill}, run={"max_duration": "3ba"}))
    live = train_raw(
        base_cfg(
            lake,
            tmp_path / "live",
            data=common,
            distill={**distill, "mode": "live", "teacher": str(lake / "teacher")},
            run={"max_duration": "3ba"},
        )
    )
    lo, ll = read_log(tmp_path / "off" / "samples"), read_log(tmp_path / "live" / "samples")
    assert [r["sample_ids"] for r in lo] == [r["sample_ids"] for r in ll]
    for a, b in zip(lo, ll):
        assert a["kd"] > 0
        np.testing.assert_allclose(b["kd"], a["kd"], rtol=1e-4)
        np.testing.assert_allclose(b["lm"], a["lm"], rtol=1e-4)
    sa, sb = student_state(off), student_state(live)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-3, atol=1e-5)


def test_lm_only_with_eval(lake, tmp_path):
    tr = train_raw(
        base_cfg(
            lake,
            tmp_path,
            distill={"mode": "none", "alpha": None},
            data={"eval_uri": str(lake / "eval")},
            run={"max_duration": "2ba", "eval_interval": "2ba"},
        )
    )
    recs = read_log(tmp_path / "samples")
    assert all(r["alpha"] == 0.0 and r["kd"] == 0.0 and r["lm"] > 0 for r in recs)
    metrics = tr.state.eval_metrics["eval"]
    ce = float(metrics["LanguageCrossEntropy"].compute())
    ppl = float(metrics["LanguagePerplexity"].compute())
    assert 0 < ce < 10 and ppl == pytest.approx(np.exp(ce), rel=1e-4)


# ------------------------------------------------------------------------------------------------
# elastic: 2 processes -> 1 process


def _launch(cfg_path, nproc: int, overrides: list[str], log_dir) -> None:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    composer = os.path.join(os.path.dirname(sys.executable), "composer")
    cmd = [
        composer,
        "-n",
        str(nproc),
        "--master_port",
        str(_free_port()),
        "--stdout",
        str(log_dir / "rank{rank}.out"),
        "--stderr",
        str(log_dir / "rank{rank}.err"),
        "-m",
        "trainer",
        str(cfg_path),
        *overrides,
    ]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        logs = "".join(open(f).read()[-3000:] for f in sorted(glob.glob(str(log_dir / "rank*"))))
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}\n{logs}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_steps(folder) -> list[list[int]]:
    by_step: dict[int, list[int]] = {}
    for r in read_log(folder):
        by_step.setdefault(r["step"], []).extend(r["sample_ids"])
    return [sorted(by_step[s]) for s in sorted(by_step)]


@pytest.mark.slow
def test_elastic_resume_2_to_1_processes(lake, tmp_path):
    """2 processes (gloo) for 6 steps, checkpointing at step 3; then the run is "preempted" right
    after that checkpoint (a fresh save folder holding only it) and resumed on 1 process: the global
    sample sequence equals the uninterrupted 2-process run's, nothing repeated or skipped."""
    import shutil

    import yaml

    raw = base_cfg(lake, tmp_path, run={"max_duration": "6ba", "deterministic": False})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    logs = tmp_path / "logs"
    logs.mkdir()
    u = tmp_path / "u"
    _launch(
        path,
        2,
        [
            f"run.sample_log_dir={u / 'samples'}",
            f"data.local_cache={u / 'cache'}",
            f"run.save_folder={u / 'ckpt'}",
            "run.run_name=elastic",
            "run.save_interval=3ba",
        ],
        logs,
    )
    assert {r["world_size"] for r in read_log(u / "samples")} == {2}
    # the state a preemption after step 3 leaves behind
    e = tmp_path / "e"
    (e / "ckpt").mkdir(parents=True)
    shutil.copy(u / "ckpt" / "ep0-ba3-rank0.pt", e / "ckpt" / "ep0-ba3-rank0.pt")
    os.symlink("ep0-ba3-rank0.pt", e / "ckpt" / "latest-rank0.pt")
    _launch(
        path,
        1,
        [
            f"run.save_folder={e / 'ckpt'}",
            "run.run_name=elastic",
            "run.autoresume=true",
            f"run.sample_log_dir={e / 'samples'}",
            f"data.local_cache={e / 'cache'}",
        ],
        logs,
    )

    resumed = read_log(e / "samples")
    assert [(r["step"], r["world_size"]) for r in resumed] == [(3, 1), (4, 1), (5, 1)]
    straight = _global_steps(u / "samples")
    assert len(straight) == 6 and all(len(s) == 4 for s in straight)
    assert _global_steps(e / "samples") == straight[3:]
    flat = [i for s in straight for i in s]
    assert len(set(flat)) == len(flat) == 24  # nothing repeated or skipped within the epoch


# ------------------------------------------------------------------------------------------------
# remote: dataset on s3 (moto), checkpoints to s3


@pytest.mark.slow
def test_s3_dataset_and_checkpoints(lake, tmp_path, s3_bucket):
    """Dataset streamed from s3:// (moto server), checkpoints written to and resumed from s3://.

    Runs the trainer's CLI in a subprocess, as production does: Beam (imported by the pipeline
    tests in this pytest process) monkeypatches multiprocessing's AutoProxy, which breaks the
    manager Composer's remote uploader spawns. The trainer itself never imports Beam.
    """
    import yaml

    from schemas import storage

    uri = f"{s3_bucket}/ds"
    storage.upload_dir(str(lake / "ds"), uri, last=("index.json", "manifest.json"))
    ckpt = f"{s3_bucket}/ckpt"

    def train_cli(max_duration):
        raw = base_cfg(
            lake,
            tmp_path,
            data={"streams": [{"uri": uri}]},
            run={
                "max_duration": max_duration,
                "save_folder": ckpt,
                "run_name": "s3run",
                "autoresume": True,
                "save_interval": "2ba",
            },
        )
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(raw))
        # Composer's autoresume downloads the "latest" symlink to a local path spelled like the
        # URI ("s3:/bucket/...") relative to the working directory: keep that inside tmp_path.
        p = subprocess.run(
            [sys.executable, "-m", "trainer", str(cfg)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": REPO},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    train_cli("2ba")
    assert [r["step"] for r in read_log(tmp_path / "samples")] == [0, 1]
    assert storage.exists(f"{ckpt}/ep0-ba2-rank0.pt")
    train_cli("4ba")  # a restarted job: autoresume picks up the s3 checkpoint at step 2
    assert [r["step"] for r in read_log(tmp_path / "samples")] == [0, 1, 2, 3]
    assert storage.exists(f"{ckpt}/ep0-ba4-rank0.pt")
    # the shards came through the cache folder, not from a local path
    assert glob.glob(str(tmp_path / "cache" / "train" / "*" / "parts" / "*" / "shard.*.mds"))


# ------------------------------------------------------------------------------------------------
# issue 11: the dataset must be what its manifest says; bad settings are messages, not tracebacks


def test_refuses_a_student_vocabulary_larger_than_the_dataset(lake, tmp_path):
    from schemas import IncompatibleDataset

    raw = base_cfg(lake, tmp_path, model={"hf_config": tiny_llama_config(vocab_size=96)})
    with pytest.raises(IncompatibleDataset, match="vocab_size is 64 but the student's is 96; they must be equal"):
        _build(raw)


def test_refuses_a_manifest_whose_seq_len_disagrees_with_its_samples(lake, tmp_path):
    from trainer.data import CorruptDataset

    ds = tmp_path / "lying"
    write_dataset(str(ds), make_tokenizer(), n_samples=8, units=1, seq_len=32)
    m = json.load(open(ds / "manifest.json"))
    m["seq_len"] = 16
    (ds / "manifest.json").write_text(json.dumps(m))
    raw = base_cfg(lake, tmp_path, data={"streams": [{"uri": str(ds)}]})
    with pytest.raises(
        CorruptDataset, match=r"sample \d+ \(unit u00000-00000\) has 32 tokens, the manifest's seq_len is 16"
    ):
        _build(raw)


def _cli(tmp_path, raw, *overrides):
    import yaml

    from trainer.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return main([str(path), *overrides])


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_unusable_save_folder_is_a_message(lake, tmp_path, capsys, where):
    if where == "under-a-file":
        (tmp_path / "plain").write_text("not a folder")
        folder, reason = tmp_path / "plain" / "ckpt", "Not a directory"
    else:
        folder, reason = sysfs_folder("pdistill-ckpt"), ""
    rc = _cli(tmp_path, base_cfg(lake, tmp_path), f"run.save_folder={folder}")
    err = capsys.readouterr().err
    assert rc == 2 and f"pdistill train: refused: run.save_folder: cannot write to {folder} ({reason}" in err
    assert "Traceback" not in err and not (tmp_path / "samples").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.device=gpu", "run.device: gpu asked for, but torch sees no CUDA device"),
        ("model.hf_config.hidden_act=no_such_activation", "model.hf_config:"),
        ("run.precision=amp_bf16", "run.precision: amp_bf16 needs a GPU"),
        ("data.batch_size=0", "data.batch_size: must be > 0"),
        ("run.allow_changed=[optim.nonsense_prefix_ok, bogus]", "run.allow_changed[1]: 'bogus' is not a key"),
        ("run.max_duration=0ba", "run.max_duration: must be more than 0, got '0ba'"),  # Composer refused it in fit()
        ("run.eval_interval=0ba", "run.eval_interval: must be more than 0"),
        # builds, but its first forward fails (key/value heads must divide the query heads)
        (
            "model.hf_config.num_attention_heads=3",
            "model.hf_config: the student it describes cannot run a forward pass",
        ),
        (
            "model.hf_config.hidden_size=0",
            "model.hf_config: 0.0 cannot be raised to a negative power",
        ),  # ZeroDivisionError
    ],
)
def test_bad_settings_are_messages(lake, tmp_path, capsys, override, message):
    import torch as _torch

    if override == "run.device=gpu" and _torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc = _cli(tmp_path, base_cfg(lake, tmp_path), override)
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert "Traceback" not in err


def test_corruption_found_while_training_is_a_message(lake, tmp_path, capsys):
    """With data.validate_hash off the preflight cannot see a damaged shard; the read fails at a step
    and the CLI stops with a message naming the dataset (fit() is inside the try)."""
    ds = tmp_path / "late"
    write_dataset(str(ds), make_tokenizer(), n_samples=16, units=2)
    shard = sorted(glob.glob(str(ds / "parts" / "u00001-00000" / "shard.*.mds.zstd")))[0]
    data = bytearray(open(shard, "rb").read())
    open(shard, "wb").write(bytes(data[: len(data) // 2]))  # a truncated shard
    raw = base_cfg(lake, tmp_path, data={"streams": [{"uri": str(ds)}], "validate_hash": None, "shuffle": False})
    rc = _cli(tmp_path, raw)
    err = capsys.readouterr().err
    assert rc == 2 and "pdistill train: stopped:" in err and str(ds) in err, err[-2000:]
