"""bench.trainer's dataset (as the pipeline writes it: teacher_next_logp, the teacher's tokenizer files)
and its (b'') line: the loader with re-tokenisation against the cross-tokenizer KD step."""

from __future__ import annotations

import argparse
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

pytest.importorskip("streaming")


@pytest.mark.slow
def test_bench_trainer_dataset_and_cross_loader_line(tmp_path, tiny_teacher, capsys):
    from bench import trainer as bt
    from bench import trainer_cross
    from pdistill.inspect import read_samples
    from pipelines.tokenizer_files import tokenizer_files
    from schemas import DatasetDir, fingerprint_tokenizer
    from schemas.next_logp import bound
    from schemas.sample import decode_next_logp

    seq_len = 32
    bank, tok = bt._teacher_bank(tiny_teacher, 2, seq_len)
    data = str(tmp_path / "data")
    files = tokenizer_files(tiny_teacher, tok)
    bt.write_dataset(
        data, bank, fingerprint_tokenizer(tok), n_samples=16, seq_len=seq_len, units=2, tokenizer_files=files
    )

    # the teacher's tokenizer is stored with the dataset, and every sample carries the teacher's
    # log-probability of each actual next token (NaN at the last position)
    d = DatasetDir(data)
    manifest = d.read_manifest()
    assert manifest.next_logp is not None
    assert d.tokenizer_json(manifest) == files["tokenizer.json"].decode("utf-8")
    with tempfile.TemporaryDirectory() as cache:
        raws, _ = read_samples(data, cache, 100)
    assert len(raws) == 16
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher, dtype=torch.float32).eval()
    for r in raws:
        tokens = np.asarray(r["tokens"]).astype(np.int64)
        with torch.no_grad():  # next_logp[t] = log p(tokens[t + 1] | tokens[: t + 1]), recomputed here
            logp = torch.log_softmax(model(torch.from_numpy(tokens)[None]).logits[0].float(), -1).numpy()
        expected = logp[np.arange(seq_len - 1), tokens[1:]]
        stored = decode_next_logp(r)
        assert np.isnan(stored[-1]) and np.all(np.isfinite(stored[:-1]))
        np.testing.assert_allclose(stored[:-1], expected, atol=bound() + 1e-4)

    # (b''): a foreign student tokenizer of 8,192 ids, the loader re-tokenising in a worker process
    work = tmp_path / "work"
    work.mkdir()
    trainer_cross.run(argparse.Namespace(batch=4, rounds=1, workers=1), data, str(work))
    out = capsys.readouterr().out
    assert "(b'') loader with re-tokenisation to a byte-level BPE of 8,192 ids" in out
    assert f"student seq_len {int(math.ceil(seq_len * 1.25 / 8) * 8)}" in out
    assert "cross-tokenizer KD (alm, student vocab 8,192)" in out
    m = re.search(r"loader / training +([0-9.]+)x +target >= 10x +(PASS|MISS)", out)
    assert m, out
    assert float(m.group(1)) > 0 and (m.group(2) == "PASS") == (float(m.group(1)) >= 10)
    assert "with 1 DataLoader workers: loader" in out
    assert (Path(work) / "student-tokenizer" / "tokenizer.json").exists()
