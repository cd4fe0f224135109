"""Real HTTP object-store emulators for tests: moto (S3) and gcp-storage-emulator (GCS).

Each server runs as a subprocess on a free 127.0.0.1 port for the whole test session and is
stopped at the end. Bucket fixtures point the process environment at the emulator, so code under
test needs no endpoint arguments (schemas.storage reads none):

- `s3_bucket` -> "s3://<bucket>/<prefix>" with AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 (botocore,
  aiobotocore and so s3fs), S3_ENDPOINT_URL (mosaicml-streaming's S3 downloader/uploader) and
  dummy credentials; metadata and config-file lookups are switched off.
- `gcs_bucket` -> "gs://<bucket>/<prefix>" with STORAGE_EMULATOR_HOST (gcsfs and
  google-cloud-storage) and gcsfs set to token="anon" (in this process through fsspec's config,
  in child processes - Beam's multi_processing workers - through FSSPEC_GCS_TOKEN).

fsspec caches filesystem instances per (class, kwargs): the fixtures clear s3fs's and gcsfs's
instance caches after changing the environment and again at teardown, so no instance that
points at an emulator (or at the real cloud) outlives its fixture.

Register in conftest.py with `from tests.objectstore import *  # noqa: F401,F403` (or
`pytest_plugins = ["tests.objectstore"]`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

__all__ = [
    "ObjectStoreServer",
    "s3_server",
    "s3_bucket",
    "gcs_server",
    "gcs_bucket",
    "clear_fs_caches",
    "S3_ENV",
    "GCS_ENV",
]

HOST = "127.0.0.1"
S3_REGION = "us-east-1"
# Every environment variable a bucket fixture may set (restored afterwards).
S3_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "S3_ENDPOINT_URL",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)
GCS_ENV = (
    "STORAGE_EMULATOR_HOST",
    "FSSPEC_GCS_TOKEN",
    "GOOGLE_CLOUD_PROJECT",
    "NO_GCE_CHECK",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ObjectStoreServer:
    """One emulator subprocess: started on a free port, polled until it answers, stopped by pid."""

    def __init__(self, name: str, argv_for_port, ready_path: str, log_dir: str):
        self.name = name
        self.port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.log_path = os.path.join(log_dir, f"{name}-{self.port}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv_for_port(self.port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))},
        )
        self._wait_ready(ready_path)

    def _wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.endpoint + path, timeout=2) as r:
                    r.read()
                return
            except urllib.error.HTTPError:
                return  # it answered (an error status still means the server is up)
            except Exception as e:  # connection refused while it starts
                last = e
                time.sleep(0.1)
        self.stop()
        with open(self.log_path, "rb") as f:
            log = f.read()[-4000:].decode("utf-8", "replace")
        raise RuntimeError(f"{self.name} emulator did not start on {self.endpoint} ({last}); log:\n{log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def clear_fs_caches() -> None:
    """Forget cached s3fs/gcsfs instances (they hold endpoints and credentials)."""
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:
        pass
    try:
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()
    except ImportError:
        pass


def _set_env(monkeypatch, names, values: dict) -> None:
    for name in names:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


# ---------------------------------------------------------------- S3 (moto server)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server (`python -m moto.server`) on a free port; yields its ObjectStoreServer."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (test extra)")
    log_dir = str(tmp_path_factory.mktemp("moto"))
    server = ObjectStoreServer(
        "moto",
        lambda port: [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        "/moto-api/",
        log_dir,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path):
    """A fresh bucket on the moto server; yields "s3://<bucket>/<prefix>" with the env pointed at it."""
    boto3 = pytest.importorskip("boto3")
    _set_env(
        monkeypatch,
        S3_ENV,
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": S3_REGION,
            "AWS_REGION": S3_REGION,
            "AWS_ENDPOINT_URL": s3_server.endpoint,
            "AWS_ENDPOINT_URL_S3": s3_server.endpoint,
            "S3_ENDPOINT_URL": s3_server.endpoint,
            # never read the developer's ~/.aws files or ask an instance metadata service
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    clear_fs_caches()
    bucket = f"pdistill-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint, region_name=S3_REGION).create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}/data"
    finally:
        clear_fs_caches()


# ---------------------------------------------------------------- GCS (gcp-storage-emulator)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """A gcp-storage-emulator (in memory) on a free port; yields its ObjectStoreServer."""
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is not installed (test extra)")
    log_dir = str(tmp_path_factory.mktemp("gcs"))
    server = ObjectStoreServer(
        "gcs",
        lambda port: [
            # the emulator with its multipart parsing fixed (it drops a trailing b"\r"; see the file)
            sys.executable,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "gcs_emulator.py"),
            "start",
            "--host",
            HOST,
            "--port",
            str(port),
            "--in-memory",
            "--quiet",
        ],
        "/storage/v1/b",
        log_dir,
    )
    try:
        yield server
    finally:
        server.stop()


def _create_gcs_bucket(endpoint: str, bucket: str) -> None:
    import json

    req = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=test-project",
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


@pytest.fixture
def gcs_bucket(gcs_server, monkeypatch):
    """A fresh bucket on the GCS emulator; yields "gs://<bucket>/<prefix>" with the env pointed at it."""
    import fsspec.config

    _set_env(
        monkeypatch,
        GCS_ENV,
        {
            "STORAGE_EMULATOR_HOST": gcs_server.endpoint,
            "FSSPEC_GCS_TOKEN": "anon",  # child processes: fsspec reads it when imported
            "GOOGLE_CLOUD_PROJECT": "test-project",
            "NO_GCE_CHECK": "True",  # google-auth: do not probe a metadata server
        },
    )
    # this process: fsspec's config supplies token="anon" to every new GCSFileSystem
    gcs_conf = dict(fsspec.config.conf.get("gcs", {}), token="anon")
    monkeypatch.setitem(fsspec.config.conf, "gcs", gcs_conf)
    clear_fs_caches()
    bucket = f"pdistill-{uuid.uuid4().hex[:12]}"
    _create_gcs_bucket(gcs_server.endpoint, bucket)
    try:
        yield f"gs://{bucket}/data"
    finally:
        clear_fs_caches()
