"""What pdistill prints or writes as JSON parses under a strict parser (jq, JSON.parse): no
Infinity, no NaN, at any depth."""

import json
import math

import pytest

from schemas import strict_json


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_at_any_depth():
    report = {
        "kl_bound": math.inf,
        "rate": -math.inf,
        "rows": [1.5, math.nan, {"x": (math.inf, 2)}],
        "n": 3,
        "ok": True,
        "name": "inf",
    }
    text = strict_json.dumps(report, sort_keys=True)
    assert strict_loads(text) == {
        "kl_bound": None,
        "rate": None,
        "rows": [1.5, None, {"x": [None, 2]}],
        "n": 3,
        "ok": True,
        "name": "inf",
    }
    with pytest.raises(ValueError, match="Infinity"):  # what plain json.dumps wrote before
        strict_loads(json.dumps(report))


def test_every_user_facing_json_writer_goes_through_strict_json():
    """The logits report (--json, --report-json), plan.json and plan --json, inspect --json and the
    demo's report.json: none may call json.dumps directly."""
    import inspect as pyinspect

    from pdistill import inspect as pd_inspect
    from pdistill import plan
    from pdistill.demo import report as demo_report
    from pipelines import cli

    for module in (cli, plan, pd_inspect, demo_report):
        src = pyinspect.getsource(module)
        assert "json.dumps(" not in src.replace("strict_json.dumps(", ""), module.__name__
