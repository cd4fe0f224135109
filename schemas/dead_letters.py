"""Do the counts a dataset reports match the dead-letter records it stores?

Every document read is packed or stands in a record of `dead_letter/<unit>.jsonl` (one JSON
object per line; `documents`: how many documents it stands for). A part's `stats.json` counts
what its unit sent there: `dead_letters` (the records' documents), `unscored_sequences` (records
of kind `teacher_unscored`, which stand for 0 documents) and `incomplete` (one reason per record
of a file not read to its end); the manifest's counts are the sums over the parts. A count with no
records behind it (a deleted dead_letter/ folder, a truncated file) claims documents the dataset
cannot show; records no count stands for are documents the manifest does not count. Either way
the dataset does not reconcile, and `Problem`s name the file and both numbers:
`schemas.integrity.verify` reports them (`pdistill inspect`), and the pipeline's re-publish
(`pipelines.sink.finalize`) refuses to write a manifest over them.

Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from schemas.problem import Problem

UNSCORED_KIND = "teacher_unscored"


@dataclass(frozen=True)
class Tally:
    """What dead-letter records stand for, in the terms of a part's stats.json."""

    documents: int = 0  # sum of the records' `documents`: stats' and the manifest's dead_letters
    unscored: int = 0  # records of kind teacher_unscored: unscored_sequences
    incomplete: int = 0  # other records of a file not read to its end: len(stats' incomplete)

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.documents + other.documents, self.unscored + other.unscored, self.incomplete + other.incomplete
        )

    @staticmethod
    def of_stats(stats: dict) -> Tally:
        """What a part's stats.json says its unit's records stand for."""
        return Tally(
            int(stats.get("dead_letters") or 0),
            int(stats.get("unscored_sequences") or 0),
            len(stats.get("incomplete") or []),
        )


def tally(data: bytes, where: str) -> tuple[Tally, list[Problem]]:
    """Read one dead-letter file (`where`: its name for messages): what its records stand for, and
    a problem per line that is not a record."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Tally(), [Problem(where, f"not UTF-8 text ({e})")]
    total, problems = Tally(), []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(where, f"line {n}: not valid JSON ({e})"))
            continue
        documents = record.get("documents") if isinstance(record, dict) else None
        if not isinstance(documents, int) or isinstance(documents, bool) or documents < 0:
            problems.append(
                Problem(where, f"line {n}: not a dead-letter record (a JSON object whose `documents` is a count >= 0)")
            )
            continue
        unscored = record.get("kind") == UNSCORED_KIND
        total += Tally(documents, int(unscored), int(bool(record.get("incomplete")) and not unscored))
    return total, problems


def against_stats(found: Tally | None, stats: dict, where: str, stats_where: str) -> list[Problem]:
    """A unit's records (`found`; None: its dead-letter file is absent) against its stats.json."""
    want = Tally.of_stats(stats)
    if found is None:
        if want == Tally():
            return []
        return [Problem(where, f"missing: {stats_where} counts {_describe(want)} there")]
    if found.incomplete != want.incomplete and "incomplete" not in stats:  # stats written before it was recorded
        found = Tally(found.documents, found.unscored, want.incomplete)
    if found == want:
        return []
    return [Problem(where, f"its records stand for {_describe(found)}, {stats_where} counts {_describe(want)}")]


def against_manifest(found: Tally, counts, where: str, manifest_where: str) -> list[Problem]:
    """All records of a dataset against its manifest's `counts` (dead letters, unscored sequences)."""
    problems = []
    if found.documents != counts.dead_letters:
        problems.append(
            Problem(
                where,
                f"records stand for {found.documents} dead-lettered documents, {manifest_where} "
                f"counts {counts.dead_letters}",
            )
        )
    if found.unscored != counts.unscored_sequences:
        problems.append(
            Problem(
                where,
                f"holds {found.unscored} {UNSCORED_KIND} records, {manifest_where} counts "
                f"{counts.unscored_sequences} unscored sequences",
            )
        )
    return problems


def _describe(t: Tally) -> str:
    parts = [f"{t.documents} dead-lettered documents"]
    if t.unscored:
        parts.append(f"{t.unscored} unscored sequences")
    if t.incomplete:
        parts.append(f"{t.incomplete} files not read to their end")
    return ", ".join(parts)
