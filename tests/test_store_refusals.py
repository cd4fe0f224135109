"""A store that refuses us (here: no credentials for the S3 emulator) is one line naming the URI
the command was touching, never an SDK traceback: botocore's NoCredentialsError is not an
OSError, so the commands used to print it raw (issue 11: a user sees a message for any bad
setting or input). Real moto server, real s3fs/botocore; only the credentials are taken away."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from fixtures_models import make_texts  # noqa: E402
from objectstore import clear_fs_caches  # noqa: E402

from schemas import storage  # noqa: E402


@pytest.fixture
def refusing_bucket(s3_bucket, monkeypatch):
    """The emulator's bucket, holding one JSONL file, reached without any credentials."""
    storage.write_text_atomic(storage.join(s3_bucket, "lake", "a.jsonl"), json.dumps({"text": "one document"}) + "\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    clear_fs_caches()
    return s3_bucket


def _one_line(err: str, prefix: str, *needles: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(prefix) and all(n in err for n in needles), err


def test_logits_input_and_output_refused(refusing_bucket, tiny_teacher, tmp_path, capsys):
    from pipelines.cli import main

    lake = tmp_path / "a.jsonl"
    lake.write_text("".join(json.dumps({"text": t}) + "\n" for t in make_texts(3, seed=1)))
    common = ["--teacher", tiny_teacher, "--seq-len", "32", "--no-progress"]
    remote_in = storage.join(refusing_bucket, "lake", "a.jsonl")
    assert main(["--input", remote_in, "--output", str(tmp_path / "ds"), *common]) == 2
    _one_line(
        capsys.readouterr().err, "pdistill logits: error: ", f"input {remote_in}: cannot list", "NoCredentialsError"
    )
    assert not (tmp_path / "ds").exists()
    remote_out = storage.join(refusing_bucket, "ds")
    assert main(["--input", str(lake), "--output", remote_out, *common]) == 2
    _one_line(
        capsys.readouterr().err,
        "pdistill logits: error: ",
        f"output {remote_out}: access refused",
        "NoCredentialsError",
        "check the credentials",
    )
    # a remote --report-json can only be tried at the end: the dataset is complete, the report is not
    report = storage.join(refusing_bucket, "report.json")
    assert main(["--input", str(lake), "--output", str(tmp_path / "ds"), "--report-json", report, *common]) == 2
    _one_line(
        capsys.readouterr().err,
        "pdistill logits: error: ",
        f"--report-json {report}: cannot write to it",
        "NoCredentialsError",
        "the dataset itself is complete",
    )
    assert (tmp_path / "ds" / "manifest.json").exists()


def test_inspect_refused_is_a_message(refusing_bucket, capsys):
    from pdistill import inspect

    uri = storage.join(refusing_bucket, "ds")
    with pytest.raises(SystemExit) as done:
        inspect.main([uri, "--json"])
    _one_line(str(done.value.code), "pdistill inspect: ", f"dataset {uri}: access refused", "NoCredentialsError")
    assert capsys.readouterr().out == ""


def test_trainer_dataset_and_model_refused(refusing_bucket, tmp_path):
    """The trainer's first touch of each remote URI: the dataset preflight and a model/tokenizer
    download; both are ConfigErrors (trainer.errors.USER_ERRORS: one line, exit 2)."""
    from trainer.data import inspect_stream
    from trainer.errors import USER_ERRORS
    from trainer.train import fetch_model_dir

    uri = storage.join(refusing_bucket, "ds")
    with pytest.raises(USER_ERRORS, match=rf"^dataset {uri}: access refused \(NoCredentialsError"):
        inspect_stream(uri)
    tok = storage.join(refusing_bucket, "tok")
    with pytest.raises(USER_ERRORS, match=rf"^model.tokenizer {tok}: access refused \(NoCredentialsError"):
        fetch_model_dir("model.tokenizer", tok, str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache") or not os.listdir(tmp_path / "cache")


def test_train_with_a_refused_remote_save_folder_is_a_message(refusing_bucket, tmp_path):
    """Composer touches a remote save_folder while the Trainer is built: one line, exit 2. In a
    subprocess: Beam, imported by this test module, breaks Composer's remote uploader in-process
    (docs/design.md, pitfalls)."""
    import subprocess
    import sys

    import yaml
    from make_dataset import make_tokenizer, tiny_llama_config, write_dataset

    tok = str(tmp_path / "tok")
    write_dataset(str(tmp_path / "ds"), make_tokenizer(tok), n_samples=8, units=1)
    folder = storage.join(refusing_bucket, "ckpt")
    raw = {
        "data": {
            "streams": [{"uri": str(tmp_path / "ds")}],
            "batch_size": 4,
            "num_canonical_nodes": 1,
            "local_cache": str(tmp_path / "cache"),
        },
        "model": {"hf_config": tiny_llama_config(), "tokenizer": tok},
        "run": {
            "max_duration": "2ba",
            "device": "cpu",
            "loggers": [],
            "save_folder": folder,
            "sample_log_dir": str(tmp_path / "samples"),
        },
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-m", "trainer", str(tmp_path / "cfg.yaml")],
        cwd=tmp_path,
        text=True,
        env={**os.environ, "PYTHONPATH": repo},
        capture_output=True,
        timeout=300,
    )
    err = "\n".join(line for line in done.stderr.splitlines() if " INFO " not in line and " WARNING " not in line)
    assert done.returncode == 2, done.stderr[-3000:]
    _one_line(err, "pdistill train: refused: ", f"run.save_folder {folder}: access refused", "NoCredentialsError")
    assert not (tmp_path / "samples").exists()  # not a step trained


def test_access_converts_refusals_only():
    """Refusals become StoreRefused naming the URI; a missing object and other I/O errors keep
    their own handling (callers turn FileNotFoundError into "no such dataset" and the like)."""
    for raised, converted in (
        (PermissionError(13, "Permission denied"), True),
        (OSError("Forbidden: b/ds/index.json\nno storage.objects.get"), True),  # gcsfs 403
        (FileNotFoundError(2, "No such file"), False),
        (OSError(5, "I/O error"), False),
    ):
        try:
            with storage.access("dataset gs://b/ds"):
                raise raised
        except storage.StoreRefused as e:
            assert converted and str(e).startswith("dataset gs://b/ds: access refused (") and "\n" not in str(e)
        except OSError as e:
            assert not converted and e is raised
