"""bench.runs_log: a seeded bench's run list resumes where it stopped, and a report never replaces
an earlier one with nothing."""

import json

import pytest

from bench.runs_log import run_all

RUNS = [dict(name="a", seed=1), dict(name="b", seed=1), dict(name="a", seed=2)]


def _id(r):
    return f"{r['name']}-{r['seed']}"


def test_a_stopped_run_list_continues_without_retraining(tmp_path):
    done = tmp_path / "runs.jsonl"
    trained = []

    def train(r):
        trained.append(_id(r))
        if len(trained) == 2:
            raise KeyboardInterrupt  # stopped mid-list: the first run is recorded, the second is not
        return dict(id=_id(r), loss=len(trained))

    with pytest.raises(KeyboardInterrupt):
        run_all(RUNS, done, _id, train, str, tag="t")
    assert [json.loads(x)["id"] for x in done.read_text().splitlines()] == ["a-1"]

    trained.clear()
    out = run_all(RUNS, done, _id, lambda r: dict(id=_id(r), loss=9), str, tag="t")
    assert [r["id"] for r in out] == ["a-1", "b-1", "a-2"]
    assert out[0]["loss"] == 1  # reused, not retrained
    assert trained == []


def test_report_only_trains_nothing_and_refuses_an_empty_report(tmp_path, capsys):
    done = tmp_path / "runs.jsonl"
    with pytest.raises(SystemExit, match="no finished runs in .*runs.jsonl"):
        run_all(RUNS, done, _id, lambda r: pytest.fail("trained"), str, tag="t", report_only=True)
    capsys.readouterr()
    done.write_text(json.dumps(dict(id="b-1", loss=3)) + "\n")
    out = run_all(RUNS, done, _id, lambda r: pytest.fail("trained"), str, tag="t", report_only=True)
    assert [r["id"] for r in out] == ["b-1"]
    assert capsys.readouterr().out.count(": not run") == 2
