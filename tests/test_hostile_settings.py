"""Hostile settings: what should be refused is refused with one line, and no secret of a URI we were
given reaches what we print or log, whoever wrote the text (issue 26, items 5, 7 and part of 9).

- a --tokenizer that is not the teacher's is refused before anything is written (the teacher
  would score another vocabulary); a copy of the teacher's own is not;
- special-token strings inside a document are encoded as text: the only control ids in the
  stored stream are the separators (and BOS) the pipeline inserts;
- `plan` refuses numbers that make no cost or time (negative, zero rates, inf, nan);
- `s3://KEY:SECRET@bucket/...` as any URI argument of any command: botocore's own text names
  `KEY:SECRET@bucket` without the scheme; the secret appears in no stdout, stderr or log record;
  inspect masks a URI's query-string secrets; an uncaught or logged exception is redacted too;
- `--device cuda` without a GPU, and `distill.alpha.peak=1.5` without an alpha section, are one line
  naming the setting and what is wrong.
"""

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from fixtures_models import make_texts  # noqa: E402
from test_hostile_inputs import jsonl, small_run_argv  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "TOPSECRET"  # in every credential-bearing URI below


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- item 5: accepted when it should be refused -------------------------------------------------


def test_a_tokenizer_other_than_the_teachers_is_refused(tiny_teacher, tmp_path, capsys):
    from make_dataset import make_tokenizer

    from pipelines.cli import main

    lake = tmp_path / "a.jsonl"
    lake.write_bytes(jsonl(make_texts(4, seed=1)))
    make_tokenizer(str(tmp_path / "small_tok"))  # 64 ids: fits the teacher's 320 logits, means other tokens
    out = tmp_path / "ds"
    assert (
        main(small_run_argv(lake, tiny_teacher, out, "--format", "jsonl", "--tokenizer", str(tmp_path / "small_tok")))
        == 2
    )
    err = one_line(capsys.readouterr().err)
    assert "small_tok is not the tokenizer of teacher" in err and "id 1 is '<unk>'" in err
    assert not out.exists()  # refused before the output was claimed
    # the teacher's own tokenizer copied elsewhere is the same tokenizer: accepted
    copy = tmp_path / "tok_copy"
    copy.mkdir()
    for name in os.listdir(tiny_teacher):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(os.path.join(tiny_teacher, name), copy / name)
    assert main(small_run_argv(lake, tiny_teacher, out, "--format", "jsonl", "--tokenizer", str(copy))) == 0, (
        capsys.readouterr().err
    )


def test_special_token_strings_in_a_document_are_text(tiny_teacher, tmp_path):
    from pdistill.inspect import read_samples
    from pipelines.cli import main
    from pipelines.packing import encode_texts, load_tokenizer

    tok = load_tokenizer(tiny_teacher)
    eos, bos = tok.eos_token_id, tok.bos_token_id  # <|endoftext|> (the separator) and <|im_start|>
    texts = [
        "A chat log: <|im_start|>user hello<|im_end|> done.",
        "Code prints '<|endoftext|>' here.",
        "<|endoftext|><|endoftext|>",
        "plain river text.",
    ]
    lake = tmp_path / "a.jsonl"
    lake.write_bytes(jsonl(texts))
    out = tmp_path / "ds"
    assert main(small_run_argv(lake, tiny_teacher, out, "--format", "jsonl", "--add-bos")) == 0
    samples, _ = read_samples(str(out), str(tmp_path / "cache"), 100)
    stream = [int(t) for s in samples for t in s["tokens"][: int(s["n_tokens"])]]
    # the only control ids are the pipeline's own: one BOS before and one separator after each document
    assert stream.count(bos) == len(texts) and stream.count(eos) == len(texts), stream
    expected = [i for ids in encode_texts(texts, tok) for i in [bos, *ids, eos]]
    assert stream == expected
    special = set(tok.all_special_ids)
    assert not special & {i for ids in encode_texts(texts, tok) for i in ids}


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--price-per-hour", "-2"], "--price-per-hour must be a finite number >= 0, got -2.0"),
        (["--price-per-hour", "nan"], "--price-per-hour"),
        (["--price-per-hour", "inf"], "--price-per-hour"),
        (["--tokens-per-second", "0"], "--tokens-per-second must be a finite number > 0"),
        (["--tokens-per-second", "-5"], "--tokens-per-second"),
        (["--gpu", "h100", "--mfu", "1.5"], "--mfu must be a finite number in (0, 1]"),
        (["--gpu", "h100", "--mfu", "nan"], "--mfu"),
        (["--sample-fraction", "nan"], "--sample-fraction"),
    ],
)
def test_plan_refuses_numbers_that_make_no_cost_or_time(tmp_path, capsys, flags, named):
    from pdistill.plan import main

    lake = tmp_path / "a.jsonl"
    lake.write_bytes(jsonl(make_texts(2)))
    assert (
        main(
            [
                "--input",
                str(lake),
                "--teacher",
                str(tmp_path / "no-teacher"),
                "--plan",
                str(tmp_path / "plan.json"),
                *flags,
            ]
        )
        == 2
    )
    assert named in one_line(capsys.readouterr().err)
    assert not (tmp_path / "plan.json").exists()


# -- item 7: credentials in messages ------------------------------------------------------------


@pytest.fixture(scope="module")
def train_lake(tmp_path_factory):
    """A word-level tokenizer, a small dataset and a train config using them (CPU, 2 batches)."""
    import yaml
    from make_dataset import make_tokenizer, tiny_llama_config, write_dataset

    root = tmp_path_factory.mktemp("train_lake")
    tok = make_tokenizer(str(root / "tok"))
    write_dataset(str(root / "ds"), tok, n_samples=8, units=1)
    raw = {
        "data": {
            "streams": [{"uri": str(root / "ds")}],
            "batch_size": 4,
            "num_canonical_nodes": 1,
            "local_cache": str(root / "cache"),
        },
        "model": {"hf_config": tiny_llama_config(), "tokenizer": str(root / "tok")},
        "distill": {"chunk_size": 16},
        "run": {"max_duration": "2ba", "device": "cpu", "loggers": []},
    }
    (root / "train.yaml").write_text(yaml.safe_dump(raw))
    return root


def _secret_cases():
    """(case id, argv of `pdistill` with {U} for `s3://AKIAKEY:TOPSECRET@<bucket>/data`)."""
    logits = ["logits", "--format", "jsonl", "--seq-len", "32", "--top-k", "8", "--no-progress"]
    train = ["train", "{cfg}"]
    return [
        ("logits --input", logits + ["--input", "{U}/a.jsonl", "--teacher", "{teacher}", "--output", "{tmp}/o"]),
        ("logits --output", logits + ["--input", "{lake}", "--teacher", "{teacher}", "--output", "{U}/out"]),
        ("logits --teacher", logits + ["--input", "{lake}", "--teacher", "{U}/teacher", "--output", "{tmp}/o"]),
        (
            "logits --tokenizer",
            logits + ["--input", "{lake}", "--teacher", "{teacher}", "--tokenizer", "{U}/tok", "--output", "{tmp}/o"],
        ),
        ("plan --input", ["plan", "--input", "{U}/a.jsonl", "--teacher", "{teacher}", "--plan", "{tmp}/p.json"]),
        ("plan --teacher", ["plan", "--input", "{lake}", "--teacher", "{U}/teacher", "--plan", "{tmp}/p.json"]),
        ("inspect", ["inspect", "{U}/ds"]),
        ("train data.streams.0.uri", train + ["data.streams.0.uri={U}/ds"]),
        ("train model.tokenizer", train + ["model.tokenizer={U}/tok"]),
        ("train model.checkpoint", train + ["model.checkpoint={U}/ck", "model.hf_config=null"]),
        ("train distill.teacher", train + ["distill.mode=live", "distill.teacher={U}/teacher"]),
        ("train run.save_folder", train + ["run.save_folder={U}/run"]),
    ]


@pytest.mark.parametrize("argv", [a for _, a in _secret_cases()], ids=[c for c, _ in _secret_cases()])
def test_uri_credentials_reach_no_message_or_log(tiny_teacher, train_lake, tmp_path, s3_bucket, capsys, caplog, argv):
    import logging

    from pdistill.cli import main

    caplog.set_level(logging.DEBUG)  # every record of every library (botocore logs its parameters)
    lake = tmp_path / "a.jsonl"
    lake.write_bytes(jsonl(make_texts(3)))
    bucket = s3_bucket.split("/")[2]
    fill = {
        "U": f"s3://AKIAKEY:{SECRET}@{bucket}/data",
        "teacher": tiny_teacher,
        "tmp": str(tmp_path),
        "lake": str(lake),
        "cfg": str(train_lake / "train.yaml"),
    }
    argv = [a.format(**fill) for a in argv]
    if any(a.startswith("run.save_folder=") for a in argv):
        # Composer's remote uploader spawns a manager that Beam (imported by the other cases in this
        # process) breaks: run this one as production does, in its own process (see test_trainer)
        done = subprocess.run(
            [sys.executable, "-m", "pdistill.cli", *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": REPO},
        )
        code, printed = done.returncode, done.stdout + done.stderr
    else:
        try:
            code = main(argv)
        except SystemExit as e:  # inspect exits with its refusal's message
            code = 2
            print(e.code, file=sys.stderr)
        out, err = capsys.readouterr()
        printed = out + err + caplog.text
    assert code != 0
    assert SECRET not in printed, [line for line in printed.splitlines() if SECRET in line]
    assert "AKIAKEY:***@" in printed


def test_inspect_masks_a_query_string_secret(tmp_path, capsys):
    from pdistill.inspect import main

    uri = f"file://{tmp_path}/ds?token=QSECRET&v=1"
    for extra in ([], ["--json"]):
        assert main([uri, *extra]) == 1
        out, err = capsys.readouterr()
        assert "QSECRET" not in out + err and "token=***&v=1" in out + err, out + err


def test_a_library_exception_logged_or_uncaught_names_no_secret(tmp_path):
    """The exception text of a library, logged with its traceback and then uncaught, in a fresh
    process as a command sees it."""
    code = (
        "import logging\n"
        "from schemas.redact import redact_process_output\n"
        "redact_process_output(['--input', 's3://AKIAKEY:LIBSECRET@bkt/x?token=QTOKEN1'])\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "log = logging.getLogger('botocore.test')\n"
        "log.info('params %s', {'Bucket': 'AKIAKEY:LIBSECRET@bkt'})\n"
        "try:\n"
        "    raise ValueError('Invalid bucket name \"AKIAKEY:LIBSECRET@bkt\" (QTOKEN1)')\n"
        "except ValueError:\n"
        "    log.exception('listing failed')\n"
        "raise RuntimeError('uncaught: AKIAKEY:LIBSECRET@bkt')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "LIBSECRET" not in done.stderr + done.stdout and "QTOKEN1" not in done.stderr + done.stdout, done.stderr
    assert done.stderr.count("AKIAKEY:***@bkt") == 3 and "RuntimeError" in done.stderr, done.stderr


def test_redact_text_masks_remembered_secrets_without_their_scheme():
    from schemas.redact import redact_text, remember_secrets

    remember_secrets(
        [
            "data.streams.0.uri=s3://KEYID:S3cr%2Fet99@bkt/ds",
            "--input",
            "https://host/a,https://XYZTOKEN7@host/b?sig=SIGVAL77&v=2",
            "gs://ab:xy@b/c",
        ]
    )
    text = redact_text(
        'Invalid bucket name "KEYID:S3cr/et99@bkt"; raw KEYID:S3cr%2Fet99@bkt; '
        "XYZTOKEN7@host; SIGVAL77; ab:xy@b and y=xy, but xylophone stays"
    )
    for secret in ("S3cr/et99", "S3cr%2Fet99", "XYZTOKEN7", "SIGVAL77", ":xy@", "=xy,"):
        assert secret not in text, text
    assert "KEYID:***@bkt" in text and "xylophone stays" in text


# -- item 9 (settings): one line naming the setting -----------------------------------------------


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA device")
@pytest.mark.parametrize("command", ["logits", "plan"])
def test_a_cuda_device_without_a_gpu_is_one_line(tiny_teacher, tmp_path, capsys, command):
    from pdistill.cli import main

    lake = tmp_path / "a.jsonl"
    lake.write_bytes(jsonl(make_texts(3)))
    out = tmp_path / "ds"
    target = ["--output", str(out)] if command == "logits" else ["--plan", str(tmp_path / "p.json")]
    for device in ("cuda", "cuda:1"):
        assert (
            main(
                [
                    command,
                    "--input",
                    str(lake),
                    "--teacher",
                    tiny_teacher,
                    "--format",
                    "jsonl",
                    "--seq-len",
                    "32",
                    "--no-progress",
                    "--device",
                    device,
                    *target,
                ]
            )
            == 2
        )
        err = one_line(capsys.readouterr().err)
        assert f"setting 'device' is '{device}' but torch sees no CUDA device" in err
    assert not out.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA device")
def test_train_on_a_gpu_without_one_is_one_line(train_lake, capsys):
    from pdistill.cli import main

    assert main(["train", str(train_lake / "train.yaml"), "run.device=gpu"]) == 2
    assert "run.device: gpu asked for, but torch sees no CUDA device" in one_line(capsys.readouterr().err)


def test_an_alpha_override_without_an_alpha_section_names_the_range(train_lake):
    from trainer.config import ConfigError, load_config
    from trainer.schedules import WSDAlpha

    cfg = str(train_lake / "train.yaml")
    with pytest.raises(ConfigError, match=r"^distill\.alpha\.peak: must be <= 1\.0, got 1\.5$"):
        load_config(cfg, ["distill.alpha.peak=1.5"])
    # a section without a name is the default schedule (WSD) with that change
    assert load_config(cfg, ["distill.alpha.peak=0.5"]).distill.alpha == WSDAlpha(peak=0.5)
