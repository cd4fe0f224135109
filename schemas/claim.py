"""Create-if-absent writes: the one atomic step that lets a single run claim an output.

Checking for an object and then writing it is a race: two runs started together both see nothing
and both write. Every store we support offers a write that succeeds only if the object is absent,
decided by the store itself:

- local files: the content goes to a temporary file that is hard-linked to the final name
  (`link(2)` fails with EEXIST like `open(O_CREAT | O_EXCL)`, and the claim is never seen half
  written); where hard links are not available, `os.open(O_CREAT | O_EXCL)` then the write;
- S3: PutObject with `If-None-Match: *` (s3fs `pipe_file(mode="create")`; AWS since 2024-08);
- GCS: upload with `ifGenerationMatch=0` (gcsfs `pipe_file(mode="create")`).

Any other fsspec store has no such write here: `create_if_absent` refuses it rather than
pretend (an explicit `allow_unsafe=True` falls back to check-then-write).
"""

from __future__ import annotations

import errno
import os

from schemas import storage
from schemas.errors import SchemaError
from schemas.redact import redact_uri

ATOMIC_PROTOCOLS = ("file", "local", "s3", "s3a", "gs", "gcs")


class ClaimUnsupported(SchemaError):
    """The store behind a URI offers no create-if-absent write."""


class ClaimError(SchemaError):
    """The claim could not be written (its temporary file kept disappearing)."""


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return tuple(p) if isinstance(p, (tuple, list)) else (p,)


def create_if_absent(uri: str, data: bytes, allow_unsafe: bool = False) -> bool:
    """Write `data` to `uri` only if no object is there. True: this call created it; False: one existed.

    Exactly one of any number of concurrent callers (threads, processes, machines) gets True.
    """
    if storage.is_local(uri):
        return _create_local(os.path.abspath(storage.local_path(uri)), data)
    fs, path = storage.fs_and_path(uri)
    if not set(_protocols(fs)) & set(ATOMIC_PROTOCOLS):
        if not allow_unsafe:
            raise ClaimUnsupported(
                f"{redact_uri(uri)}: the {_protocols(fs)[0]!r} store has no create-if-absent write here, so two runs could "
                "both claim this output; use a local path, s3:// or gs://"
            )
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:  # s3fs: 412 PreconditionFailed on If-None-Match; gcsfs: 412 on ifGenerationMatch
        return False
    finally:
        fs.invalidate_cache()
    return True


def _create_local(path: str, data: bytes, attempts: int = 5) -> bool:
    for _ in range(attempts):
        tmp = storage.write_temp_beside(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except FileNotFoundError:
            # Our temp file vanished before the link: a run that already holds this output removed
            # it as a killed run's orphan (`DatasetDir.remove_orphans`). Look again: the claim is
            # there (we lost) or it is not (write a new temp file).
            if os.path.lexists(path):
                return False
        except OSError as e:  # no hard links on this file system (some FUSE / SMB mounts)
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _create_local_excl(path, data)
        finally:
            _unlink_if_present(tmp)
    raise ClaimError(
        f"{redact_uri(path)}: the temporary claim file was removed {attempts} times before it could be "
        "linked into place; another process is deleting files in this output"
    )


def _unlink_if_present(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:  # removed by a concurrent orphan cleanup: nothing left to undo
        pass


def _create_local_excl(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True
