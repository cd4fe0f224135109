"""A local checkpoint folder made consistent again before autoresume.

Composer writes a checkpoint straight to its final name (`ep{E}-ba{B}-rank0.pt`) and then replaces
the `latest-rank0.pt` symlink (remove, then create). A process killed in between leaves a torn
file newer than `latest`, a complete one newer than `latest`, or no `latest` at all. Composer then
refuses to resume forever ("... may conflict with a future checkpoint of the current run") or,
without `latest`, starts again from step 0 and refuses the same way.

`recover_checkpoints` runs before the Trainer is built (rank 0): a checkpoint that does not open
as a complete archive is renamed `<name>.torn` (kept for inspection, never deleted), and `latest`
is pointed at the newest complete checkpoint when it is missing or older. Object-store save
folders need none of this: an upload is atomic and the symlink object is written after it.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^ep(\d+)-ba(\d+)-rank0\.pt$")
LATEST = "latest-rank0.pt"


def is_complete(path: str) -> bool:
    """torch.save writes a zip archive whose central directory comes last: a torn file has none."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def recover_checkpoints(folder: str) -> list[str]:
    """Make `folder` resumable after a kill; returns what was done (one line per action)."""
    if not os.path.isdir(folder):
        return []
    found = sorted(((int(m.group(1)), int(m.group(2))), n) for n in os.listdir(folder) if (m := CHECKPOINT.match(n)))
    actions, complete = [], []
    for key, name in found:
        path = os.path.join(folder, name)
        if is_complete(path):
            complete.append((key, name))
        else:
            os.replace(path, path + ".torn")
            actions.append(f"{name}: torn (a kill while it was written); renamed {name}.torn")
    if not complete:
        return actions
    newest = complete[-1][1]
    latest = os.path.join(folder, LATEST)
    target = os.readlink(latest) if os.path.islink(latest) else None
    target_key = next((k for k, n in complete if n == os.path.basename(target or "")), None)
    if target_key is None or target_key < complete[-1][0]:
        tmp = latest + ".tmp"
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(newest, tmp)
        os.replace(tmp, latest)
        actions.append(f"{LATEST}: pointed at {newest} (was {target or 'missing'})")
    for a in actions:
        log.warning("run.save_folder %s: %s", folder, a)
    return actions
