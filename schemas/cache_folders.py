"""The trainer's local dataset caches, found again and pruned (`pdistill cache`).

Each dataset a run streams is cached in `<cache>/<key>` (`DatasetDir.cache_key`: its location and
its content), so a dataset replaced at the same URI is fetched into a new folder and the old one
stays behind, a whole copy of shards nobody will read again. The trainer leaves a marker in each
folder it streams through (`mark`): the dataset's location (redacted), its content identity and
when a run last used it. `pdistill cache` lists those folders and removes, per location, the ones
a newer copy replaced (`stale`) or that no run used for N days.

The marker is read back from disk, so it is input: a folder counts only when its name is a cache
key (16 hex digits), it is a real directory (not a symlink) inside the folder the command was
given, and its marker parses with the expected fields. Anything else is reported and left alone:
the command never removes outside the folder it was given, nor a folder it did not make.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass

from schemas import storage
from schemas.redact import redact_uri

MARKER = ".pdistill-cache.json"
_KEY = re.compile(r"[0-9a-f]{16}")
_DEPTH = 3  # levels below the root a cache folder may sit: <root>/<run>/{train,eval}/<key> (the default root)


@dataclass(frozen=True)
class CacheFolder:
    path: str
    remote: str  # the dataset's location, redacted
    identity: str
    used: float  # seconds since the epoch, last run that streamed through it
    size: int  # bytes below it


def mark(local: str, remote: str, identity: str, now: float | None = None) -> None:
    """Record in a stream's cache folder which dataset it holds and that a run uses it now
    (written whole, `storage.write_text_atomic`: a reader never sees half of it)."""
    os.makedirs(local, exist_ok=True)
    body = {"remote": redact_uri(remote), "identity": identity, "used": time.time() if now is None else now}
    storage.write_text_atomic(os.path.join(local, MARKER), json.dumps(body))


def _size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _read_marker(folder: str) -> CacheFolder | str:
    """The folder's marker, or why it is not one of ours."""
    path = os.path.join(folder, MARKER)
    try:
        body = json.loads(open(path).read())
    except (OSError, ValueError) as e:
        return f"unreadable marker ({type(e).__name__})"
    if not (
        isinstance(body, dict)
        and isinstance(body.get("remote"), str)
        and isinstance(body.get("identity"), str)
        and isinstance(body.get("used"), (int, float))
        and not isinstance(body.get("used"), bool)
    ):
        return "marker without remote, identity and used"
    return CacheFolder(folder, body["remote"], body["identity"], float(body["used"]), _size(folder))


def scan(root: str) -> tuple[list[CacheFolder], list[tuple[str, str]]]:
    """The cache folders below ``root`` (up to three levels down, symlinks never followed), and the
    places that hold a marker but are not counted, with the reason."""
    root = os.path.realpath(root)
    found, skipped = [], []
    for dirpath, dirnames, files in os.walk(root, followlinks=False):
        depth = dirpath[len(root) :].count(os.sep)
        if MARKER in files and dirpath != root:
            name = os.path.basename(dirpath)
            if not _KEY.fullmatch(name):
                skipped.append((dirpath, "not a cache key folder name"))
            elif os.path.islink(dirpath) or os.path.realpath(dirpath) != dirpath:
                skipped.append((dirpath, "reached through a symlink"))
            else:
                got = _read_marker(dirpath)
                (found.append(got) if isinstance(got, CacheFolder) else skipped.append((dirpath, got)))
            dirnames[:] = []  # a cache folder's insides are streaming's
            continue
        if depth >= _DEPTH:
            dirnames[:] = []
    return sorted(found, key=lambda c: (c.remote, -c.used, c.path)), skipped


def stale(
    folders: list[CacheFolder], older_than_days: float | None = None, now: float | None = None
) -> list[CacheFolder]:
    """What to remove: for each dataset location and parent cache, every folder but the one used
    last (an older copy of a dataset since replaced there); with ``older_than_days``, also any
    folder no run used for that long."""
    now = time.time() if now is None else now
    newest: dict[tuple[str, str], CacheFolder] = {}
    for c in folders:
        k = (os.path.dirname(c.path), c.remote)
        if k not in newest or c.used > newest[k].used:
            newest[k] = c
    out = []
    for c in folders:
        replaced = newest[(os.path.dirname(c.path), c.remote)] is not c
        unused = older_than_days is not None and now - c.used > older_than_days * 86400
        if replaced or unused:
            out.append(c)
    return out


def remove(root: str, folder: CacheFolder) -> None:
    """Delete one cache folder found by `scan` under ``root``, checked again just before."""
    root = os.path.realpath(root)
    path = folder.path
    if os.path.islink(path) or os.path.realpath(path) != path or os.path.commonpath([root, path]) != root:
        raise ValueError(f"{path}: not a cache folder inside {root}; left alone")
    if path == root:
        raise ValueError(f"{path}: the cache root itself; left alone")
    shutil.rmtree(path)
