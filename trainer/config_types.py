"""The field types every config section uses: YAML's types as given (no "1" for 1, no 1 for true),
ints taken where floats are, Composer time strings checked by unit, and the frozen `Section` base
that refuses unknown keys (`trainer.config` builds the sections from them)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

_TIME_RE = re.compile(r"^\d+(\.\d+)?(ep|ba|sp|tok|dur)$")
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml11_float(value):
    """YAML 1.1 reads "2e-3" (no dot) as a string; a float setting takes it as the number meant."""
    return float(value) if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()) else value


def _time(units: tuple[str, ...], positive: bool = False):
    """A Composer time string in `units`; `positive`: zero is refused (a run of 0 batches, an
    interval of 0, which Composer rejects only when fit() starts)."""

    def check(value: str) -> str:
        m = _TIME_RE.match(value)
        if not m or m.group(2) not in units:
            raise ValueError(f"expected a Composer time string like '100ba' or '0.1dur' (units {', '.join(units)})")
        amount = float(value[: -len(m.group(2))])
        if m.group(2) == "dur" and amount > 1.0:
            raise ValueError("a 'dur' fraction must be <= 1")
        if positive and amount <= 0:
            raise ValueError("must be more than 0")
        return value

    return AfterValidator(check)


Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
Str = Annotated[str, Field(strict=True)]
Float = Annotated[float, BeforeValidator(_yaml11_float), Field(strict=True, allow_inf_nan=False)]
Time = Annotated[str, Field(strict=True), _time(("ep", "ba", "sp", "tok", "dur"), positive=True)]  # an interval
Span = Annotated[str, Field(strict=True), _time(("ba", "sp", "tok", "dur"))]  # a schedule's part (0: none)
Duration = Annotated[
    str, Field(strict=True), _time(("ep", "ba", "sp", "tok"), positive=True)
]  # no 'dur': it is the unit


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
