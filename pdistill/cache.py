"""`pdistill cache list|prune CACHE`: the trainer's local dataset caches, and removing the ones
left behind (`schemas.cache_folders`).

A run streams each dataset through `<cache>/<key of its location and content>`; a dataset replaced
at the same URI gets a new folder and the old copy stays. `prune` removes, per location, every
copy but the one used last, and with `--older-than DAYS` any copy no run used for that long.
Do not prune a cache a running job streams from.
"""

from __future__ import annotations

import argparse
import os
import time

from schemas.cache_folders import remove, scan, stale


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pdistill cache", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("list", "prune"))
    ap.add_argument("cache", help="the cache folder: data.local_cache, a stream's local, or the default a run printed")
    ap.add_argument(
        "--older-than", type=float, default=None, metavar="DAYS", help="prune: also copies unused that long"
    )
    ap.add_argument("--dry-run", action="store_true", help="prune: say what would go, remove nothing")
    args = ap.parse_args(argv)
    if args.older_than is not None and not args.older_than >= 0:
        raise SystemExit(f"pdistill cache: --older-than: {args.older_than} is not a number of days >= 0")
    if not os.path.isdir(args.cache):
        raise SystemExit(f"pdistill cache: {args.cache}: no such folder")
    folders, skipped = scan(args.cache)
    for path, why in skipped:
        print(f"left alone: {path} ({why})")
    if args.action == "list":
        for c in folders:
            print(f"{c.path}  {_human(c.size):>10}  used {_when(c.used)}  {c.remote}  {c.identity[:12]}")
        print(f"{len(folders)} cache folders, {_human(sum(c.size for c in folders))}")
        return 0
    doomed = stale(folders, args.older_than)
    for c in doomed:
        print(
            f"{'would remove' if args.dry_run else 'removing'} {c.path} ({_human(c.size)}, {c.remote}, used {_when(c.used)})"
        )
        if not args.dry_run:
            remove(args.cache, c)
    verb = "would free" if args.dry_run else "freed"
    print(f"{len(doomed)} of {len(folders)} cache folders, {verb} {_human(sum(c.size for c in doomed))}")
    return 0
