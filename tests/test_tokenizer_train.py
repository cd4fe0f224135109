"""`pdistill tokenizer train`: a byte-level BPE student tokenizer from JSONL / text inputs."""

from __future__ import annotations

import json

import numpy as np
from fixtures_models import build_tokenizer, make_texts
from tokenizers import Tokenizer

from pdistill.cli import main as cli
from schemas.token_bytes import check_byte_coverage, token_bytes
from trainer.retokenize import Retokenizer


def jsonl(texts) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


def write_lake(root) -> str:
    root.mkdir()
    for f in range(3):
        texts = make_texts(40, seed=f) + ["Café 中文 😀 naïve"]
        (root / f"part-{f}.jsonl").write_bytes(jsonl(texts) + b'{"text": 7}\n')  # one dead letter each
    (root / "notes.txt").write_text("A plain text file is one document.\n")
    return str(root)


def test_train_is_deterministic_and_loads_both_ways(tmp_path, capsys):
    lake = write_lake(tmp_path / "lake")
    outs = []
    for k in range(2):
        out = tmp_path / f"tok{k}"
        assert cli(["tokenizer", "train", "--input", lake, "--output", str(out), "--vocab-size", "400"]) == 0
        outs.append(out)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["documents"] == 3 * 41 + 1 and summary["dead_letters"] == 3 and summary["vocab_size"] == 400
    a, b = ((o / "tokenizer.json").read_bytes() for o in outs)
    assert a == b  # same inputs, same tokenizer

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(outs[0]))
    assert hf.eos_token == hf.pad_token == "<|endoftext|>" and len(hf) == 400
    raw = Tokenizer.from_file(str(outs[0] / "tokenizer.json"))
    text = "Café 中文 😀 the river\n\n  spaces"
    assert hf(text, add_special_tokens=False)["input_ids"] == raw.encode(text, add_special_tokens=False).ids
    assert raw.decode(raw.encode(text).ids) == text
    tb = token_bytes(a.decode())
    check_byte_coverage(tb)  # any byte can be spelled: fit as a cross-tokenizer student
    assert tb.kind == "byte_level" and tb.prefix == b""


def test_trained_tokenizer_is_a_retokenizer_student(tmp_path):
    lake = write_lake(tmp_path / "lake")
    assert cli(["tokenizer", "train", "--input", f"{lake}/*.jsonl", "--output", str(tmp_path / "s")]) == 0
    teacher = build_tokenizer(str(tmp_path / "t"))
    student_json = (tmp_path / "s" / "tokenizer.json").read_text()
    assert Tokenizer.from_str(student_json).get_vocab_size() < 8192  # the default, capped by what the corpus holds
    ids = teacher("Café the river.", add_special_tokens=False)["input_ids"] + [teacher.eos_token_id]
    r = Retokenizer(teacher.backend_tokenizer.to_str(), student_json, teacher.eos_token_id, None, 32)
    out = r(np.array(ids), len(ids), [0])
    assert token_bytes(student_json).decode(out.ids[: out.n - 1]) == "Café the river.".encode()


def test_refusals_are_one_line(tmp_path, capsys):
    lake = write_lake(tmp_path / "lake")
    assert cli(["tokenizer", "train", "--input", str(tmp_path / "none*.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert cli(["tokenizer", "train", "--input", lake, "--output", str(tmp_path / "o"), "--vocab-size", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("pdistill tokenizer train: error: ") for line in err)
    assert "--vocab-size must be >= 257" in err[1]
    assert not (tmp_path / "o").exists()
