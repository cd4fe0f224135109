"""Re-runs that meet a damaged output (issue 26, items 2 and 3, and the re-publish tracebacks of 9).

- A finished run's re-run verifies what it reports complete (sizes of every shard, every part's
  commit marker and stats.json, the manifest, the root index, the codec prime against the SHA-256
  the manifest names) before it says "nothing to do"; damage is one line naming the file, exit 2.
- `pdistill inspect` reconciles the manifest's and each part's counts with the dead-letter records
  on storage, and requires the stats.json of a part the pipeline wrote.
- A re-publish (a resumed run whose parts are all there) refuses, in one line, a part without its
  stats.json or whose dead letters are gone, rather than invent counts; the PartMismatch refusal
  is one line too, without Beam's traceback logged above it.
- An unfinished output whose `_settings.json` is not a settings record is one line, not a traceback.

Real DirectRunner, real pipeline outputs; damage done with plain file operations."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("apache_beam")
pytest.importorskip("streaming")

from fixtures_models import make_texts  # noqa: E402
from test_hostile_inputs import assert_reconciles, small_run_argv  # noqa: E402
from test_hostile_inputs import config as hostile_config
from test_pipeline_e2e import digest, lake  # noqa: F401,E402  (the e2e lake fixture)
from test_pipeline_prime import primed  # noqa: F401,E402  (a finished compact5 run over the e2e lake)

from pipelines.job import OutputError, run  # noqa: E402
from pipelines.output import PartMismatch  # noqa: E402
from schemas import DatasetDir  # noqa: E402
from schemas.codec_compact5 import Prime  # noqa: E402
from schemas.dataset_dir import PRIME_NAME, SETTINGS_NAME  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def logits_argv(lake, out, teacher, *extra) -> list[str]:  # noqa: F811
    """`pdistill logits` flags for test_pipeline_e2e.config's settings (the `primed` run's, with `extra`)."""
    return [
        "--input",
        os.path.join(lake, "*"),
        "--teacher",
        teacher,
        "--output",
        str(out),
        "--seq-len",
        "32",
        "--top-p",
        "0.9",
        "--top-k",
        "16",
        "--batch-size",
        "4",
        "--bytes-per-unit",
        "1500",
        "--rows-per-unit",
        "8",
        "--no-progress",
        *extra,
    ]


COMPACT5 = ("--codec", "compact5", "--codec-params", json.dumps({"prime_tokens": 100}))


def one_line(err: str, *needles: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("pdistill logits: error: ") and all(n in err for n in needles), err


def _flip_byte(path) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))


def _other_prime(path) -> None:
    """A valid prime, but not the one the parts were coded against (its first position dropped)."""
    p = Prime.from_bytes(open(path, "rb").read())
    open(path, "wb").write(Prime(p.tokens[1:], p.counts[1:], p.ids[int(p.counts[0]) :]).to_bytes())


# ------------------------------------------------------------------------------------------------
# item 2: a finished run's re-run verifies what it vouches for


def test_an_intact_finished_run_is_still_nothing_to_do(primed, lake, tiny_teacher, tmp_path, capsys):  # noqa: F811
    from pipelines.cli import main

    out = tmp_path / "ds"
    shutil.copytree(primed["out"], out)
    assert main(logits_argv(lake, out, tiny_teacher, *COMPACT5)) == 0
    assert "already complete with these settings; nothing to do" in capsys.readouterr().out
    assert digest(out) == primed["digest"]


@pytest.mark.parametrize(
    "damage, problem",
    [
        (os.remove, f"{PRIME_NAME}: missing"),
        (lambda p: os.truncate(p, os.path.getsize(p) // 2), f"{PRIME_NAME}: "),
        (_flip_byte, f"{PRIME_NAME}: "),
        (_other_prime, f"{PRIME_NAME}: SHA-256 "),
    ],
    ids=["deleted", "truncated", "bit-flip", "replaced"],
)
def test_a_rerun_of_a_finished_run_refuses_a_damaged_prime(
    primed,
    lake,
    tiny_teacher,
    tmp_path,
    capsys,  # noqa: F811
    damage,
    problem,
):
    from pipelines.cli import main

    out = tmp_path / "ds"
    shutil.copytree(primed["out"], out)
    damage(out / PRIME_NAME)
    before = digest(out)
    assert main(logits_argv(lake, out, tiny_teacher, *COMPACT5)) == 2
    cap = capsys.readouterr()
    assert "nothing to do" not in cap.out
    one_line(cap.err, f"output {out} holds a finished dataset that is damaged: {problem}", "new output")
    assert digest(out) == before  # refused, nothing written or removed


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda d, u: os.truncate(d / "parts" / u / "shard.00000.mds.zstd", 10), "shard.00000.mds.zstd: size 10 bytes"),
        (lambda d, u: os.remove(d / "parts" / u / "stats.json"), "stats.json: missing"),
        (lambda d, u: os.remove(d / "parts" / u / "index.json"), "index.json: missing"),
        (lambda d, u: (d / "index.json").write_text("{"), "index.json: not valid JSON"),
    ],
    ids=["truncated-shard", "deleted-stats", "deleted-part-index", "bad-root-index"],
)
def test_a_rerun_of_a_finished_run_checks_the_files_it_reports_complete(
    primed,
    lake,
    tiny_teacher,
    tmp_path,  # noqa: F811
    capsys,
    damage,
    problem,
):
    from pipelines.cli import main

    out = tmp_path / "ds"
    shutil.copytree(primed["out"], out)
    unit = sorted(DatasetDir(str(out)).finished_units())[-1]
    damage(out, unit)
    assert main(logits_argv(lake, out, tiny_teacher, *COMPACT5)) == 2
    one_line(capsys.readouterr().err, "holds a finished dataset that is damaged: ", problem)


# ------------------------------------------------------------------------------------------------
# item 3: counts on storage reconcile with the records, or inspect says which do not

POISON = [{"text": None}, {"text": 5}, {"body": "no text column"}]


@pytest.fixture(scope="module")
def lettered(tiny_teacher, tmp_path_factory):
    """A finished run over two files, with dead letters in both units: 1 in a.jsonl's, 2 in b.jsonl's."""
    root = tmp_path_factory.mktemp("lettered")
    texts = make_texts(9, seed=7)
    (root / "lake").mkdir()
    for name, rows in (
        ("a.jsonl", [{"text": t} for t in texts[:3]] + POISON[:1] + [{"text": texts[3]}]),
        ("b.jsonl", [{"text": t} for t in texts[4:6]] + POISON[1:] + [{"text": t} for t in texts[6:]]),
    ):
        (root / "lake" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, lake = root / "ds", str(root / "lake" / "*.jsonl")
    run(hostile_config([lake], out, tiny_teacher))
    m, dead = assert_reconciles(str(out))
    assert m.counts.dead_letters == 3 and sorted(os.listdir(out / "dead_letter")) == [
        "u00000-00000.jsonl",
        "u00001-00000.jsonl",
    ]
    return {"out": out, "lake": lake, "digest": digest(out)}


def inspect_json(capsys, uri, *args) -> tuple[int, dict]:
    from pdistill import inspect

    rc = inspect.main([str(uri), "--json", *args])
    return rc, json.loads(capsys.readouterr().out)


def _letter_units(out) -> list[str]:
    return sorted(f[: -len(".jsonl")] for f in os.listdir(out / "dead_letter"))


def _rewrite_letters(path, edit) -> None:
    records = [json.loads(line) for line in open(path)]
    open(path, "w").write("".join(json.dumps(r) + "\n" for r in edit(records)))


def _more_documents(records):
    return [{**records[0], "documents": records[0]["documents"] + 1}] + records[1:]


@pytest.mark.parametrize(
    "damage, problems",
    [
        (lambda d, u: os.remove(d / "parts" / u / "stats.json"), ["parts/{u}/stats.json: missing"]),
        (
            lambda d, u: shutil.rmtree(d / "dead_letter"),
            [
                "dead_letter/{u}.jsonl: missing",
                "dead_letter: records stand for 0 dead-lettered documents, manifest.json counts 3",
            ],
        ),
        (lambda d, u: os.remove(d / "dead_letter" / f"{u}.jsonl"), ["dead_letter/{u}.jsonl: missing"]),
        (
            lambda d, u: open(d / "dead_letter" / f"{u}.jsonl", "a").write('{"file": "a.jsonl", "documents": \n'),
            ["dead_letter/{u}.jsonl: line 2: not valid JSON"],
        ),
        (
            lambda d, u: open(d / "dead_letter" / f"{u}.jsonl", "a").write("[1, 2]\n"),
            ["dead_letter/{u}.jsonl: line 2: not a dead-letter record"],
        ),
        (
            lambda d, u: _rewrite_letters(d / "dead_letter" / f"{u}.jsonl", _more_documents),
            ["dead_letter/{u}.jsonl: its records stand for 2 dead-lettered documents, parts/{u}/stats.json counts 1"],
        ),
    ],
    ids=[
        "deleted-stats",
        "deleted-dead-letter-folder",
        "deleted-dead-letter-file",
        "corrupt-record",
        "not-a-record",
        "records-disagree-with-stats",
    ],
)
def test_inspect_reconciles_counts_with_the_records_on_storage(lettered, tmp_path, capsys, damage, problems):
    rc, report = inspect_json(capsys, lettered["out"])
    assert rc == 0 and report["verdict"] == "whole", report["problems"]
    bad = tmp_path / "bad"
    shutil.copytree(lettered["out"], bad)
    unit = _letter_units(bad)[0]
    damage(bad, unit)
    rc, report = inspect_json(capsys, bad)
    assert rc == 1 and report["verdict"] == "NOT WHOLE"
    for want in problems:
        assert any(p.startswith(want.format(u=unit)) for p in report["problems"]), report["problems"]


def test_inspect_skip_hash_still_sees_missing_stats_and_dead_letters(lettered, tmp_path, capsys):
    """Without hashes inspect reads no part file, but the listing shows a missing stats.json or an
    empty dead_letter/ where the manifest counts dead letters."""
    bad = tmp_path / "bad"
    shutil.copytree(lettered["out"], bad)
    shutil.rmtree(bad / "dead_letter")
    os.remove(bad / "parts" / _letter_units(lettered["out"])[0] / "stats.json")
    rc, report = inspect_json(capsys, bad, "--skip-hash")
    assert rc == 1
    assert any(p.startswith("parts/") and "stats.json: missing" in p for p in report["problems"]), report["problems"]
    assert any(p.startswith("dead_letter: ") and "manifest.json counts 3" in p for p in report["problems"]), report[
        "problems"
    ]


def test_a_republish_without_dead_letters_refuses_instead_of_inventing_counts(lettered, tiny_teacher, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "ds"
    shutil.copytree(lettered["out"], out)
    os.remove(out / "manifest.json")  # a re-publish: every part is there, the manifest is not
    shutil.rmtree(out / "dead_letter")
    with pytest.raises(OutputError, match=r"dead_letter/.*\.jsonl.*missing"):
        run(hostile_config([lettered["lake"]], out, tiny_teacher))
    assert not (out / "manifest.json").exists()
    argv = small_run_argv(
        lettered["lake"], tiny_teacher, str(out), "--top-p", "0.9", "--batch-size", "4", "--rows-per-unit", "4"
    )
    assert main(argv) == 2
    one_line(capsys.readouterr().err, "dead_letter/", "missing")
    assert not (out / "manifest.json").exists()


def test_a_republish_with_a_part_without_its_stats_is_one_line(lettered, tiny_teacher, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "ds"
    shutil.copytree(lettered["out"], out)
    os.remove(out / "manifest.json")
    unit = _letter_units(out)[0]
    os.remove(out / "parts" / unit / "stats.json")
    argv = small_run_argv(
        lettered["lake"], tiny_teacher, str(out), "--top-p", "0.9", "--batch-size", "4", "--rows-per-unit", "4"
    )
    assert main(argv) == 2
    one_line(capsys.readouterr().err, f"parts/{unit}", "stats.json", "missing", "delete that part folder")
    assert not (out / "manifest.json").exists()


def test_a_republish_with_intact_parts_still_publishes(lettered, tiny_teacher, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(lettered["out"], out)
    os.remove(out / "manifest.json")
    report = run(hostile_config([lettered["lake"]], out, tiny_teacher))
    assert report.computed_units == 0 and digest(out) == lettered["digest"]


@pytest.mark.slow
def test_part_mismatch_is_one_line_without_beams_traceback(primed, lake, tiny_teacher, tmp_path):  # noqa: F811
    """The real command in its own process (as a user runs it, with its own logging set-up): a
    part coded against another prime is refused in one line, and Beam logs no traceback above it."""
    out = tmp_path / "ds"
    shutil.copytree(primed["out"], out)
    os.remove(out / "manifest.json")
    units = sorted(DatasetDir(str(out)).finished_units())
    shutil.rmtree(out / "parts" / units[-1])
    _other_prime(out / PRIME_NAME)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [REPO, os.environ.get("PYTHONPATH", "")] if p)}
    res = subprocess.run(
        [sys.executable, "-m", "pdistill.cli", "logits", *logits_argv(lake, out, tiny_teacher, *COMPACT5)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("pdistill logits: error: part "), res.stderr
    assert "coded against codec prime" in errors[0] and "delete that part folder" in errors[0]
    assert not (out / "manifest.json").exists()
    with pytest.raises(PartMismatch):  # the in-process API still raises the type
        run(
            __import__("test_pipeline_e2e").config(
                lake, out, teacher=tiny_teacher, codec="compact5", codec_params={"prime_tokens": 100}
            )
        )


# ------------------------------------------------------------------------------------------------
# item 9: an unfinished output whose claim is not a settings record


@pytest.mark.parametrize(
    "body",
    [b"", b'{"settings_fingerprint": ', b"[1, 2]", b"\xff\xfe"],
    ids=["empty", "corrupt", "not-an-object", "not-utf8"],
)
def test_a_damaged_settings_record_is_one_line(lettered, tiny_teacher, tmp_path, capsys, body):
    from pipelines.cli import main

    out = tmp_path / "ds"
    out.mkdir()
    (out / SETTINGS_NAME).write_bytes(body)
    argv = small_run_argv(lettered["lake"], tiny_teacher, str(out))
    assert main(argv) == 2
    one_line(capsys.readouterr().err, f"output {out}", SETTINGS_NAME, "choose a new (empty) output")
    assert os.listdir(out) == [SETTINGS_NAME] and (out / SETTINGS_NAME).read_bytes() == body
