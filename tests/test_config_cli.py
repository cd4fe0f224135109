"""Settings on the command line: flags and --help generated from the typed configs, one ConfigError,
our error types as messages and anything else as a traceback, damaged shards found by type."""

from __future__ import annotations

import glob
import os
import sys

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

sys.path.insert(0, os.path.dirname(__file__))
from unwritable import sysfs_folder  # noqa: E402

# -- pdistill train ------------------------------------------------------------------------------


def test_train_help_lists_every_setting_from_the_fields(capsys):
    from schemas.settings import leaf_settings
    from trainer.cli import main
    from trainer.config import TrainConfig

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    keys = [st.key for st in leaf_settings(TrainConfig)]
    assert {
        "data.streams",
        "distill.alpha",
        "distill.alpha.peak",
        "distill.alpha.name",
        "distill.tau",
        "scheduler",
        "scheduler.t_decay",
        "run.allow_changed",
        "model.hf_config",
    } <= set(keys)
    for key in keys:
        assert f"--{key} VALUE" in text, key
    assert "temperature of the teacher" in text and "default 2.0" in text  # distill.tau's help and default
    assert "for name wsd. length of the final decay" in text  # a key of one LR schedule only


def test_train_flags_are_overrides_and_win(capsys):
    import yaml

    from trainer.cli import main

    assert (
        main(
            [
                "pd_best",
                "--print-config",
                "distill.tau=3",
                "--distill.tau",
                "1.5",
                "--data.streams",
                "[{uri: s3://b/ds, proportion: 1.0}]",
                "--distill.alpha",
                "{name: constant, value: 0.5}",
            ]
        )
        == 0
    )
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["distill"]["tau"] == 1.5 and cfg["data"]["streams"][0]["uri"] == "s3://b/ds"
    assert cfg["distill"]["alpha"] == {"name": "constant", "value": 0.5}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--distill.tau", "hot"], "distill.tau: expected a number, got 'hot'"),
        (["--distill.alpha", "{name: wsd, peak: 1.5}"], "distill.alpha.peak: must be <= 1.0, got 1.5"),
        (["--distill.alpha", "{name: step}"], "distill.alpha.name: must be one of 'constant', 'linear'"),
        (
            ["--data.streams", "[{uri: a, colour: red}]"],
            "data.streams[0].colour: unknown key (known here: choose, local",
        ),
        (["--run.autoresume", "true"], "run.save_folder: required when run.autoresume is true"),
    ],
)
def test_train_bad_flag_names_the_dotted_key(capsys, argv, message):
    from trainer.cli import main

    assert main(["pd_best", "--print-config", *argv]) == 2
    assert f"pdistill train: config error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case, reason",
    [
        ("missing", "config file not found"),
        ("folder", "cannot read it as a config (Is a directory)"),
        (
            "not-yaml",
            "cannot read it as a config (not valid YAML: expected ',' or ']', but got '<stream end>' at line 2",
        ),
        ("binary", "cannot read it as a config (not UTF-8 text"),
        ("bad-override", "distill.tau: cannot parse override value '[1' (not valid YAML: expected ',' or ']'"),
    ],
)
def test_train_unreadable_config_is_one_line(tmp_path, capsys, case, reason):
    from trainer.cli import main

    (tmp_path / "folder").mkdir()
    (tmp_path / "not-yaml").write_text("run: [unclosed\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00garbage")
    path = "pd_best" if case == "bad-override" else str(tmp_path / case)
    assert main([path, "--print-config"] + (["distill.tau=[1"] if case == "bad-override" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdistill train: config error: ") and reason in err and len(err.strip().splitlines()) == 1, (
        err
    )


def test_train_bug_is_a_traceback(monkeypatch):
    """A ValueError from our own code (not a ConfigError or SchemaError) is not a user's mistake."""
    import trainer.train
    from trainer.cli import main

    def broken(cfg):
        raise ValueError("a bug in build_trainer")

    monkeypatch.setattr(trainer.train, "build_trainer", broken)
    with pytest.raises(ValueError, match="a bug in build_trainer"):
        main(["pd_best"])


# -- pdistill logits -----------------------------------------------------------------------------


def test_logits_flags_cover_every_setting_and_keep_their_names():
    from pipelines.cli import config_from_args, parser
    from pipelines.config import PipelineConfig

    ap = parser()
    dests = {a.dest for a in ap._actions}
    assert set(PipelineConfig.model_fields) - {"runner_config"} <= dests
    help_text = ap.format_help()
    for flag in (
        "--input",
        "--text-column",
        "--seq-len",
        "--top-p",
        "--codec-params",
        "--add-bos",
        "--no-add-bos",
        "--runner-config",
        "--direct-running-mode",
        "--share-model",
        "--progress",
        "--no-progress",
    ):
        assert flag in help_text, flag
    args, extra = ap.parse_known_args(
        [
            "--input",
            "a.jsonl",
            "--input",
            "b.jsonl,c.jsonl",
            "--teacher",
            "t",
            "--output",
            "o",
            "--codec-params",
            '{"step": 0.125}',
            "--codec",
            "compact",
            "--share-model",
            "false",
            "--top-p",
            "0.9",
            "--no-progress",
            "--project=x",
        ]
    )
    c = config_from_args(args)
    assert c.inputs == ["a.jsonl", "b.jsonl", "c.jsonl"] and c.share_model is False and c.top_p == 0.9
    assert c.codec_params == {"step": 0.125} and c.progress is False and extra == ["--project=x"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--top-p", "1.5"], "setting 'top_p': must be <= 1.0, got 1.5"),
        (["--selection", "greedy"], "setting 'selection': input should be 'top_p_k' or 'sample', got 'greedy'"),
        (["--device", "tpu"], "setting 'device': must be auto|cpu|cuda, got 'tpu'"),
        (["--codec", "zip"], "setting 'codec': unknown codec 'zip'"),
        (["--runner", "dask"], "DaskRunner is not supported"),
    ],
)
def test_logits_bad_settings_are_one_line(tmp_path, capsys, argv, message):
    from pipelines.cli import main

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.jsonl").write_text('{"text": "x"}\n')
    rc = main(
        ["--input", str(lake / "a.jsonl"), "--teacher", str(tmp_path / "t"), "--output", str(tmp_path / "o"), *argv]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("pdistill logits: error: ") and message in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "case",
    [
        "config-missing",
        "config-folder",
        "config-not-yaml",
        "config-binary",
        "runner-config-missing",
        "runner-config-folder",
        "report-under-a-file",
        "report-is-a-folder",
        "report-read-only",
    ],
)
def test_logits_unusable_files_are_one_line_naming_them(tmp_path, capsys, case):
    """A --config / --runner-config that cannot be read and a --report-json that cannot be written
    are one line naming the flag and the file (exit 2) before anything is written: no traceback,
    and the output is not even created."""
    from pipelines.cli import main

    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "plain").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    (tmp_path / "bad.yaml").write_text("top_k: [unclosed\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    missing = str(tmp_path / "none.yaml")
    flag, path, reason = {
        "config-missing": ("--config", missing, "cannot read it (No such file or directory)"),
        "config-folder": ("--config", str(tmp_path / "folder"), "cannot read it (Is a directory)"),
        "config-not-yaml": (
            "--config",
            str(tmp_path / "bad.yaml"),
            "a config file must be YAML (not valid YAML: "
            "expected ',' or ']', but got '<stream end>' at line 2, column 1)",
        ),
        "config-binary": ("--config", str(tmp_path / "binary.yaml"), "a config file must be YAML (not UTF-8 text"),
        "runner-config-missing": ("--runner-config", missing, "cannot read it (No such file or directory)"),
        "runner-config-folder": ("--runner-config", str(tmp_path / "folder"), "cannot read it (Is a directory)"),
        "report-under-a-file": (
            "--report-json",
            str(tmp_path / "plain" / "r.json"),
            f"cannot write to it (Not a directory: {tmp_path / 'plain'} is a file)",
        ),
        "report-is-a-folder": ("--report-json", str(tmp_path / "folder"), "cannot write to it (Is a directory"),
        "report-read-only": ("--report-json", None, ": /sys)"),  # the OS says why (EPERM or EROFS)
    }[case]
    if path is None:
        path = sysfs_folder("pdistill-check") + "/r.json"
    out = tmp_path / "out"
    rc = main(["--input", str(lake / "a.jsonl"), "--teacher", str(tmp_path / "t"), "--output", str(out), flag, path])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert err.startswith("pdistill logits: error: ") and len(err.strip().splitlines()) == 1, err
    assert path in err and reason in err, err
    if flag != "--config":
        assert f"{flag} {path}" in err, err
    assert not out.exists()


def test_one_writable_check_for_trainer_and_logits(tmp_path, monkeypatch):
    """`schemas.storage.unwritable` is the check both commands use (trainer save_folder and friends,
    logits --report-json): a folder under a file, a file that is a folder, a writable path, remote."""
    import trainer.train
    from schemas import storage

    (tmp_path / "plain").write_text("x")
    assert storage.unwritable(str(tmp_path / "plain" / "a" / "b")) == f"Not a directory: {tmp_path / 'plain'} is a file"
    assert storage.unwritable(str(tmp_path / "plain"), "file") is None
    assert storage.unwritable(str(tmp_path), "file").startswith("Is a directory")
    assert storage.unwritable(str(tmp_path / "new" / "deeper")) is None and not (tmp_path / "new").exists()
    assert storage.unwritable("s3://bucket/x") is None and storage.unwritable(None) is None
    assert sorted(os.listdir(tmp_path)) == ["plain"]  # the probe leaves nothing
    seen = []
    monkeypatch.setattr(storage, "unwritable", lambda uri, kind="folder": seen.append((uri, kind)) or "probe says no")
    with pytest.raises(trainer.train.SettingError, match="run.save_folder: cannot write to /x \\(probe says no\\)"):
        trainer.train.check_writable_folder("run.save_folder", "/x")
    from pipelines.cli import check_report_path
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="--report-json /y.json: cannot write to it \\(probe says no\\)"):
        check_report_path("/y.json")
    assert seen == [("/x", "folder"), ("/y.json", "file")]


def test_logits_bug_is_a_traceback(monkeypatch, capsys):
    import pipelines.job
    from pipelines.cli import main

    def broken(config, extra):
        raise ValueError("a bug in the job")

    monkeypatch.setattr(pipelines.job, "run", broken)
    with pytest.raises(ValueError, match="a bug in the job"):
        main(["--input", "a", "--teacher", "t", "--output", "o"])


# -- one error type ------------------------------------------------------------------------------


def test_one_config_error_for_the_product():
    import pipelines.config
    import trainer.config
    from pipelines.runner_options import RunnerConfigError
    from pipelines.teacher_limits import TeacherLimitError
    from schemas.errors import ConfigError
    from trainer.errors import ResumeMismatch, SettingError

    assert pipelines.config.ConfigError is trainer.config.ConfigError is ConfigError
    for sub in (RunnerConfigError, TeacherLimitError, SettingError, ResumeMismatch):
        assert issubclass(sub, ConfigError), sub
    with pytest.raises(ConfigError, match="^setting 'top_k': must be >= 1, got 0"):
        pipelines.config.PipelineConfig(top_k=0)  # direct construction too, not pydantic's own error


# -- damaged shards are CorruptDataset by type, whatever streaming's message -------------------


@pytest.mark.parametrize(
    "validate_hash, compression, expect",
    [
        ("xxh3_64", "zstd", "does not match the xxh3_64 hash"),
        (None, "zstd", "does not decompress"),
        ("xxh3_64", None, "does not match the xxh3_64 hash"),  # an uncompressed shard
    ],
)
def test_damaged_shard_after_preflight_is_corrupt_dataset(tmp_path, validate_hash, compression, expect):
    from make_dataset import make_tokenizer, write_dataset

    from schemas.errors import CorruptDataset
    from trainer.config import DataConfig
    from trainer.data import DistillDataset

    ds = tmp_path / "ds"
    write_dataset(str(ds), make_tokenizer(), n_samples=16, units=1, size_limit=1 << 10, compression=compression)
    data = DataConfig.of(str(ds), shuffle=False, validate_hash=validate_hash)
    reader = DistillDataset(data, batch_size=2, cache_dir=str(tmp_path / "cache"))  # preflight: whole
    shards = sorted(glob.glob(str(ds / "parts" / "*" / "shard.*.mds*")))
    assert len(shards) > 1
    raw = open(shards[-1], "rb").read()
    open(shards[-1], "wb").write(raw[: len(raw) // 2])  # damaged after the preflight, before streaming fetches it
    with pytest.raises(CorruptDataset, match=expect):
        for i in range(len(reader)):
            reader.raw(i)


@pytest.mark.parametrize("compression", ["zstd", None])
def test_validated_shards_are_hashed_once(tmp_path, monkeypatch, compression):
    """With data.validate_hash on, each shard is read and hashed once on its way to the cache:
    CheckedStream checks it and streaming does not check it again (a second pass over every byte
    of the dataset on every rank otherwise)."""
    import streaming.base.stream
    from make_dataset import make_tokenizer, write_dataset
    from streaming.base.hashing import get_hash

    import trainer.checked_stream
    from trainer.config import DataConfig
    from trainer.data import DistillDataset

    ds = tmp_path / "ds"
    write_dataset(str(ds), make_tokenizer(), n_samples=16, units=1, size_limit=1 << 10, compression=compression)
    hashed: list[int] = []

    def counting_get_hash(algo, data):
        hashed.append(len(data))
        return get_hash(algo, data)

    monkeypatch.setattr(trainer.checked_stream, "get_hash", counting_get_hash)
    monkeypatch.setattr(streaming.base.stream, "get_hash", counting_get_hash)
    reader = DistillDataset(
        DataConfig.of(str(ds), shuffle=False, validate_hash="xxh3_64"), batch_size=2, cache_dir=str(tmp_path / "cache")
    )  # its preflight reads a first shard
    for i in range(len(reader)):
        reader.raw(i)
    suffix = ".mds.zstd" if compression else ".mds"
    shards = sorted(glob.glob(str(ds / "parts" / "*" / f"shard.*{suffix}")))
    assert len(shards) > 1
    assert sorted(hashed) == sorted(os.path.getsize(s) for s in shards)
