"""Who may write into an output folder, decided before any work is scheduled.

- An output is claimed by creating its settings record with a create-if-absent write
  (`DatasetDir.claim`, `schemas.claim`): of two runs started together against one output, exactly one creates it;
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

import logging
import os
import re

from schemas import storage
from schemas.claim import ClaimError
from schemas.dataset_dir import PARTS_DIR, SETTINGS_NAME, DatasetDir, TopLevel
from schemas.redact import redact_uri

log = logging.getLogger("pdistill.pipeline")
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


class DamagedOutput(OutputError):
    """A finished dataset whose files are not what its manifest and indexes record."""


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
                "a re-run would read the dataset's own shards as input; choose an output outside every input folder"
            )
        if _inside(base, out):
            raise OutputInsideInput(
                f"input {shown_in!r} lies inside the output {shown_out}; choose an output that holds no input"
            )


def refuse_unwritable(output: str) -> None:
    """A local output that cannot be created or written (under a file, a read-only disk) is
    refused before any work (`storage.unwritable`), not a NotADirectoryError at the claim. An
    output that is itself a file is left to the claim, which refuses it as foreign, naming it."""
    if storage.is_local(output) and os.path.isfile(storage.local_path(output)):
        return
    problem = storage.unwritable(output)
    if problem:
        raise OutputError(f"output {redact_uri(output)}: cannot write to it ({problem})")


# ---------------------------------------------------------------- the claim


def _refuse_foreign(output: str, top: TopLevel, claimed: bool) -> None:
    foreign = top.foreign(claimed)
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if not claimed and TopLevel.all_ours(foreign):
        raise ForeignOutput(
            f"output {redact_uri(output)} holds {shown} but no {SETTINGS_NAME}: not written by this pipeline "
            "with known settings; refusing to overwrite it: choose a new (empty) output"
        )
    what = "files this pipeline never writes" if claimed else f"files and no {SETTINGS_NAME} (not a pdistill output)"
    raise ForeignOutput(
        f"output {redact_uri(output)} is not empty: it holds {what}: {shown}; refusing to overwrite or mix "
        "with them: choose a new (empty) output"
    )


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
    out = DatasetDir(output)
    top = out.top_level()
    if not top.claimed and not top.finished:
        _refuse_foreign(output, top, claimed=False)
        if out.claim({"settings_fingerprint": fp, "settings": settings, "source_versions": versions or {}}):
            log.info("claimed output %s (%s)", redact_uri(output), SETTINGS_NAME)
            return False
        # another run created the claim between our listing and our write: its settings decide
    try:
        old = out.read_claim()
    except ClaimError as e:
        raise ForeignOutput(
            f"output {redact_uri(output)}: its {SETTINGS_NAME} is not the settings record this pipeline "
            f"writes ({str(e).removeprefix(redact_uri(out.settings_uri) + ': ')}): damaged, or not ours; "
            "refusing to write: choose a new (empty) output"
        ) from None
    if old is not None and old.get("settings_fingerprint") != fp:
        changes = _diff(old.get("settings", {}), settings)
        raise SettingsMismatch(
            f"output {redact_uri(output)} was written with other settings ({'; '.join(changes) or 'fingerprint differs'}); "
            "refusing to mix them: choose a new output or restore the settings"
        )
    if top.finished:
        m = out.read_manifest()
        if m.settings_fingerprint != fp:
            raise SettingsMismatch(
                f"output {redact_uri(output)} holds a finished dataset with settings {m.settings_fingerprint}, "
                f"this run's are {fp}; choose a new output"
            )
        return True
    if old is None:
        raise ForeignOutput(
            f"output {redact_uri(output)}: its {SETTINGS_NAME} vanished while this run started (another process "
            "is deleting it?); refusing to write: re-run when the output is stable"
        )
    _refuse_foreign(output, out.top_level(), claimed=True)
    if versions:
        recorded = old.get("source_versions") or {}
        changed = sorted(u for u, v in recorded.items() if u in versions and versions[u] != v)
        if changed:
            raise SettingsMismatch(
                f"output {redact_uri(output)}: input {changed[0]} changed in place since its parts were written "
                f"({recorded[changed[0]]} -> {versions[changed[0]]}"
                + (f"; {len(changed) - 1} more" if len(changed) > 1 else "")
                + "); refusing to mix old and new "
                "content: choose a new output (or restore the input)"
            )
    return False


def verify_finished(output: str) -> None:
    """A finished run's re-run reports the dataset complete, so it checks what it vouches for
    first, with the checks of `pdistill inspect --skip-hash` (`DatasetDir.verify(hashes=False)`):
    one listing gives every shard's recorded size, every part's index.json and stats.json, and
    dead-letter records where the manifest counts some; manifest and root index parse and agree;
    the codec prime is read and its SHA-256 must be the one the manifest names (a damaged prime
    makes every sample undecodable). Shard contents are not hashed, which would read the whole
    dataset on every re-run: `pdistill inspect` does that. Damage is refused, naming the file."""
    v = DatasetDir(output).verify(hashes=False)
    if v.whole:
        return
    first = v.problems[0]
    more = (
        f" (and {len(v.problems) - 1} more problems: `pdistill inspect {redact_uri(output)}` lists them)"
        if len(v.problems) > 1
        else ""
    )
    fix = (
        "delete that part folder and manifest.json, then re-run the same command to recompute the part"
        if first.file.startswith(PARTS_DIR + "/")
        else "re-create the dataset into a new output (or restore the file from a copy)"
    )
    raise DamagedOutput(f"output {redact_uri(output)} holds a finished dataset that is damaged: {first}{more}; {fix}")


# ---------------------------------------------------------------- orphans of a killed run


def clean_orphans(output: str, unfinished: set[str]) -> list[str]:
    """Remove our temporary files from unfinished parts, their dead letters and the top level."""
    removed = DatasetDir(output).remove_orphans(unfinished)
    if removed:
        log.info(
            "removed %d temporary files a killed run left under %s (first: %s)",
            len(removed),
            redact_uri(output),
            removed[0],
        )
    return removed
