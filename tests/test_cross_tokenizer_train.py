"""A student with its own tokenizer, trained from a stored teacher pass (issue 23), end to end.

The teacher pass is the real pipeline (`pdistill logits`, the tiny byte-level BPE teacher of
tests/fixtures_models.py) over text with multi-byte characters, so the dataset carries the teacher's
tokenizer files and the teacher_next_logp column; the student's tokenizer is another byte-level BPE.
Training is the real Composer trainer (`trainer.train`), through the loader's re-tokenisation
(`trainer.retokenize`, `trainer.student_text`) and the cross-tokenizer losses (`trainer.cross_term`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("composer")

from fixtures_models import make_texts  # noqa: E402
from make_dataset import make_tokenizer, tiny_llama_config, write_dataset  # noqa: E402
from train_raw import train_raw  # noqa: E402

TEXTS = make_texts(40, seed=5) + ["Café naïve déjà vu, 中文 and 😀 in one line."] * 4
STUDENT_VOCAB = 300


def _jsonl(path, texts):
    with open(path, "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)


def _student_tokenizer(out: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=STUDENT_VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(make_texts(300, seed=77), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lake(tmp_path_factory, tiny_teacher):
    from pdistill.cli import main as pdistill

    root = tmp_path_factory.mktemp("cross")
    _jsonl(root / "train.jsonl", TEXTS)
    _jsonl(root / "held.jsonl", make_texts(8, seed=9) + ["Ünïcödé 中文 😀."])
    for name, src in (("logits", "train.jsonl"), ("heldout", "held.jsonl")):
        argv = ["logits", "--input", str(root / src), "--teacher", tiny_teacher, "--output", str(root / name)]
        assert pdistill(argv + ["--seq-len", "32", "--top-k", "8", "--no-progress"]) == 0
    _student_tokenizer(str(root / "student_tok"))
    return root


def cfg(lake, tmp, method: str | None = "alm", **sections) -> dict:
    """A tiny foreign-tokenizer run; method None: the LM-only baseline on the re-tokenised text."""
    raw = {
        "data": {
            "streams": [{"uri": str(lake / "logits")}],
            "eval_uri": str(lake / "heldout"),
            "batch_size": 4,
            "num_canonical_nodes": 1,
            "local_cache": str(tmp / "cache"),
            "shuffle": True,
            "shuffle_seed": 3,
        },
        "model": {"hf_config": tiny_llama_config(vocab_size=304), "tokenizer": str(lake / "student_tok")},
        "distill": {
            "mode": "offline" if method else "none",
            "chunk_size": 16,
            "alpha": {"name": "constant", "value": 0.5} if method else None,
            "cross_tokenizer": {"method": method or "alm"},
        },
        "optim": {"lr": 3e-3},
        "run": {
            "max_duration": "6ba",
            "device": "cpu",
            "deterministic": True,
            "seed": 5,
            "loggers": ["file"],
            "log_dir": str(tmp / "logs"),
            "eval_interval": "3ba",
            "save_interval": "100ba",
            "sample_log_dir": str(tmp / "samples"),
        },
    }
    for sec, vals in sections.items():
        raw.setdefault(sec, {}).update(vals)
    return raw


def metrics(tmp) -> list[dict]:
    (path,) = glob.glob(str(tmp / "logs" / "*" / "metrics.jsonl"))
    return [json.loads(line) for line in open(path)]


def samples_log(tmp) -> list[dict]:
    recs = [json.loads(line) for p in sorted(glob.glob(str(tmp / "samples" / "*.jsonl"))) for line in open(p)]
    return sorted(recs, key=lambda r: r["step"])


@pytest.mark.parametrize("method", ["first_token", "alm", "gold", "next_byte", None])
def test_a_foreign_student_trains_and_reports_bits_per_byte(lake, tmp_path, method):
    train_raw(cfg(lake, tmp_path, method))
    recs = metrics(tmp_path)
    train = [r["metrics"] for r in recs if r["kind"] == "train"]
    evals = [r["metrics"] for r in recs if r["kind"] == "eval"]
    assert len(train) == 6 and len(evals) == 2
    kd = [m["loss/train/kd"] for m in train]
    if method:
        assert all(math.isfinite(x) and x > 0 for x in kd), kd
    else:
        assert kd == [0.0] * 6
    bpb = [m["metrics/eval/BitsPerByte"] for m in evals]
    assert all(0 < x < 20 for x in bpb), bpb


def test_the_batch_is_the_student_side_of_each_sample(lake, tmp_path):
    """The loader re-tokenises: the student's ids spell exactly the teacher's text, labels are shifted
    ids, label bytes are the labels' byte lengths, and every aligned pair's next tokens start at the
    same byte on both sides."""
    from tokenizers import Tokenizer

    from schemas import DatasetDir
    from schemas.token_bytes import token_bytes
    from trainer.config import DataConfig
    from trainer.data import DistillDataset, build_dataloader
    from trainer.student_text import cross_tokenizer_text

    student_json = Tokenizer.from_file(str(lake / "student_tok" / "tokenizer.json")).to_str()
    ds = DistillDataset(
        DataConfig.of(str(lake / "logits"), shuffle=False),
        batch_size=4,
        cache_dir=str(tmp_path / "c"),
        student_text=lambda uri, m: cross_tokenizer_text(uri, m, student_json, student_len=None, separator=None),
    )
    d = DatasetDir(str(lake / "logits"))
    t_bytes = token_bytes(d.tokenizer_json(d.read_manifest()))
    s_bytes = token_bytes(student_json)
    b = next(iter(build_dataloader(ds, batch_size=4)))
    assert b["input_ids"].shape == (4, 40) and b["teacher_ids"].shape[:2] == (4, 32)  # 1.25 x 32
    for i in range(4):
        n = int(b["attention_mask"][i].sum())
        ids = b["input_ids"][i, :n].numpy()
        assert np.array_equal(b["labels"][i, : n - 1].numpy(), ids[1:]) and (b["labels"][i, n - 1 :] == -100).all()
        want = s_bytes.lengths[ids[1:]]
        want[ids[1:] == 0] = 0  # the separator is a symbol, not bytes
        assert np.array_equal(b["label_bytes"][i, : n - 1].numpy(), want)
        tp, sp = b["pair_teacher"][i], b["pair_student"][i]
        pairs = [(int(t), int(s)) for t, s in zip(tp, sp) if t >= 0]
        assert len(pairs) >= 20
        t_tok = ds[i]["tokens"]
        ctrl = set(t_bytes.special)

        def spell(table, toks):  # control ids (separator, BOS) as one marker each: symbols, not bytes
            return b"".join(b"\x00" if x in ctrl or x == 0 else table.decode([x]) for x in toks)

        for t, s in pairs:  # the text up to each pair is the same on both sides (the student may lack
            left_t, left_s = spell(t_bytes, t_tok[: t + 1]), spell(s_bytes, ids[: s + 1])  # a cut character)
            assert left_t.endswith(left_s) and len(left_t) - len(left_s) < 4, (i, t, s)


def test_resume_mid_epoch_is_bit_identical_with_a_foreign_tokenizer(lake, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    straight = train_raw(cfg(lake, a, run={"save_folder": str(a / "ckpt"), "run_name": "ra", "autoresume": True}))
    raw_b = cfg(
        lake, b, run={"save_folder": str(b / "ckpt"), "run_name": "rb", "autoresume": True, "stop_after": "3ba"}
    )
    train_raw(raw_b)
    raw_b["run"]["stop_after"] = None
    raw_b["data"]["local_cache"] = str(b / "cache2")
    resumed = train_raw(raw_b)
    la, lb = samples_log(a), samples_log(b)
    assert [r["step"] for r in lb] == list(range(6))
    assert [r["sample_ids"] for r in la] == [r["sample_ids"] for r in lb]
    assert [(r["loss"], r["kd"]) for r in la] == [(r["loss"], r["kd"]) for r in lb]
    sa, sb = (t.state.model.student.state_dict() for t in (straight, resumed))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _refusal(raw, capsys) -> str:
    import yaml

    from trainer.cli import main

    path = os.path.join(raw["run"]["log_dir"], "..", "cfg.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    assert main([path]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_student_tokenizer_without_byte_coverage_is_refused(lake, tmp_path, capsys):
    make_tokenizer(str(tmp_path / "words"))  # word-level: most bytes have no token
    raw = cfg(lake, tmp_path)
    raw["model"]["tokenizer"] = str(tmp_path / "words")
    err = _refusal(raw, capsys)
    assert "distill.cross_tokenizer" in err and "WordLevel" in err, err


def test_a_foreign_student_without_a_tokenizer_is_told_which_one(lake, tmp_path, capsys):
    raw = cfg(lake, tmp_path)
    raw["model"]["tokenizer"] = None
    err = _refusal(raw, capsys)
    assert "model.tokenizer: required with distill.cross_tokenizer: the student's own tokenizer" in err, err
    assert "teacher's tokenizer" not in err, err


def test_a_dataset_without_tokenizer_files_is_refused(lake, tmp_path, capsys):
    tok = make_tokenizer(str(tmp_path / "tok"))
    write_dataset(str(tmp_path / "old"), tok, n_samples=8, units=1)  # written as before issue 23
    raw = cfg(lake, tmp_path)
    raw["data"]["streams"] = [{"uri": str(tmp_path / "old")}]
    raw["data"]["eval_uri"] = None
    err = _refusal(raw, capsys)
    assert "no teacher tokenizer files" in err and str(tmp_path / "old") in err, err


def test_alm_on_a_dataset_without_the_next_token_column_is_refused(lake, tmp_path, capsys):
    old = tmp_path / "no_next_logp"
    shutil.copytree(lake / "logits", old)
    m = json.loads((old / "manifest.json").read_text())
    m["next_logp"] = None  # a dataset written before the column existed
    (old / "manifest.json").write_text(json.dumps(m))
    raw = cfg(lake, tmp_path)
    raw["data"]["streams"] = [{"uri": str(old)}]
    err = _refusal(raw, capsys)
    assert "teacher_next_logp" in err and "gold or next_byte" in err, err
    train_raw(cfg(lake, tmp_path / "gold", "gold", data={"streams": [{"uri": str(old)}]}))  # needs no such column


def test_same_tokenizer_runs_report_bits_per_byte_too(lake, tmp_path, tiny_teacher):
    """Bits per byte = held-out CE x (tokens / bytes) / ln 2, the bytes read off the teacher's tokenizer."""
    raw = cfg(lake, tmp_path)
    raw["model"] = {"hf_config": tiny_llama_config(vocab_size=320), "tokenizer": tiny_teacher}
    raw["distill"] = {"mode": "offline", "chunk_size": 16, "alpha": {"name": "constant", "value": 0.5}}
    train_raw(raw)
    ev = [r["metrics"] for r in metrics(tmp_path) if r["kind"] == "eval"][-1]
    from schemas import DatasetDir
    from schemas.token_bytes import token_bytes
    from trainer.config import DataConfig
    from trainer.data import DistillDataset

    d = DatasetDir(str(lake / "heldout"))
    lengths = token_bytes(d.tokenizer_json(d.read_manifest())).lengths
    ds = DistillDataset(
        DataConfig.of(str(lake / "heldout"), shuffle=False),
        batch_size=1,
        cache_dir=str(tmp_path / "c2"),
        with_teacher=False,
    )
    tokens = nbytes = 0
    for i in range(len(ds)):
        s = ds[i]
        nxt = s["tokens"][1 : s["n_tokens"]]
        tokens += len(nxt)
        nbytes += int(lengths[nxt].sum())
    want = ev["metrics/eval/LanguageCrossEntropy"] * tokens / nbytes / math.log(2)
    assert ev["metrics/eval/BitsPerByte"] == pytest.approx(want, rel=1e-5)


def test_first_token_with_the_teachers_own_tokenizer_is_same_tokenizer_kd(lake, tmp_path):
    """The identity reduction end to end: re-tokenised with the teacher's own tokenizer, every
    position but the last real one is a pair, and the projected teacher equals the stored one there
    (the last position has no next token on the student's side to align with)."""
    from schemas import DatasetDir
    from trainer.config import DataConfig
    from trainer.data import DistillDataset, build_dataloader
    from trainer.student_text import cross_tokenizer_text

    uri = str(lake / "logits")
    d = DatasetDir(uri)
    teacher_json = d.tokenizer_json(d.read_manifest())
    common = dict(batch_size=8, cache_dir=str(tmp_path / "c"))
    same = DistillDataset(DataConfig.of(uri, shuffle=False), **common)
    same_b = next(iter(build_dataloader(same, batch_size=8)))
    del same
    cross = DistillDataset(
        DataConfig.of(uri, shuffle=False),
        student_text=lambda u, m: cross_tokenizer_text(
            u, m, teacher_json, student_len=32, separator=None, method="first_token"
        ),
        **common,
    )
    b = next(iter(build_dataloader(cross, batch_size=8)))
    assert torch.equal(b["input_ids"], same_b["input_ids"]) and torch.equal(b["labels"], same_b["labels"])
    n = same_b["attention_mask"].sum(1)
    for i in range(8):
        m = int(n[i]) - 1  # positions 0 .. n - 2
        for col in ("teacher_ids", "teacher_mask", "teacher_log_tail"):
            assert torch.equal(b[col][i, :m], same_b[col][i, :m]), col
        torch.testing.assert_close(b["teacher_logp"][i, :m], same_b["teacher_logp"][i, :m], rtol=1e-6, atol=1e-6)
        assert torch.equal(b["position_mask"][i, :m], same_b["position_mask"][i, :m])
        assert not b["position_mask"][i, m:].any()
