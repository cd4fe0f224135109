"""compact5 end to end on the real DirectRunner: the pipeline computes the codec prime once,
publishes it before any part, codes every part against it and names it in the manifest; a
resumed run reuses it without calling the teacher for it; readers (StreamingDataset + the
trainer's dataset, `pdistill inspect`) decode with it and refuse a dataset without it."""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from test_pipeline_e2e import config, digest, lake  # noqa: F401,E402  (the e2e lake fixture and settings)

from pipelines.job import OutputError, run  # noqa: E402
from pipelines.output import PartMismatch  # noqa: E402
from schemas import DatasetDir, Manifest, decode_dense  # noqa: E402
from schemas.codec_compact5 import Prime  # noqa: E402
from schemas.dataset_dir import PRIME_NAME  # noqa: E402
from schemas.integrity import stored_file  # noqa: E402


def _decoded(out) -> list:
    """Every sample's dense teacher signal, decoded with the codec the dataset names (and its prime)."""
    from streaming import StreamingDataset

    d = DatasetDir(str(out))
    m = d.read_manifest()
    codec = d.stored_codec(m)
    ds = StreamingDataset(local=str(out), batch_size=1, shuffle=False)
    rows = [(int(s["sample_id"]), decode_dense(s, codec, m.truncation.top_k)) for s in (ds[i] for i in range(len(ds)))]
    del ds
    return sorted(rows, key=lambda r: r[0])


@pytest.fixture(scope="module")
def primed(lake, tiny_teacher, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("primed") / "ds"
    report = run(config(lake, out, teacher=tiny_teacher, codec="compact5", codec_params={"prime_tokens": 100}))
    return {"out": str(out), "report": report, "digest": digest(out)}


def test_compact5_run_names_its_prime_and_decodes_as_compact4(primed, lake, tiny_teacher, tmp_path):  # noqa: F811
    out = primed["out"]
    m = Manifest.from_json(open(os.path.join(out, "manifest.json")).read())
    prime = Prime.from_bytes(open(os.path.join(out, PRIME_NAME), "rb").read())
    assert m.codec.name == "compact5" and m.codec.params["prime_sha256"] == prime.digest
    assert m.codec.params["prime_tokens"] == 100 and prime.tokens.shape[0] - int((prime.tokens == -1).sum()) == 100
    for unit in DatasetDir(out).finished_units():
        assert DatasetDir(out).read_stats(unit)["codec_prime_sha256"] == prime.digest
    metrics = primed["report"].metrics
    assert (
        100 <= metrics["prime_teacher_tokens"] < 100 + 32
    )  # the prime's own teacher calls (whole sequences), counted apart
    assert metrics["teacher_tokens"] == m.counts.tokens and metrics["documents"] == m.counts.documents
    # the same signal as a compact4 run (compact5 decodes compact2's levels at compact4's kl_target)
    ref = tmp_path / "c4"
    run(config(lake, ref, teacher=tiny_teacher, codec="compact4"))
    shutil.copytree(
        out, tmp_path / "read"
    )  # StreamingDataset unpacks shards beside the zstd ones: not in the fixture's
    a, b = _decoded(str(tmp_path / "read")), _decoded(str(ref))
    assert [i for i, _ in a] == [i for i, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert np.array_equal(x.ids[x.mask], y.ids[y.mask]) and np.array_equal(x.logp, y.logp)
        assert np.array_equal(x.log_tail, y.log_tail)
    d = DatasetDir(out)  # what storing the signal costs: the shards and the prime
    shards = sum(int(stored_file(s)["bytes"]) for s in d.read_index()["shards"])
    assert d.stored_bytes() == shards + os.path.getsize(os.path.join(out, PRIME_NAME))


def test_resume_reuses_the_prime_without_the_teacher(primed, lake, tiny_teacher, tmp_path):  # noqa: F811
    out = tmp_path / "ds"
    shutil.copytree(primed["out"], out)
    os.remove(out / "manifest.json")
    units = sorted(DatasetDir(str(out)).finished_units())
    shutil.rmtree(out / "parts" / units[0])  # the first unit: the one the prime was taken from
    report = run(config(lake, out, teacher=tiny_teacher, codec="compact5", codec_params={"prime_tokens": 100}))
    assert report.computed_units == 1 and "prime_teacher_tokens" not in report.metrics
    assert digest(out) == primed["digest"]


def test_parts_without_their_prime_are_refused(primed, lake, tiny_teacher, tmp_path):  # noqa: F811
    out = tmp_path / "ds"
    shutil.copytree(primed["out"], out)
    os.remove(out / "manifest.json")
    os.remove(out / PRIME_NAME)
    with pytest.raises(OutputError, match=f"parts are published but the codec prime .*{PRIME_NAME}.* is missing"):
        run(config(lake, out, teacher=tiny_teacher, codec="compact5", codec_params={"prime_tokens": 100}))
    (out / PRIME_NAME).write_bytes(b"PDPRIME1 not zstd")
    with pytest.raises(OutputError, match="corrupt"):
        run(config(lake, out, teacher=tiny_teacher, codec="compact5", codec_params={"prime_tokens": 100}))


def test_a_part_coded_against_another_prime_is_not_published(primed, lake, tiny_teacher, tmp_path):  # noqa: F811
    """A prime replaced under published parts (by hand, or by a run that lost a race it should
    not have): the final step compares every part's prime with the stored one."""
    out = tmp_path / "ds"
    shutil.copytree(primed["out"], out)
    os.remove(out / "manifest.json")
    units = sorted(DatasetDir(str(out)).finished_units())
    shutil.rmtree(out / "parts" / units[-1])
    other = Prime.from_bytes((out / PRIME_NAME).read_bytes())
    (out / PRIME_NAME).write_bytes(
        Prime(other.tokens[1:], other.counts[1:], other.ids[int(other.counts[0]) :]).to_bytes()
    )
    with pytest.raises(Exception, match="coded against codec prime") as e:
        run(config(lake, out, teacher=tiny_teacher, codec="compact5", codec_params={"prime_tokens": 100}))
    assert isinstance(e.value, PartMismatch) or "PartMismatch" in str(e.value)
    assert not (out / "manifest.json").exists()


def test_readers_need_the_prime(primed, tmp_path, capsys):
    from pdistill import inspect as inspect_cli

    out = tmp_path / "ds"
    shutil.copytree(primed["out"], out)
    assert inspect_cli.main([str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "whole" and report["codec"].startswith("compact5 ")
    prime_bytes = os.path.getsize(out / PRIME_NAME)
    assert report["stored_bytes_per_token"] * report["counts"]["tokens"] == pytest.approx(
        DatasetDir(str(out)).stored_bytes(), rel=1e-6
    )
    assert DatasetDir(str(out)).stored_bytes() > prime_bytes
    os.remove(out / PRIME_NAME)
    assert inspect_cli.main([str(out), "--json"]) != 0
    report = json.loads(capsys.readouterr().out)
    assert any(PRIME_NAME in p and "missing" in p for p in report["problems"])
    with pytest.raises(Exception, match=f"needs its prime {PRIME_NAME}, which is missing"):
        DatasetDir(str(out)).stored_codec(DatasetDir(str(out)).read_manifest())


def test_trainer_streams_each_decode_with_their_own_prime(primed, lake, tiny_teacher, tmp_path):  # noqa: F811
    """Two compact5 datasets (different primes) and a compact4 one as streams of one trainer
    dataset: every sample decodes with its own stream's codec, as it does alone."""
    from trainer.config import DataConfig
    from trainer.data import DistillDataset

    other = tmp_path / "other"
    run(config(lake, other, teacher=tiny_teacher, codec="compact5", codec_params={"prime_tokens": 40}, seq_len=32))
    plain = tmp_path / "plain"
    run(config(lake, plain, teacher=tiny_teacher, codec="compact4"))
    copies = []
    for i, src in enumerate((primed["out"], str(other), str(plain))):
        shutil.copytree(src, tmp_path / f"s{i}")
        copies.append(str(tmp_path / f"s{i}"))
    assert (
        Prime.from_bytes(open(os.path.join(copies[0], PRIME_NAME), "rb").read()).digest
        != Prime.from_bytes(open(os.path.join(copies[1], PRIME_NAME), "rb").read()).digest
    )
    ds = DistillDataset(DataConfig.of(*copies, shuffle=False), batch_size=1, cache_dir=str(tmp_path / "cache"))
    alone = {}
    for uri in copies:
        one = DistillDataset(DataConfig.of(uri, shuffle=False), batch_size=1, cache_dir=str(tmp_path / "cache1"))
        alone.update({(uri, one[i]["sample_id"]): one[i]["teacher"] for i in range(len(one))})
        del one
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        uri = copies[ds.stream_of(i)]
        ref = alone[(uri, s["sample_id"])]
        got = s["teacher"]  # KeptEntries, decoded with this stream's own codec and prime
        for f in ("counts", "ids", "logp", "log_tail"):
            assert np.array_equal(getattr(got, f), getattr(ref, f)), f"{uri}: {f}"
        seen.add(uri)
    assert seen == set(copies) and len(ds) == len(alone)
