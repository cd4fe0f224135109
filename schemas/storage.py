"""Object-store URIs (file://, local paths, gs://, s3://, anything fsspec knows) in one place.

fsspec is imported inside the functions, so `import schemas` stays numpy + stdlib. Endpoints of
emulators or private clouds come from the environment (STORAGE_EMULATOR_HOST for gcsfs,
AWS_ENDPOINT_URL / S3_ENDPOINT_URL for s3fs and streaming), never from code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import tempfile
import uuid

from schemas.errors import ConfigError, SchemaError
from schemas.identity import hasher


class UnsafeObjectName(SchemaError):
    """A remote object whose name would land outside the folder it is downloaded into."""


class StoreRefused(ConfigError):
    """The store refused us or could not be reached (no or wrong credentials, no permission): a
    setting of the environment, reported naming the URI the command was touching."""


def refusals() -> tuple[type[BaseException], ...]:
    """What a store raises when it refuses access: PermissionError (s3fs maps 403 to it; gcsfs
    raises OSError("Forbidden: ..."), see `access`) and the SDKs' errors, which are not OSErrors
    (botocore's NoCredentialsError and ClientError, google-auth's DefaultCredentialsError, gcsfs's
    HttpError). Only the SDKs installed are imported, and only when an exception is being matched
    (`except storage.refusals()`)."""
    errors: list[type[BaseException]] = [PermissionError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 (late: optional dependency)

        errors += [BotoCoreError, ClientError]
    except ImportError:
        pass
    try:
        from google.auth.exceptions import GoogleAuthError  # noqa: PLC0415 (late: optional dependency)

        errors.append(GoogleAuthError)
    except ImportError:
        pass
    try:
        from gcsfs.retry import HttpError  # noqa: PLC0415 (late: optional dependency)

        errors.append(HttpError)
    except ImportError:
        pass
    return tuple(errors)


def _forbidden(e: OSError) -> bool:
    """gcsfs reports a 403 as a plain OSError("Forbidden: <path> ...")."""
    return str(e).startswith("Forbidden:")


@contextlib.contextmanager
def access(what: str):
    """Run a block that touches a store; a refusal becomes one `StoreRefused` naming `what`
    (e.g. "output s3://b/ds", redacted by the caller) instead of an SDK traceback."""
    try:
        yield
    except (OSError,) + refusals() as e:
        if isinstance(e, OSError) and not isinstance(e, PermissionError) and not _forbidden(e):
            raise
        raise StoreRefused(
            f"{what}: access refused ({type(e).__name__}: {' '.join(str(e).split())}); "
            "check the credentials and permissions for it"
        ) from None


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def join(uri: str, *parts: str) -> str:
    if is_local(uri):
        return os.path.join(local_path(uri), *parts)
    return posixpath.join(uri, *parts)


def fs_and_path(uri: str):
    import fsspec  # noqa: PLC0415 (late: start-up cost, ~0.1 s)

    if is_local(uri):
        return fsspec.filesystem("file"), os.path.abspath(local_path(uri))
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def exists(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = fs_and_path(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def unwritable(uri: str | None, kind: str = "folder") -> str | None:
    """Why a local `kind` ("folder" or "file") at `uri` cannot be created or written, or None.

    Checked before a command starts so that a bad output path is one message naming it, not a
    `NotADirectoryError` / `PermissionError` traceback after the work (the trainer's save_folder,
    `pdistill logits --report-json`). Leaves nothing behind: a probe folder is made in the nearest
    existing ancestor and removed. Remote URIs are checked by their first write (None here)."""
    if not uri or not is_local(uri):
        return None
    path = os.path.abspath(local_path(uri))
    if kind == "file":
        if os.path.isdir(path):
            return f"{os.strerror(errno.EISDIR)}: {path} is a folder"
        path = os.path.dirname(path)
    base = path
    while not os.path.exists(base):
        base = os.path.dirname(base)
    if not os.path.isdir(base):
        return f"{os.strerror(errno.ENOTDIR)}: {base} is a file"
    try:
        os.rmdir(tempfile.mkdtemp(dir=base, prefix=".pdistill-write-check-"))
    except OSError as e:
        return f"{e.strerror or e}: {base}"
    return None


def write_temp_beside(path: str, data: bytes) -> str:
    """Write `data` durably to `<path>.tmp-<32 hex>` (creating the folder) and return that name:
    the first half of every local atomic write (rename or link it into place)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_bytes_atomic(uri: str, data: bytes, before_commit=None) -> None:
    """Write one object so that readers see all of it or nothing.

    Local: write a temporary file beside it (`<name>.tmp-<32 hex>`) and rename. Object stores: one
    PUT is atomic. `before_commit()` runs when the bytes are written but not yet visible under
    `uri` (a test hook: a kill there leaves the temporary file a killed writer leaves).
    """
    if is_local(uri):
        path = os.path.abspath(local_path(uri))
        tmp = write_temp_beside(path, data)
        if before_commit is not None:
            before_commit()
        os.replace(tmp, path)
        return
    if before_commit is not None:
        before_commit()
    fs, path = fs_and_path(uri)
    fs.pipe_file(path, data)


def write_text_atomic(uri: str, text: str) -> None:
    write_bytes_atomic(uri, text.encode("utf-8"))


def upload_dir(local_dir: str, uri: str, last: tuple[str, ...] = (), after_each=None, before_commit=None) -> None:
    """Copy a local folder's files to `uri`; files named in `last` go after all the others.

    Use `last=("index.json",)` so that a reader never sees an index before its shards.
    `after_each(name)` runs after each top-level file is copied, `before_commit(name)` when its
    bytes are written but not yet visible (progress, test hooks).
    """
    names = sorted(os.listdir(local_dir))
    ordered = [n for n in names if n not in last] + [n for n in last if n in names]
    for name in ordered:
        src = os.path.join(local_dir, name)
        if os.path.isdir(src):
            upload_dir(src, join(uri, name))
            continue
        with open(src, "rb") as f:
            data = f.read()
        write_bytes_atomic(
            join(uri, name), data, before_commit=None if before_commit is None else (lambda n=name: before_commit(n))
        )
        if after_each is not None:
            after_each(name)


def object_version(info: dict) -> str:
    """A store's own version of an object from its listing entry: a content checksum or ETag
    (md5Hash / crc32c on GCS, ETag on S3), else its modification time; "unversioned" if none.
    Recorded per input in the output's claim (a resume refuses an input changed in place) and
    part of the checkpoint cache key (`fetch_dir`)."""
    for key in ("md5Hash", "crc32c", "ETag", "etag", "checksum", "md5"):
        if info.get(key):
            return f"{key}={str(info[key]).strip(chr(34))}"
    for key in ("mtime", "LastModified", "updated", "last_modified", "created"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return "unversioned"


def safe_target(dest: str, name: str, where: str) -> str:
    """`dest/name` for a name taken from a remote listing, refused unless it stays strictly inside
    `dest`: object stores allow keys such as `t/../../x` or `/abs`, which a plain join would write
    anywhere on the local disk."""
    root = os.path.normpath(os.path.abspath(dest))
    target = os.path.normpath(os.path.join(root, name))
    if not name or name.startswith(("/", os.sep)) or os.path.commonpath([root, target]) != root or target == root:
        raise UnsafeObjectName(
            f"object {where}: its name {name!r} resolves outside the download folder; "
            "refusing to fetch (a hostile or broken upload?)"
        )
    return target


def fetch_dir(uri: str, cache_root: str | None = None) -> str:
    """A local folder holding the files under `uri` (downloaded once into a cache for remote URIs).

    Object names are untrusted: one that would resolve outside the destination (`../`, absolute)
    is refused with an error naming it, before anything is downloaded.
    The cache entry is keyed by the URI *and* its listing (every file's name, size and store
    version), so a checkpoint replaced at the same URI is fetched again, never served stale. The
    download goes to a temporary folder that is renamed into place when complete, so a killed
    download is never mistaken for a finished one.
    """
    if is_local(uri):
        path = os.path.abspath(local_path(uri))
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no such folder: {uri}")
        return path
    cache_root = cache_root or os.environ.get("PDISTILL_CACHE", os.path.expanduser("~/.cache/pdistill"))
    fs, path = fs_and_path(uri)
    fs.invalidate_cache()
    listing = fs.find(path, detail=True) if fs.exists(path) else {}
    if not listing:
        raise FileNotFoundError(f"no such folder (or an empty one): {uri}")
    root = path.rstrip("/")
    names = {}
    for remote in sorted(listing):  # every name is checked before anything is downloaded
        rel = remote[len(root) + 1 :] if remote.startswith(root + "/") else remote
        safe_target(cache_root, rel, where=f"{uri.rstrip('/')}/{rel}")
        names[remote] = rel
    key = hasher(uri.encode())
    for remote in sorted(listing):
        info = listing[remote]
        key.update(f"\x00{names[remote]}\x00{info.get('size')}\x00{object_version(info)}".encode())
    dest = os.path.join(cache_root, key.hexdigest()[:32])
    if os.path.isdir(dest):
        return dest
    os.makedirs(cache_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".fetch-", dir=cache_root)
    try:
        for remote in sorted(listing):
            target = safe_target(tmp, names[remote], where=f"{uri.rstrip('/')}/{names[remote]}")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.get_file(remote, target)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not os.path.isdir(dest):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same download first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
