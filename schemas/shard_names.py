"""Shard file names an MDS index may hold, checked before anything is read or written by them.

An index's basenames are joined to the dataset's root (to read a shard) and to a cache folder (to
write it: streaming fetches and decompresses `<cache>/<basename>`), so a name with `..`, an
absolute path or a backslash would read or write anywhere the process may. pdistill's layout
(`schemas.dataset_dir`) allows exactly:

    index.json                  parts/<unit>/<file>     (the root index)
    parts/<unit>/index.json     <file>                  (a part's index)

where <unit> and <file> are plain names: not empty, not `.` or `..`, without `/`, `\\` or NUL.
Every `raw_data` and `zip_data` entry is checked: a zstd shard is stored as its zip file but
decompressed to its raw name.

Imports the standard library only.
"""

from __future__ import annotations

from schemas.errors import CorruptDataset

FILE_KEYS = ("raw_data", "zip_data")


def plain_name(name: object) -> bool:
    """A single path component that stays where it is joined."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\x00")


def fits(name: object, parts_dir: str | None) -> bool:
    """`name` is `<parts_dir>/<unit>/<file>` (a root index) or, with `parts_dir` None, `<file>` (a part's)."""
    if parts_dir is None:
        return plain_name(name)
    if not isinstance(name, str):
        return False
    top, *rest = name.split("/")
    return top == parts_dir and len(rest) == 2 and all(plain_name(p) for p in rest)


def name_problems(index: dict, parts_dir: str | None) -> list[str]:
    """What is wrong with the index's shard file names, one line each ([] when all fit the layout)."""
    layout = f"{parts_dir}/<unit>/<file>" if parts_dir else "a plain file name"
    problems = []
    shards = index.get("shards") if isinstance(index, dict) else None
    for i, shard in enumerate(shards if isinstance(shards, list) else []):
        for key in FILE_KEYS:
            entry = shard.get(key) if isinstance(shard, dict) else None
            if not entry:
                continue
            name = entry.get("basename") if isinstance(entry, dict) else entry
            if not fits(name, parts_dir):
                problems.append(
                    f"shard {i} names {name!r} ({key}), not {layout}: refused, nothing is read or written by that name"
                )
    return problems


def check_names(index: dict, parts_dir: str | None, where: str) -> None:
    """Raise CorruptDataset naming `where` (the index file) and the first bad name, if any."""
    problems = name_problems(index, parts_dir)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CorruptDataset(f"{where}: {problems[0]}{more}")
