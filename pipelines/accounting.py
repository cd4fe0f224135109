"""Per-source accounting for the manifest: what was read from each input file, and whether whole.

Each unit's `stats.json` carries its counts, the index of its file in the planned source list
(`source`) and the reasons its file was not read to its end (`incomplete`). Summed per file, they
give every manifest source its documents = packed + dead letters, and `complete: false` with the
first reason for a file that was truncated, corrupt or unreadable; `incomplete_files` counts
those files. A file split into several units is incomplete when any of its units is.
"""

from __future__ import annotations

import dataclasses

from schemas.manifest import Source

PER_SOURCE = ("documents", "packed_documents", "dead_letters")


def unit_source(stats: dict) -> int:
    """The source index of a unit's stats; parts written before it was recorded: from the unit's
    name, `u<file>-<part>` (plan_units)."""
    if "source" in stats:
        return int(stats["source"])
    return int(str(stats["unit"])[1:].split("-", 1)[0])


def account_sources(sources: list[Source], unit_stats: list[dict]) -> tuple[list[Source], int]:
    """(sources with their counts and completeness, number of incomplete files)."""
    counts = [dict.fromkeys(PER_SOURCE, 0) for _ in sources]
    problems: list[list[str]] = [[] for _ in sources]
    for stats in unit_stats:
        i = unit_source(stats)
        if not 0 <= i < len(counts):
            raise RuntimeError(
                f"unit {stats.get('unit')}: source index {i} is outside the {len(counts)} planned sources"
            )
        for k in PER_SOURCE:
            counts[i][k] += int(stats[k])
        problems[i] += list(stats.get("incomplete") or [])
    out = []
    for s, c, p in zip(sources, counts, problems):
        if c["documents"] != c["packed_documents"] + c["dead_letters"]:
            raise RuntimeError(
                f"source {s.uri}: counts do not reconcile ({c['documents']} documents, "
                f"{c['packed_documents']} packed, {c['dead_letters']} dead letters)"
            )
        problem = p[0] + (f" (and {len(p) - 1} more problems)" if len(p) > 1 else "") if p else ""
        out.append(dataclasses.replace(s, **c, complete=not p, problem=problem))
    return out, sum(not s.complete for s in out)
