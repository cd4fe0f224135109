"""The teacher's log-probability of each actual next token (`teacher_next_logp`, format nl1) and
the tokenizer files stored with a dataset: codec bound, NaN positions, damaged bytes, the sample
and manifest fields (older datasets without them still read), and one pipeline run on the tiny
teacher checked against a direct forward."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from schemas import CodecError, CorruptDataset, IncompatibleDataset, Manifest, ManifestError, SchemaError
from schemas import next_logp as nl
from schemas.sample import NEXT_LOGP_COLUMN, build_sample, decode_next_logp, mds_columns
from schemas.truncation import truncate

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "compact_v1")
LOGP = st.one_of(st.floats(-nl.MAX_CODE * nl.STEP, 0.0, width=32), st.just(float("nan")))


@given(x=arrays(np.float32, st.integers(0, 300), elements=LOGP), pad=st.integers(0, 40))
def test_round_trip_within_the_stated_bound_and_nan_kept(x, pad):
    got = nl.decode(nl.encode(x), len(x) + pad)
    assert got.dtype == np.float32 and got.shape == (len(x) + pad,)
    assert (np.isnan(got[: len(x)]) == np.isnan(x)).all() and np.isnan(got[len(x) :]).all()
    ok = ~np.isnan(x)
    assert (np.abs(got[: len(x)][ok].astype(np.float64) - x[ok]) <= nl.bound()).all()
    assert nl.bound() == 1 / 512


def test_grid_edges_nan_inside_and_trailing_nan_not_stored():
    x = np.array([0.0, -1 / 512, -3 / 512, np.nan, -300.0, 1e-6, np.nan, np.nan], np.float32)
    got = nl.decode(nl.encode(x), 8)
    assert got[0] == 0.0 and got[5] == 0.0  # a rounding-positive log-prob is stored as 0
    assert abs(got[2] + 3 / 512) <= nl.bound() and np.isnan(got[[3, 6, 7]]).all()
    assert got[4] == np.float32(-nl.MAX_CODE * nl.STEP)  # saturates at -255.99 nat
    assert len(nl.encode(np.concatenate([x, np.full(4000, np.nan, np.float32)]))) == len(nl.encode(x))
    assert np.isnan(nl.decode(nl.encode(np.full(5, np.nan, np.float32)), 5)).all()
    with pytest.raises(CodecError, match="infinity"):
        nl.encode(np.array([-np.inf], np.float32))


def test_damaged_bytes_are_refused_with_the_column_named():
    x = -np.random.default_rng(0).exponential(3.0, 200).astype(np.float32)
    good = nl.encode(x)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x20
    cases = {
        bytes(flipped): "damaged",
        good[:-3]: "damaged",
        b"XX" + good[2:]: "not an nl1 column",
        good[:3] + b"\x07" + good[4:]: "unknown grid exponent",
        good[:4] + b"\xff": "truncated or corrupt length",
    }
    for data, what in cases.items():
        with pytest.raises(CodecError, match=f"sample 7: .*{what}"):
            nl.decode(data, 200, where="sample 7: column teacher_next_logp")
    with pytest.raises(CodecError, match="holds 200 positions, the sequence has 100"):
        nl.decode(good, 100)


def _sample(next_logp, n=6, seq_len=8):
    rng = np.random.default_rng(1)
    tokens = np.concatenate([rng.integers(0, 50, n), np.zeros(seq_len - n, np.int64)])
    kept = truncate(rng.normal(size=(n, 50)).astype(np.float32) * 3, 0.9, 8).padded(seq_len)
    from schemas import make_codec

    return build_sample(
        sample_id=3,
        tokens=tokens,
        n_tokens=n,
        doc_starts=np.array([0]),
        truncated=kept,
        codec=make_codec("compact4", {}),
        vocab_size=50,
        top_k=8,
        unit="u0",
        next_logp=next_logp,
    )


def test_sample_column_round_trip_and_older_samples():
    x = np.full(8, np.nan, np.float32)
    x[:5] = [-0.5, -2.25, -7.0, -0.001, -12.5]
    s = _sample(x)
    assert set(s) == set(mds_columns(50, 8, next_logp=True)) and NEXT_LOGP_COLUMN not in mds_columns(50, 8)
    got = decode_next_logp(s)
    np.testing.assert_allclose(got[:5], x[:5], atol=nl.bound())
    assert np.isnan(got[5:]).all()
    assert decode_next_logp(_sample(None)) is None and NEXT_LOGP_COLUMN not in _sample(None)
    bad = x.copy()
    bad[5] = -1.0  # position n - 1 has no next token
    with pytest.raises(SchemaError, match="sample 3: next_logp has a value past the last real token"):
        _sample(bad)
    with pytest.raises(SchemaError, match="sample 3: next_logp has 7 positions, tokens 8"):
        _sample(x[:7])
    damaged = {**s, NEXT_LOGP_COLUMN: s[NEXT_LOGP_COLUMN][:-2]}
    with pytest.raises(CodecError, match="sample 3: column teacher_next_logp: damaged"):
        decode_next_logp(damaged)


def test_manifest_fields_parse_strictly_and_old_manifests_parse():
    with open(os.path.join(FIXTURE, "manifest.json")) as f:
        old = json.load(f)
    assert "next_logp" not in old and "files" not in old["tokenizer"]
    m = Manifest.from_json(json.dumps(old))
    assert m.next_logp is None and m.tokenizer.files is None
    new = {
        **old,
        "next_logp": nl.manifest_entry(),
        "tokenizer": {**old["tokenizer"], "files": {"tokenizer.json": "a" * 64}},
    }
    m2 = Manifest.from_json(json.dumps(new))
    assert (m2.next_logp.codec, m2.next_logp.step) == ("nl1", 1 / 256)
    assert Manifest.from_json(m2.to_json()) == m2
    for change, message in (
        ({"next_logp": {"codec": "nl9", "step": 0.5}}, "field 'next_logp' must name codec nl1"),
        ({"next_logp": {"codec": "nl1"}}, "missing field 'next_logp.step'"),
        ({"tokenizer": {**old["tokenizer"], "files": {"../x": "a" * 64}}}, "must list tokenizer.json"),
        (
            {"tokenizer": {**old["tokenizer"], "files": {"tokenizer.json": "a" * 64, "../x": "b" * 64}}},
            r"field 'tokenizer.files' names '../x'",
        ),
        ({"tokenizer": {**old["tokenizer"], "files": {"tokenizer.json": "zz"}}}, "must be a SHA-256 in hex"),
    ):
        with pytest.raises(ManifestError, match=message):
            Manifest.from_json(json.dumps({**old, **change}))


def test_sampled_selection_carries_the_same_column(tiny_teacher):
    from pipelines.teacher import TeacherRunner

    tokens = np.arange(3, 15, dtype=np.int64)[None]
    runs = [
        TeacherRunner(tiny_teacher, selection=sel, top_p=0.9, top_k=8, num_draws=16, device="cpu").predict(
            tokens, [10], [5]
        )[0]
        for sel in ("top_p_k", "sample")
    ]
    np.testing.assert_array_equal(runs[0].next_logp, runs[1].next_logp)
    assert np.isfinite(runs[0].next_logp[:9]).all() and np.isnan(runs[0].next_logp[9:]).all()


# -- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tiny_teacher, tmp_path_factory):
    pytest.importorskip("apache_beam")
    from fixtures_models import make_texts

    from pipelines.config import PipelineConfig
    from pipelines.job import run

    root = tmp_path_factory.mktemp("nl")
    lake = root / "lake.jsonl"
    lake.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_texts(12, seed=5)))
    out = root / "out" / "ds"
    cfg = dict(inputs=[str(lake)], teacher=tiny_teacher, output=str(out), seq_len=48, top_k=8)
    run(PipelineConfig(**cfg, top_p=0.9, batch_size=4, progress=False))
    return str(out)


@pytest.mark.slow
def test_pipeline_stores_the_teachers_next_token_logp(dataset, tiny_teacher):
    import torch
    from streaming import StreamingDataset
    from transformers import AutoModelForCausalLM

    m = Manifest.from_json(open(os.path.join(dataset, "manifest.json")).read())
    assert m.next_logp is not None and (m.next_logp.codec, m.next_logp.step) == ("nl1", nl.STEP)
    model = AutoModelForCausalLM.from_pretrained(tiny_teacher, dtype=torch.float32).eval()
    copy = dataset + "-read"  # StreamingDataset(local=...) unpacks shards beside the originals
    shutil.copytree(dataset, copy)
    ds = StreamingDataset(local=copy, batch_size=1, shuffle=False)
    checked, padded = 0, 0
    for i in range(len(ds)):
        s = ds[i]
        n, toks = int(s["n_tokens"]), np.asarray(s["tokens"], np.int64)
        got = decode_next_logp(s)
        with torch.no_grad():
            ref = torch.log_softmax(model(torch.as_tensor(toks[None, :n])).logits[0].double(), -1)
        want = ref[torch.arange(n - 1), torch.as_tensor(toks[1:n])].numpy()
        assert np.abs(got[: n - 1] - want).max() <= nl.bound() + 1e-4, f"sample {i}"
        assert np.isnan(got[n - 1 :]).all()
        checked, padded = checked + n - 1, padded + (n < len(toks))
    del ds
    assert checked > 100 and padded >= 1


@pytest.mark.slow
def test_tokenizer_files_are_stored_hashed_and_checked(dataset, tiny_teacher, tmp_path):
    from schemas import DatasetDir

    m = DatasetDir(dataset).read_manifest()
    names = {n for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")}
    present = {n for n in names if os.path.exists(os.path.join(tiny_teacher, n))}
    assert set(m.tokenizer.files) == present and "tokenizer.json" in present
    for name in present:
        src = open(os.path.join(tiny_teacher, name), "rb").read()
        assert open(os.path.join(dataset, "tokenizer", name), "rb").read() == src  # byte for byte
        assert m.tokenizer.files[name] == hashlib.sha256(src).hexdigest()
    text = DatasetDir(dataset).tokenizer_json(m)
    assert text == open(os.path.join(tiny_teacher, "tokenizer.json")).read()
    assert DatasetDir(dataset).verify().whole
    # tampered, missing, or written before the files were stored: one line naming dataset and file
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    with open(bad / "tokenizer" / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(CorruptDataset, match=r"dataset .*bad: tokenizer/tokenizer.json has SHA-256 [0-9a-f]{64}, its"):
        DatasetDir(str(bad)).tokenizer_json(m)
    assert [p.file for p in DatasetDir(str(bad)).verify().problems] == ["tokenizer/tokenizer.json"]
    os.remove(bad / "tokenizer" / "tokenizer.json")
    with pytest.raises(CorruptDataset, match="tokenizer/tokenizer.json, listed in its manifest, is missing"):
        DatasetDir(str(bad)).tokenizer_json(m)
    import dataclasses

    old = dataclasses.replace(m, tokenizer=dataclasses.replace(m.tokenizer, files=None))
    with pytest.raises(IncompatibleDataset, match="was written before pdistill stored tokenizer files"):
        DatasetDir(dataset).tokenizer_json(old)


@pytest.mark.slow
def test_an_older_partial_output_is_refused_as_other_settings(dataset, tiny_teacher, tmp_path):
    """An output claimed by a pdistill without the column (its settings lack next_logp) is not resumed."""
    from pipelines.config import PipelineConfig
    from pipelines.job import SettingsMismatch, run
    from schemas.identity import fingerprint_json

    dataset_lake = os.path.normpath(os.path.join(dataset, "..", "..", "lake.jsonl"))
    part = tmp_path / "partial"
    shutil.copytree(dataset, part)
    os.remove(part / "manifest.json")
    claim = json.loads((part / "_settings.json").read_text())
    claim["settings"]["settings"].pop("next_logp"), claim["settings"]["settings"].pop("tokenizer_files")
    claim["settings_fingerprint"] = fingerprint_json(claim["settings"])  # as that pdistill computed it
    (part / "_settings.json").write_text(json.dumps(claim))
    cfg = dict(inputs=[str(dataset_lake)], teacher=tiny_teacher, output=str(part), seq_len=48, top_k=8)
    with pytest.raises(SettingsMismatch, match=r"settings.next_logp: None -> \{'codec': 'nl1'"):
        run(PipelineConfig(**cfg, top_p=0.9, batch_size=4, progress=False))


@pytest.mark.slow
def test_inspect_reports_the_columns_bytes_per_token(dataset, capsys):
    from pdistill import inspect

    assert inspect.main([dataset, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.5 < report["next_logp_bytes_per_token"] < 4.0, report["next_logp_bytes_per_token"]
