"""Who may write into an output folder, decided before any work is scheduled.

- An output is claimed by creating `_settings.json` with a create-if-absent write
  (`schemas.claim`): of two runs started together against one output, exactly one creates it;
  the other reads the winner's settings and is refused if they differ. No window in which both
  pass a check-then-write.
- An output that is not empty and holds no claim is not ours (a plain MDS dataset, someone's
  files): refused, naming what was found; nothing is overwritten. A claimed output holding
  files we never write is refused the same way.
- An output equal to or inside an input folder (or an input inside the output) is refused: a
  re-run would read the dataset's own shards as input.
- A run killed inside a local write leaves `<name>.tmp-<32 hex>` files; a resumed run removes
  them from parts that are not published yet (and from the output's top level), never elsewhere.
"""
from __future__ import annotations

import json
import logging
import os
import re

from schemas import DEAD_LETTER_DIR, INDEX_NAME, MANIFEST_NAME, PARTS_DIR, Manifest, storage
from schemas.claim import create_if_absent
from schemas.redact import redact_uri

log = logging.getLogger("pdistill.pipeline")
SETTINGS_NAME = "_settings.json"
OUR_NAMES = (SETTINGS_NAME, MANIFEST_NAME, INDEX_NAME, PARTS_DIR, DEAD_LETTER_DIR)
TMP_RE = re.compile(r"\.tmp-[0-9a-f]{32}$")  # schemas.storage.write_bytes_atomic / schemas.claim temp names
GLOB_CHARS = "*?["


class OutputError(ValueError):
    """The output cannot be written by this run; the message says why and what to do (a bad
    setting to the user: the command line prints it without a traceback)."""


class SettingsMismatch(OutputError):
    """The output already holds (part of) a dataset written with other settings."""


class ForeignOutput(OutputError):
    """The output holds files this pipeline did not write."""


class OutputInsideInput(OutputError):
    """The output and an input overlap."""


class PartMismatch(OutputError):
    """A published part was not written with the dataset's settings."""


# ---------------------------------------------------------------- output vs inputs


def _norm(uri: str) -> str:
    """A comparable absolute location: a real local path, or scheme://bucket/key without trailing '/'."""
    if storage.is_local(uri):
        return os.path.realpath(os.path.abspath(storage.local_path(uri)))
    scheme, rest = uri.split("://", 1)
    scheme = {"s3a": "s3", "gcs": "gs"}.get(scheme, scheme)
    return f"{scheme}://" + re.sub("/+", "/", rest).rstrip("/")


def input_base(pattern: str) -> str:
    """The folder a glob reads below (the part before its first wildcard), or the input itself."""
    cut = min((pattern.find(c) for c in GLOB_CHARS if c in pattern), default=-1)
    if cut < 0:
        return pattern.rstrip("/") or pattern
    head = pattern[:cut]
    return head[: head.rfind("/")] if "/" in head else "."


def _inside(child: str, parent: str) -> bool:
    sep = "/" if "://" in parent else os.sep
    return child == parent or child.startswith(parent.rstrip(sep) + sep)


def refuse_overlap(output: str, inputs: list[str]) -> None:
    out = _norm(output)
    for pattern in inputs:
        base = _norm(input_base(pattern))
        shown_out, shown_in = redact_uri(output), redact_uri(pattern)
        if _inside(out, base):
            raise OutputInsideInput(
                f"output {shown_out} is inside the input folder {redact_uri(input_base(pattern))} (input {shown_in!r}): "
                "a re-run would read the dataset's own shards as input; choose an output outside every input folder")
        if _inside(base, out):
            raise OutputInsideInput(f"input {shown_in!r} lies inside the output {shown_out}; choose an output that "
                                    "holds no input")


# ---------------------------------------------------------------- the claim


def _top_level(output: str) -> list[str]:
    fs, path = storage.fs_and_path(output)
    fs.invalidate_cache()
    try:  # one listing call: an isdir-then-exists pair races with a claim being created
        entries = [e.rstrip("/") for e in fs.ls(path, detail=False)]
    except (FileNotFoundError, NotADirectoryError):
        entries = [path] if fs.isfile(path) else []
    finally:
        fs.invalidate_cache()  # other processes write here next
    root = path.rstrip("/")
    if entries == [root]:  # the output URI is a file (object), not a folder
        return [root.rsplit("/", 1)[-1]]
    return sorted({e.rsplit("/", 1)[-1] for e in entries if e != root})


def _is_our_temp(name: str) -> bool:
    return bool(TMP_RE.search(name)) and TMP_RE.sub("", name) in OUR_NAMES


def _refuse_foreign(output: str, names: list[str], claimed: bool) -> None:
    if claimed:
        foreign = [n for n in names if n not in OUR_NAMES and not _is_our_temp(n)]
    else:
        foreign = [n for n in names if not _is_our_temp(n)]
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if not claimed and set(foreign) <= set(OUR_NAMES):
        raise ForeignOutput(f"output {redact_uri(output)} holds {shown} but no {SETTINGS_NAME}: not written by this pipeline "
                            "with known settings; refusing to overwrite it: choose a new (empty) output")
    what = "files this pipeline never writes" if claimed else f"files and no {SETTINGS_NAME} (not a pdistill output)"
    raise ForeignOutput(f"output {redact_uri(output)} is not empty: it holds {what}: {shown}; refusing to overwrite or mix "
                        "with them: choose a new (empty) output")


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def claim_output(output: str, fp: str, settings: dict, versions: dict | None = None) -> bool:
    """True when the dataset is already complete with these settings. Otherwise claims the output
    for these settings (atomically) or checks that its claim holds them; refuses other settings, a
    foreign output, and a resume over an input changed in place (size, ETag / md5Hash / crc32c or
    local mtime differ from what the first run recorded)."""
    settings_uri = storage.join(output, SETTINGS_NAME)
    manifest_uri = storage.join(output, MANIFEST_NAME)
    names = _top_level(output)
    if SETTINGS_NAME not in names and MANIFEST_NAME not in names:
        _refuse_foreign(output, names, claimed=False)
        body = json.dumps({"settings_fingerprint": fp, "settings": settings, "source_versions": versions or {}},
                          indent=2, sort_keys=True)
        if create_if_absent(settings_uri, body.encode("utf-8")):
            log.info("claimed output %s (%s)", redact_uri(output), SETTINGS_NAME)
            return False
        # another run created the claim between our listing and our write: its settings decide
    old = json.loads(storage.read_text(settings_uri)) if storage.exists(settings_uri) else None
    if old is not None and old.get("settings_fingerprint") != fp:
        changes = _diff(old.get("settings", {}), settings)
        raise SettingsMismatch(
            f"output {redact_uri(output)} was written with other settings ({'; '.join(changes) or 'fingerprint differs'}); "
            "refusing to mix them: choose a new output or restore the settings")
    if MANIFEST_NAME in names:
        m = Manifest.from_json(storage.read_text(manifest_uri), manifest_uri)
        if m.settings_fingerprint != fp:
            raise SettingsMismatch(f"output {redact_uri(output)} holds a finished dataset with settings {m.settings_fingerprint}, "
                                   f"this run's are {fp}; choose a new output")
        return True
    if old is None:
        raise ForeignOutput(f"output {redact_uri(output)}: its {SETTINGS_NAME} vanished while this run started (another process "
                            "is deleting it?); refusing to write: re-run when the output is stable")
    _refuse_foreign(output, _top_level(output), claimed=True)
    if versions:
        recorded = old.get("source_versions") or {}
        changed = sorted(u for u, v in recorded.items() if u in versions and versions[u] != v)
        if changed:
            raise SettingsMismatch(
                f"output {redact_uri(output)}: input {changed[0]} changed in place since its parts were written "
                f"({recorded[changed[0]]} -> {versions[changed[0]]}"
                + (f"; {len(changed) - 1} more" if len(changed) > 1 else "") + "); refusing to mix old and new "
                "content: choose a new output (or restore the input)")
    return False


# ---------------------------------------------------------------- orphans of a killed run


def clean_orphans(output: str, unfinished: set[str]) -> list[str]:
    """Remove our temporary files from unfinished parts, their dead letters and the top level."""
    fs, path = storage.fs_and_path(output)
    root = path.rstrip("/")
    fs.invalidate_cache()
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return []
    finally:
        fs.invalidate_cache()  # a listing cached here would hide what worker processes publish
    removed = []
    for p in found:
        rel = p[len(root) + 1:] if p.startswith(root + "/") else None
        if rel is None or not TMP_RE.search(rel):
            continue
        parts = rel.split("/")
        final = TMP_RE.sub("", parts[-1])
        ours = (
            (len(parts) == 1 and final in OUR_NAMES)
            or (len(parts) == 3 and parts[0] == PARTS_DIR and parts[1] in unfinished)
            or (len(parts) == 2 and parts[0] == DEAD_LETTER_DIR and final[: -len(".jsonl")] in unfinished)
        )
        if ours:
            fs.rm_file(p)
            removed.append(rel)
    if removed:
        log.info("removed %d temporary files a killed run left under %s (first: %s)", len(removed), redact_uri(output), removed[0])
        fs.invalidate_cache()
    return removed
