"""JSON that every parser reads: what pdistill prints or writes for people and their tools.

Python's `json` writes `Infinity` and `NaN`, which are not JSON: jq, JavaScript's `JSON.parse`,
Go and most other parsers refuse the whole document. A report value can be non-finite for honest
reasons (the KL bound of a dataset written before the codec guarantee is unbounded; a rate over
zero seconds), so such values are written as null and the text says what null means.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """`value` with every inf / nan float (in dicts, lists and tuples, at any depth) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def dumps(value: Any, **kwargs) -> str:
    """`json.dumps` of `finite_or_none(value)`, refusing (never writing) a non-finite number."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
