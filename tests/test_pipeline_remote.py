"""The teacher pass with everything on object storage, against real HTTP emulators.

Corpus (Parquet + JSONL), teacher checkpoint and tokenizer are uploaded with fsspec into an
emulated bucket (moto for s3://, gcp-storage-emulator for gs://); the pipeline reads them from
there (the teacher through `schemas.storage.fetch_dir`) and publishes its dataset into the same
bucket. The result must equal a local run of the same config: same sample ids, same decoded
content (the source fingerprint is location-independent: a copy of the corpus is the same input).

s3:// is read back with the stock `streaming.StreamingDataset(remote=s3://...)`; gs:// is
fetched with `schemas.storage.fetch_dir` first, because streaming's GCS downloader insists on
Google credentials (see tests/test_objectstore.py).
"""

import json
import os
import urllib.parse

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from fixtures_models import make_texts  # noqa: E402

from pipelines.config import PipelineConfig  # noqa: E402
from pipelines.job import SettingsMismatch, run  # noqa: E402
from schemas import INDEX_NAME, MANIFEST_NAME, DatasetDir, Manifest, decode_dense, sample_id, storage  # noqa: E402

SETTINGS = dict(seq_len=32, top_p=0.9, top_k=16, batch_size=4, bytes_per_unit=1500, rows_per_unit=8, progress=False)


def make_lake(d):
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "a.jsonl"), "w") as f:
        f.write("".join(json.dumps({"text": t}) + "\n" for t in make_texts(30, seed=1)))
        f.write('{"text": "unterminated\n')  # one dead letter
    pq.write_table(pa.table({"text": make_texts(12, seed=3)}), os.path.join(d, "c.parquet"), row_group_size=4)
    return d


def rows_of(local_ds_dir, remote=None):
    """Every sample through the stock StreamingDataset, decoded with schemas only."""
    from streaming import StreamingDataset

    m = Manifest.from_json(storage.read_text(storage.join(remote or local_ds_dir, MANIFEST_NAME)))
    codec = DatasetDir(remote or str(local_ds_dir)).stored_codec(m)  # with its codec prime, if it has one
    ds = StreamingDataset(remote=remote, local=str(local_ds_dir), batch_size=1, shuffle=False)
    rows = []
    for i in range(len(ds)):
        s = ds[i]
        d = decode_dense(s, codec, m.truncation.top_k)
        rows.append(
            (
                int(s["sample_id"]),
                s["unit"],
                s["tokens"].tolist(),
                int(s["n_tokens"]),
                list(s["doc_starts"]),
                d.ids.tolist(),
                d.logp.tolist(),
                d.mask.tolist(),
                d.log_tail.tolist(),
            )
        )
    del ds
    return m, rows


@pytest.fixture(scope="module")
def local_run(tiny_teacher, tmp_path_factory):
    lake = make_lake(str(tmp_path_factory.mktemp("lake")))
    out = str(tmp_path_factory.mktemp("local") / "ds")
    report = run(PipelineConfig(inputs=[os.path.join(lake, "*")], teacher=tiny_teacher, output=out, **SETTINGS))
    m, rows = rows_of(out)
    return {"lake": lake, "manifest": m, "rows": rows, "report": report}


def upload(local_dir, uri):
    fs, path = storage.fs_and_path(uri)
    for name in sorted(os.listdir(local_dir)):
        fs.put_file(os.path.join(local_dir, name), path + "/" + name)


def remote_keys(uri):
    fs, path = storage.fs_and_path(uri)
    fs.invalidate_cache()
    return sorted(p[len(path.rstrip("/")) + 1 :] for p in fs.find(path))


def run_remote(bucket, local_run, tiny_teacher, tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("PDISTILL_CACHE", str(tmp_path / "cache"))  # fetch_dir's download cache
    upload(local_run["lake"], storage.join(bucket, "lake"))
    upload(tiny_teacher, storage.join(bucket, "teacher"))
    out = storage.join(bucket, "ds")
    config = PipelineConfig(
        inputs=[storage.join(bucket, "lake", "*")],
        teacher=storage.join(bucket, "teacher"),
        output=out,
        **{**SETTINGS, **kw},
    )
    report = run(config)
    keys = remote_keys(out)
    assert MANIFEST_NAME in keys and INDEX_NAME in keys and "_settings.json" in keys
    units = sorted({k.split("/")[1] for k in keys if k.startswith("parts/")})
    assert all(f"parts/{u}/{INDEX_NAME}" in keys for u in units) and len(units) == local_run["manifest"].counts.units
    assert [k for k in keys if k.startswith("dead_letter/")] == ["dead_letter/u00000-00002.jsonl"]
    m = Manifest.from_json(storage.read_text(storage.join(out, MANIFEST_NAME)))
    c, lc = m.counts, local_run["manifest"].counts
    assert c.reconciles() and c == lc and c.dead_letters == 1 and c.documents == 30 + 1 + 12
    assert report.summary["sequences"] == c.sequences
    if report.computed_units == report.units:  # a resumed run computes (and counts) only the missing parts
        assert report.metrics["teacher_tokens"] == c.tokens
    else:
        assert 0 < report.metrics["teacher_tokens"] < c.tokens
    # location-independent identity: same sources, teacher, tokenizer and settings as the local run
    lm = local_run["manifest"]
    assert m.source_fingerprint == lm.source_fingerprint
    assert (m.settings_fingerprint == lm.settings_fingerprint) == ("codec" not in kw)  # the codec is a setting
    assert m.teacher.revision == lm.teacher.revision and m.tokenizer.fingerprint == lm.tokenizer.fingerprint
    assert [s.uri for s in m.sources] == [storage.join(bucket, "lake", n) for n in ("a.jsonl", "c.parquet")]
    return config, m


def check_same_as_local(m, rows, local_run):
    assert len(rows) == m.counts.sequences
    assert [r[0] for r in rows] == [r[0] for r in local_run["rows"]]
    assert [r[0] for r in rows][:3] == [sample_id(m.source_fingerprint, "u00000-00000", i) for i in range(3)]
    for got, want in zip(rows, local_run["rows"]):
        assert got == want


def check_rerun(config, tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PDISTILL_TEST_TEACHER_LOG", str(log))
    assert run(config.replace(batch_size=2)).complete_before and not log.exists()
    with pytest.raises(SettingsMismatch, match=r"top_k: 16 -> 8"):
        run(config.replace(top_k=8))


@pytest.mark.slow
def test_s3_lake_to_s3_dataset(s3_bucket, s3_server, local_run, tiny_teacher, tmp_path, monkeypatch):
    config, m = run_remote(s3_bucket, local_run, tiny_teacher, tmp_path, monkeypatch)
    _, rows = rows_of(tmp_path / "read", remote=config.output)
    check_same_as_local(m, rows, local_run)
    # the objects are in the emulator: asked directly with an explicit endpoint
    import boto3

    bucket = urllib.parse.urlparse(s3_bucket).netloc
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    assert "data/ds/manifest.json" in {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    check_rerun(config, tmp_path, monkeypatch)


@pytest.mark.slow
def test_gcs_lake_to_gcs_dataset(gcs_bucket, gcs_server, local_run, tiny_teacher, tmp_path, monkeypatch):
    config, m = run_remote(gcs_bucket, local_run, tiny_teacher, tmp_path, monkeypatch)
    local = storage.fetch_dir(config.output, cache_root=str(tmp_path / "fetched"))
    _, rows = rows_of(local)
    check_same_as_local(m, rows, local_run)
    with urllib.request.urlopen(
        f"{gcs_server.endpoint}/storage/v1/b/{urllib.parse.urlparse(gcs_bucket).netloc}/o"
    ) as r:
        assert "data/ds/manifest.json" in {i["name"] for i in json.load(r)["items"]}
    check_rerun(config, tmp_path, monkeypatch)


@pytest.mark.slow
def test_s3_multi_process_resume(s3_bucket, local_run, tiny_teacher, tmp_path, monkeypatch):
    """multi_processing workers (fresh interpreters) reach the emulator; a killed run resumes on s3."""
    monkeypatch.setenv(
        "PDISTILL_TEST_FAULTS", json.dumps({"stage": "sink", "units": ["u00001-00000"], "mode": "always"})
    )
    with pytest.raises(Exception, match="injected failure"):
        run_remote(s3_bucket, local_run, tiny_teacher, tmp_path, monkeypatch)
    out = storage.join(s3_bucket, "ds")
    keys = remote_keys(out)
    published = {k.split("/")[1] for k in keys if k.startswith("parts/") and k.endswith("/" + INDEX_NAME)}
    assert MANIFEST_NAME not in keys and "u00001-00000" not in published and published
    monkeypatch.delenv("PDISTILL_TEST_FAULTS")
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PDISTILL_TEST_TEACHER_LOG", str(log))
    config, m = run_remote(
        s3_bucket,
        local_run,
        tiny_teacher,
        tmp_path,
        monkeypatch,
        direct_running_mode="multi_processing",
        direct_num_workers=2,
    )
    called = {u for line in log.read_text().splitlines() for u in json.loads(line)["units"]}
    assert "u00001-00000" in called and not called & published
    assert {json.loads(line)["pid"] for line in log.read_text().splitlines()} != {os.getpid()}
    _, rows = rows_of(tmp_path / "read", remote=config.output)
    check_same_as_local(m, rows, local_run)


@pytest.mark.slow
def test_s3_compact5_publishes_and_reads_its_prime_on_the_store(
    s3_bucket, local_run, tiny_teacher, tmp_path, monkeypatch
):
    """compact5 with worker processes: the prime is created on s3 (create-if-absent), is a side
    input in fresh interpreters, and readers take it from the bucket; the decoded signal is the
    local compact4 run's."""
    from schemas.codec_compact5 import Prime
    from schemas.dataset_dir import PRIME_NAME

    config, m = run_remote(
        s3_bucket,
        local_run,
        tiny_teacher,
        tmp_path,
        monkeypatch,
        codec="compact5",
        codec_params={"prime_tokens": 64},
        direct_running_mode="multi_processing",
        direct_num_workers=2,
    )
    assert PRIME_NAME in remote_keys(config.output)
    prime = Prime.from_bytes(storage.read_bytes(storage.join(config.output, PRIME_NAME)))
    assert m.codec.name == "compact5" and m.codec.params["prime_sha256"] == prime.digest
    _, rows = rows_of(tmp_path / "read", remote=config.output)
    check_same_as_local(m, rows, local_run)
