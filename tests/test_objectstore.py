"""schemas.storage and mosaicml-streaming against real HTTP emulators (moto S3, gcp-storage-emulator).

Each test checks that the bytes really went to the emulator (read back with a client pointed at
the emulator explicitly), not to a cached filesystem or the real cloud.
"""

import json
import os
import urllib.parse
import urllib.request

import numpy as np
import pytest

from schemas import storage

pytest.importorskip("fsspec")


def _roundtrip(uri, tmp_path):
    assert not storage.exists(storage.join(uri, "a.txt"))
    storage.write_text_atomic(storage.join(uri, "a.txt"), "héllo\n")
    assert storage.exists(storage.join(uri, "a.txt"))
    assert storage.read_text(storage.join(uri, "a.txt")) == "héllo\n"
    storage.write_text_atomic(storage.join(uri, "a.txt"), "second")  # overwrite
    assert storage.read_text(storage.join(uri, "a.txt")) == "second"
    for tail in (b"\r", b"\r\n", b"\n", b"\r\r"):  # line endings at the end of binary content survive
        data = bytes(range(256)) + tail
        storage.write_bytes_atomic(storage.join(uri, "cr.bin"), data)
        assert storage.read_bytes(storage.join(uri, "cr.bin")) == data, tail
    fs, path = storage.fs_and_path(storage.join(uri, "cr.bin"))
    fs.rm(path)

    src = tmp_path / "part"
    (src / "sub").mkdir(parents=True)
    (src / "index.json").write_text('{"shards": []}')
    (src / "shard.00000.mds.zstd").write_bytes(bytes(range(256)) * 50)
    (src / "sub" / "x.bin").write_bytes(b"\x00\x01\x02")
    storage.upload_dir(str(src), storage.join(uri, "part"), last=("index.json",))
    for name in ("index.json", "shard.00000.mds.zstd", "sub/x.bin"):
        assert storage.exists(storage.join(uri, "part", name))

    got = storage.fetch_dir(storage.join(uri, "part"), cache_root=str(tmp_path / "cache"))
    assert sorted(os.path.relpath(os.path.join(d, f), got) for d, _, fs in os.walk(got) for f in fs) == [
        "index.json",
        "shard.00000.mds.zstd",
        os.path.join("sub", "x.bin"),
    ]
    for name in ("index.json", "shard.00000.mds.zstd", os.path.join("sub", "x.bin")):
        assert open(os.path.join(got, name), "rb").read() == open(src / name, "rb").read()
    # cached: a second fetch returns the same folder without downloading
    assert storage.fetch_dir(storage.join(uri, "part"), cache_root=str(tmp_path / "cache")) == got
    # a file replaced at the same URI (a re-uploaded checkpoint) is fetched again, never served stale
    storage.write_bytes_atomic(storage.join(uri, "part", "sub", "x.bin"), b"\x09\x08")
    again = storage.fetch_dir(storage.join(uri, "part"), cache_root=str(tmp_path / "cache"))
    assert again != got and open(os.path.join(again, "sub", "x.bin"), "rb").read() == b"\x09\x08"
    with pytest.raises(FileNotFoundError):
        storage.fetch_dir(storage.join(uri, "missing"), cache_root=str(tmp_path / "cache"))


# ---------------------------------------------------------------- S3


def _s3_keys(endpoint, uri):
    import boto3

    bucket = urllib.parse.urlparse(uri).netloc
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_storage_roundtrip(s3_bucket, s3_server, tmp_path):
    pytest.importorskip("s3fs")
    _roundtrip(s3_bucket, tmp_path)
    # the objects are in the emulator (asked directly, with an explicit endpoint)
    assert _s3_keys(s3_server.endpoint, s3_bucket) == [
        "data/a.txt",
        "data/part/index.json",
        "data/part/shard.00000.mds.zstd",
        "data/part/sub/x.bin",
    ]


def test_s3fs_instance_targets_emulator(s3_bucket, s3_server):
    s3fs = pytest.importorskip("s3fs")
    fs, _ = storage.fs_and_path(s3_bucket)
    assert isinstance(fs, s3fs.S3FileSystem)
    # the endpoint comes from AWS_ENDPOINT_URL through botocore's config, not from our code
    assert fs.s3.meta.endpoint_url == s3_server.endpoint


# ---------------------------------------------------------------- GCS


def _gcs_names(endpoint, uri):
    bucket = urllib.parse.urlparse(uri).netloc
    with urllib.request.urlopen(f"{endpoint}/storage/v1/b/{bucket}/o", timeout=10) as r:
        return sorted(item["name"] for item in json.load(r).get("items", []))


def test_gcs_storage_roundtrip(gcs_bucket, gcs_server, tmp_path):
    pytest.importorskip("gcsfs")
    _roundtrip(gcs_bucket, tmp_path)
    assert _gcs_names(gcs_server.endpoint, gcs_bucket) == [
        "data/a.txt",
        "data/part/index.json",
        "data/part/shard.00000.mds.zstd",
        "data/part/sub/x.bin",
    ]


def test_gcsfs_instance_targets_emulator(gcs_bucket, gcs_server):
    gcsfs = pytest.importorskip("gcsfs")
    fs, _ = storage.fs_and_path(gcs_bucket)
    assert isinstance(fs, gcsfs.GCSFileSystem)
    assert fs._location == gcs_server.endpoint
    assert fs.credentials.method == "anon"


def test_gcs_env_reaches_child_processes(gcs_bucket, gcs_server):
    """A fresh interpreter (as Beam's multi_processing workers are) writes to the emulator too."""
    import subprocess
    import sys

    pytest.importorskip("gcsfs")
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
        "from schemas import storage\n"
        "storage.write_text_atomic(sys.argv[1], 'from a child')\n"
    )
    uri = storage.join(gcs_bucket, "child.txt")
    subprocess.run([sys.executable, "-c", code, uri], check=True, timeout=120)
    assert storage.read_text(uri) == "from a child"


# ---------------------------------------------------------------- mosaicml-streaming


def _write_mds(local_dir, n=40):
    from streaming import MDSWriter

    rows = [{"id": f"s{i:04d}", "tokens": np.arange(i, i + 8, dtype=np.int32)} for i in range(n)]
    with MDSWriter(
        out=str(local_dir),
        columns={"id": "str", "tokens": "ndarray:int32"},
        compression="zstd",
        hashes=["xxh3_64"],
        size_limit=1 << 10,  # several shards
    ) as w:
        for r in rows:
            w.write(r)
    return rows


def _read_all(remote, local, **kw):
    from streaming import StreamingDataset

    ds = StreamingDataset(remote=remote, local=str(local), batch_size=1, shuffle=False, **kw)
    return [ds[i] for i in range(len(ds))], list(ds)


def test_streaming_reads_mds_from_s3_emulator(s3_bucket, tmp_path):
    pytest.importorskip("streaming")
    src = tmp_path / "mds"
    rows = _write_mds(src)
    assert len([f for f in os.listdir(src) if f.endswith(".zstd")]) > 1
    remote = storage.join(s3_bucket, "mds")
    storage.upload_dir(str(src), remote, last=("index.json",))

    by_index, iterated = _read_all(remote, tmp_path / "cache")
    for got in (by_index, iterated):
        assert [g["id"] for g in got] == [r["id"] for r in rows]
        for g, r in zip(got, rows):
            np.testing.assert_array_equal(g["tokens"], r["tokens"])
    # index and shards were downloaded from the emulator (shards decompressed, .zstd dropped)
    cached = os.listdir(tmp_path / "cache")
    assert "index.json" in cached and any(f.endswith(".mds") for f in cached)


def test_streaming_gcs_downloader_needs_google_credentials(gcs_bucket, tmp_path, monkeypatch):
    """mosaicml-streaming 0.13's GCSDownloader against the GCS emulator.

    Found by reading streaming/base/storage/download.py and running it here:
    - without GCS_KEY/GCS_SECRET it calls google.auth.default() and, with no Application Default
      Credentials, raises ValueError before any request: STORAGE_EMULATOR_HOST alone is not enough;
    - GCS_KEY/GCS_SECRET switch it to boto3 with the endpoint hard-coded to storage.googleapis.com,
      so that path can never reach an emulator;
    - once google.auth.default() yields credentials (here: anonymous ones patched in, as a real
      worker's service account would), google-cloud-storage honours STORAGE_EMULATOR_HOST and
      StreamingDataset reads the dataset from the emulator.
    So on GCP (ADC present) streaming reads gs:// directly; in CI the trainer tests that need gs://
    either patch google.auth.default like this or fetch with schemas.storage.fetch_dir first.
    """
    pytest.importorskip("streaming")
    pytest.importorskip("google.cloud.storage")
    import google.auth
    import google.auth.credentials

    src = tmp_path / "mds"
    rows = _write_mds(src, n=12)
    remote = storage.join(gcs_bucket, "mds")
    storage.upload_dir(str(src), remote, last=("index.json",))

    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GCS_KEY", "GCS_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # no user ADC file

    # NO_GCE_CHECK (set by gcs_bucket) keeps google-auth from probing a metadata server
    with pytest.raises(ValueError, match="(?i)credentials|authentication|GCS_KEY"):
        _read_all(remote, tmp_path / "cache-noauth")

    monkeypatch.setattr(
        google.auth, "default", lambda *a, **k: (google.auth.credentials.AnonymousCredentials(), "test-project")
    )
    by_index, iterated = _read_all(remote, tmp_path / "cache-anon")
    assert [g["id"] for g in by_index] == [r["id"] for r in rows]
    assert [g["id"] for g in iterated] == [r["id"] for r in rows]


# ---------------------------------------------------------------- hostile object names


def test_fetch_dir_refuses_object_names_that_escape_the_cache(s3_bucket, s3_server, tmp_path):
    """An object named `<teacher>/../../../../escaped_marker` must not be written outside the cache."""
    import boto3

    teacher = storage.join(s3_bucket, "t")
    storage.write_text_atomic(storage.join(teacher, "config.json"), "{}")
    bucket = urllib.parse.urlparse(s3_bucket).netloc
    key = "data/t/../../../../escaped_marker"
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key=key, Body=b"escaped")
    assert key in _s3_keys(s3_server.endpoint, s3_bucket)  # the store keeps the name verbatim
    cache = tmp_path / "a" / "b" / "c" / "cache"
    with pytest.raises(ValueError, match=r"escaped_marker.*outside"):
        storage.fetch_dir(teacher, cache_root=str(cache))
    escaped = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f == "escaped_marker"]
    assert escaped == []
    assert not cache.exists() or os.listdir(cache) == []  # refused before any download


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/x", "a//b/../../../x", ".", "a/..", ""])
def test_safe_relative_name_rejects_escapes(name, tmp_path):
    with pytest.raises(ValueError, match="outside"):
        storage.safe_target(str(tmp_path), name, where="s3://b/t/" + name)
    assert storage.safe_target(str(tmp_path), "sub/x.bin", where="x") == os.path.join(str(tmp_path), "sub", "x.bin")
