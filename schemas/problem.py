"""`Problem`: one finding about a stored dataset, naming the file and what is wrong with it.

Its own module because both the checks of a whole dataset (`schemas.integrity`) and those of its
dead-letter records (`schemas.dead_letters`, which `schemas.integrity` uses) report in it.

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str  # relative to the dataset root ("." for the dataset as a whole)
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}"
