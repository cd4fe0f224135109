"""`DatasetDir`: the one owner of a dataset's layout on storage: paths, claim, publish, read.

A dataset is a folder (local path, file://, s3://, gs://, anything fsspec knows):

    _settings.json              the output's claim: settings fingerprint, settings, input versions
    parts/<unit>/shard.*.mds*   one MDS sub-dataset per work unit
    parts/<unit>/stats.json     the unit's counts and settings fingerprint (published before ...)
    parts/<unit>/index.json     ... the part's index, its commit marker
    dead_letter/<unit>.jsonl    the unit's rejected documents, with reasons
    codec_prime.bin             the codec's prime, when the codec has one (compact5): written once,
                                before any part, by whichever run creates it first
    tokenizer/<file>            the teacher's tokenizer files (tokenizer.json, ...), created if absent
                                by the launcher; the manifest's tokenizer.files holds their SHA-256s
    index.json                  root MDS index over every part (basenames `parts/<unit>/...`)
    manifest.json               written last: the dataset's commit marker and identity card

Like mosaicml-streaming's `Stream`, a `DatasetDir` is a small value that knows its URIs; every
module that reads or writes a dataset (the pipeline's claim, parts and publish; the trainer's
preflight; `pdistill inspect`; the demo) goes through it, so the layout is named here only (the
file names themselves sit in `schemas.layout`, shared with the checks). Whether what is stored is
whole is `schemas.integrity`'s: `verify` and `check_shards` here delegate to it.

Decision on samples: `schemas` imports numpy and the standard library only (fsspec inside
functions), and mosaicml-streaming imports torch, so `DatasetDir` does not open samples itself;
`stream_args(cache_dir, identity=...)` gives the `remote`/`local` arguments of a `streaming.Stream`
(remote read through `<cache_dir>/<key of the URI and the dataset's content>`, so the dataset folder
is never written to and a changed dataset never reads an old cache), and the
trainer's `trainer.data` constructs the one `StreamingDataset` that trainer and inspect use.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from schemas import integrity, storage
from schemas.claim import ClaimError, create_if_absent
from schemas.codecs import Prime, make_stored_codec
from schemas.errors import CodecError, CorruptDataset, IncompatibleDataset, IncompleteDataset
from schemas.identity import hex_digest
from schemas.integrity import Verification, stored_file
from schemas.layout import (  # importable from here and from `schemas` too
    DEAD_LETTER_DIR,
    INDEX_NAME,
    MANIFEST_NAME,
    PARTS_DIR,
    PRIME_NAME,
    SETTINGS_NAME,
    STATS_NAME,
    TOKENIZER_DIR,
    TOKENIZER_FILES,
)
from schemas.manifest import Manifest
from schemas.redact import redact_uri
from schemas.shard_names import check_names

# the top level we write
OUR_NAMES = (SETTINGS_NAME, MANIFEST_NAME, INDEX_NAME, PARTS_DIR, DEAD_LETTER_DIR, PRIME_NAME, TOKENIZER_DIR)
TMP_RE = re.compile(r"\.tmp-[0-9a-f]{32}$")  # schemas.storage.write_bytes_atomic / schemas.claim temp names


@dataclass(frozen=True)
class TopLevel:
    """What the top of a dataset folder holds, in our terms."""

    names: list[str]

    @property
    def claimed(self) -> bool:
        return SETTINGS_NAME in self.names

    @property
    def finished(self) -> bool:
        return MANIFEST_NAME in self.names

    def foreign(self, claimed: bool) -> list[str]:
        """Names we did not write (in a claimed output), or every name but our temp files (unclaimed)."""
        return [n for n in self.names if not (claimed and n in OUR_NAMES) and not DatasetDir.is_our_temp(n)]

    @staticmethod
    def all_ours(names: list[str]) -> bool:
        return set(names) <= set(OUR_NAMES)


@dataclass(frozen=True)
class DatasetDir:
    """A dataset folder by its URI: every path of the layout and every read or write of it."""

    uri: str

    # -- paths ---------------------------------------------------------------------------------
    def _at(self, *names: str) -> str:
        return storage.join(self.uri, *names)

    settings_uri = property(lambda self: self._at(SETTINGS_NAME), doc="the claim, `_settings.json`")
    manifest_uri = property(lambda self: self._at(MANIFEST_NAME), doc="`manifest.json`, written last")
    index_uri = property(lambda self: self._at(INDEX_NAME), doc="the root MDS index")
    parts_uri = property(lambda self: self._at(PARTS_DIR), doc="the folder of the parts")
    prime_uri = property(lambda self: self._at(PRIME_NAME), doc="the codec's prime (`schemas.codecs.prime`)")

    def part_uri(self, unit: str) -> str:
        return self._at(PARTS_DIR, unit)

    def tokenizer_uri(self, name: str) -> str:
        """A stored tokenizer file (`schemas.layout.TOKENIZER_FILES`)."""
        return self._at(TOKENIZER_DIR, name)

    def dead_letter_uri(self, unit: str) -> str:
        return self._at(DEAD_LETTER_DIR, f"{unit}.jsonl")

    def _fs(self):
        return storage.fs_and_path(self.uri)

    # -- the claim -----------------------------------------------------------------------------
    def claim(self, record: dict) -> bool:
        """Create `_settings.json` holding `record` only if absent (`schemas.claim`): True when
        this call created it; of concurrent callers exactly one does."""
        body = json.dumps(record, indent=2, sort_keys=True)
        return create_if_absent(self.settings_uri, body.encode("utf-8"))

    def read_claim(self) -> dict | None:
        """The claim's record, None when there is none; `schemas.claim.ClaimError` (naming the
        file) when it is not a JSON object: empty, cut short, not UTF-8, or someone else's file."""
        if not storage.exists(self.settings_uri):
            return None
        data = storage.read_bytes(self.settings_uri)
        try:
            record = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            what = "empty" if not data.strip() else f"not valid JSON ({e})"
            raise ClaimError(f"{redact_uri(self.settings_uri)}: {what}") from None
        if not isinstance(record, dict):
            kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(record), "number")
            raise ClaimError(f"{redact_uri(self.settings_uri)}: not a settings record (a JSON {kind}, not an object)")
        return record

    def top_level(self) -> TopLevel:
        """Names at the top of the folder ([] when absent; [its own name] when the URI is a file)."""
        fs, path = self._fs()
        fs.invalidate_cache()
        try:  # one listing call: an isdir-then-exists pair races with a claim being created
            entries = [e.rstrip("/") for e in fs.ls(path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            entries = [path] if fs.isfile(path) else []
        finally:
            fs.invalidate_cache()  # other processes write here next
        root = path.rstrip("/")
        if entries == [root]:  # the output URI is a file (object), not a folder
            return TopLevel([root.rsplit("/", 1)[-1]])
        return TopLevel(sorted({e.rsplit("/", 1)[-1] for e in entries if e != root}))

    @staticmethod
    def is_our_temp(name: str) -> bool:
        """A temporary file our atomic writes leave at the top level when killed."""
        return bool(TMP_RE.search(name)) and TMP_RE.sub("", name) in OUR_NAMES

    def remove_orphans(self, unfinished: set[str]) -> list[str]:
        """Remove our temporary files from unfinished parts, their dead letters and the top level
        (never elsewhere); returns their paths relative to the dataset root."""
        fs, path = self._fs()
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
            rel = p[len(root) + 1 :] if p.startswith(root + "/") else None
            if rel is None or not TMP_RE.search(rel):
                continue
            parts = rel.split("/")
            final = TMP_RE.sub("", parts[-1])
            ours = (
                (len(parts) == 1 and final in OUR_NAMES)
                or (len(parts) == 3 and parts[0] == PARTS_DIR and parts[1] in unfinished)
                or (len(parts) == 2 and parts[0] == DEAD_LETTER_DIR and final[: -len(".jsonl")] in unfinished)
                or (len(parts) == 2 and parts[0] == TOKENIZER_DIR and final in TOKENIZER_FILES)
            )
            if ours:
                try:
                    fs.rm_file(p)
                except FileNotFoundError:  # a concurrent run finished (or removed) its own temp file
                    continue
                removed.append(rel)
        if removed:
            fs.invalidate_cache()
        return removed

    # -- parts ---------------------------------------------------------------------------------
    def finished_units(self) -> set[str]:
        """Units whose part is published (its index.json exists)."""
        fs, path = self._fs()
        fs.invalidate_cache()  # s3fs/gcsfs cache listings; parts are published by other processes
        try:
            found = fs.glob(path.rstrip("/") + "/" + PARTS_DIR + "/*/" + INDEX_NAME)
        except FileNotFoundError:
            return set()
        return {p.rstrip("/").split("/")[-2] for p in found}

    def part_published(self, unit: str) -> bool:
        dest = self.part_uri(unit)
        fs, dest_path = storage.fs_and_path(dest)
        fs.invalidate_cache(dest_path)
        return storage.exists(storage.join(dest, INDEX_NAME))

    def write_dead_letters(self, unit: str, records: list[dict]) -> None:
        body = "".join(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n" for d in records)
        storage.write_text_atomic(self.dead_letter_uri(unit), body)

    def publish_part(
        self,
        unit: str,
        local_dir: str,
        stats: dict,
        *,
        after_each: Callable | None = None,
        before_commit: Callable | None = None,
    ) -> None:
        """Copy a part written in `local_dir` (MDS shards + index.json) to `parts/<unit>/`, with
        `stats` as stats.json, then the part's index.json last (its commit marker)."""
        with open(os.path.join(local_dir, STATS_NAME), "w") as f:
            json.dump(stats, f, sort_keys=True)
        storage.upload_dir(
            local_dir,
            self.part_uri(unit),
            last=(STATS_NAME, INDEX_NAME),
            after_each=after_each,
            before_commit=before_commit,
        )

    def read_stats(self, unit: str) -> dict:
        return json.loads(storage.read_text(storage.join(self.part_uri(unit), STATS_NAME)))

    def read_part_index(self, unit: str) -> dict:
        """A part's index; CorruptDataset when a shard name in it is not a plain file name."""
        uri = storage.join(self.part_uri(unit), INDEX_NAME)
        index = json.loads(storage.read_text(uri))
        check_names(index, None, where=redact_uri(uri))
        return index

    # -- publishing ----------------------------------------------------------------------------
    def root_index(self, units: list[str]) -> dict:
        """The root index over the units' parts in sorted order (shard basenames become
        `parts/<unit>/<basename>`; streaming's `merge_index` goes one folder deep only)."""
        shards = []
        for unit in sorted(units):
            for shard in self.read_part_index(unit)["shards"]:
                for key in ("raw_data", "zip_data"):
                    if shard.get(key):
                        shard[key]["basename"] = f"{PARTS_DIR}/{unit}/{shard[key]['basename']}"
                shards.append(shard)
        return {"version": 2, "shards": shards}

    def publish_index(self, index: dict) -> None:
        storage.write_text_atomic(self.index_uri, json.dumps(index, sort_keys=True))

    def publish_manifest(self, manifest: Manifest) -> None:
        """Write manifest.json: call last, after the root index (it marks the dataset complete)."""
        storage.write_text_atomic(self.manifest_uri, manifest.to_json())

    def publish_prime(self, data: bytes) -> bytes:
        """Create the codec prime only if absent, then return the one stored: of runs racing for
        this output exactly one writes it, and every run codes against that one."""
        create_if_absent(self.prime_uri, data)
        self._fs()[0].invalidate_cache()
        return storage.read_bytes(self.prime_uri)

    def publish_tokenizer_files(self, files: dict[str, bytes]) -> dict[str, str]:
        """Create each tokenizer file only if absent (of racing runs one writes it; a killed run's
        missing ones are written by the next), then the SHA-256 of each one stored, by name."""
        digests = {}
        for name in sorted(set(files) & set(TOKENIZER_FILES)):  # known names only: they become paths
            create_if_absent(self.tokenizer_uri(name), files[name])
            self._fs()[0].invalidate_cache()
            digests[name] = hex_digest(storage.read_bytes(self.tokenizer_uri(name)), 64)
        return digests

    # -- reading -------------------------------------------------------------------------------
    def tokenizer_json(self, manifest: Manifest) -> str:
        """The teacher's tokenizer.json as stored with this dataset, checked against the SHA-256
        the manifest records; IncompatibleDataset (no files recorded) or CorruptDataset naming
        the dataset and the file otherwise."""
        files = manifest.tokenizer.files
        where = f"dataset {redact_uri(self.uri)}"
        if not files:
            raise IncompatibleDataset(
                f"{where} was written before pdistill stored tokenizer files (its manifest has no "
                "tokenizer.files); re-run the pipeline with this pdistill to train a student with another tokenizer"
            )
        name = "tokenizer.json"
        uri = self.tokenizer_uri(name)
        self._fs()[0].invalidate_cache()
        if not storage.exists(uri):
            raise CorruptDataset(f"{where}: {TOKENIZER_DIR}/{name}, listed in its manifest, is missing")
        data = storage.read_bytes(uri)
        digest = hex_digest(data, 64)
        if digest != files[name]:
            raise CorruptDataset(
                f"{where}: {TOKENIZER_DIR}/{name} has SHA-256 {digest}, its manifest records {files[name]}"
            )
        return data.decode("utf-8")  # the bytes the pipeline stored, from a tokenizer that loaded

    def read_prime(self) -> bytes | None:
        """The codec prime's bytes, None when there is none."""
        self._fs()[0].invalidate_cache()
        return storage.read_bytes(self.prime_uri) if storage.exists(self.prime_uri) else None

    def stored_codec(self, manifest: Manifest):
        """The codec this dataset's manifest names, as its data was written, holding the dataset's
        prime when the codec has one (checked against the manifest's `prime_sha256`)."""
        codec = make_stored_codec(manifest.codec.name, manifest.codec.params)
        if not codec.needs_prime:
            return codec
        if codec.prime_sha256 is None:
            raise CorruptDataset(
                f"dataset {self.uri}: its manifest names codec {codec.name} without the prime_sha256 of its prime"
            )
        data = self.read_prime()
        if data is None:
            raise CorruptDataset(
                f"dataset {self.uri}: codec {codec.name} needs its prime {PRIME_NAME}, which is missing"
            )
        try:
            return codec.with_prime(Prime.from_bytes(data, where=self.prime_uri), where=self.prime_uri)
        except CodecError as e:
            raise CorruptDataset(str(e)) from None

    def read_manifest(self) -> Manifest:
        """The manifest, validated (`ManifestError` naming the field; FileNotFoundError if absent)."""
        self._fs()[0].invalidate_cache()  # it may have been written by another process
        return Manifest.from_json(storage.read_text(self.manifest_uri), where=self.manifest_uri)

    def read_index(self) -> dict:
        return json.loads(storage.read_text(self.index_uri))

    def stored_bytes(self, index: dict | None = None) -> int:
        """Bytes of the shard files the root index lists, as stored (compressed when zstd), plus
        the codec prime's where there is one: what storing the teacher signal costs."""
        shards = sum(int(stored_file(s)["bytes"]) for s in (index or self.read_index())["shards"])
        fs, path = self._fs()
        prime = self._at(PRIME_NAME)
        return shards + (int(fs.size(storage.fs_and_path(prime)[1])) if storage.exists(prime) else 0)

    def open_checked(self, require_manifest: bool = True) -> tuple[dict, Manifest | None]:
        """(root index, manifest or None): refuses an incomplete dataset (`IncompleteDataset`)."""
        has_index, has_manifest = storage.exists(self.index_uri), storage.exists(self.manifest_uri)
        missing = [n for n, ok in ((INDEX_NAME, has_index), (MANIFEST_NAME, has_manifest)) if not ok]
        if not has_index or (require_manifest and not has_manifest):
            raise IncompleteDataset(
                f"incomplete dataset {self.uri}: missing {' and '.join(missing)} (the pipeline writes the root "
                f"index, then {MANIFEST_NAME} last; the dataset is still being written, its job failed, or "
                "the URI is wrong)"
            )
        try:
            index = json.loads(storage.read_text(self.index_uri))
        except json.JSONDecodeError as e:
            raise IncompleteDataset(f"dataset {self.uri}: {INDEX_NAME} is not valid JSON ({e})") from None
        if not isinstance(index, dict) or not isinstance(index.get("shards"), list) or not index["shards"]:
            raise IncompleteDataset(f"dataset {self.uri}: {INDEX_NAME} lists no shards")
        check_names(index, PARTS_DIR, where=f"dataset {redact_uri(self.uri)}: {INDEX_NAME}")  # before any shard is read
        manifest = (
            Manifest.from_json(storage.read_text(self.manifest_uri), where=self.manifest_uri) if has_manifest else None
        )
        return index, manifest

    # -- integrity (the checks are schemas.integrity's) -----------------------------------------
    def verify(self, hashes: bool = True) -> Verification:
        """Is the dataset whole? `schemas.integrity.verify` (never raises for a broken dataset)."""
        return integrity.verify(self, hashes=hashes)

    def check_shards(self, index: dict) -> None:
        """Every shard the index lists exists with its recorded size and hash; raises
        IncompleteDataset / CorruptDataset naming the first bad shard (`schemas.integrity`)."""
        integrity.require_whole_shards(self, index)

    # -- samples -------------------------------------------------------------------------------
    @property
    def remote(self) -> str:
        """The URI as streaming's `remote` (an absolute path for a local dataset)."""
        return os.path.abspath(storage.local_path(self.uri)) if storage.is_local(self.uri) else self.uri

    def cache_key(self, identity: str) -> str:
        """This dataset's folder name inside a cache: its location and its content identity
        (`schemas.identity.dataset_identity`, manifest and root index with every shard's hash),
        so a dataset replaced at one location never meets the old one's cached shards or index
        (streaming reuses whatever a cache folder holds under a shard's name)."""
        return hex_digest(f"{self.remote}\n{identity}", 16)

    def stream_args(self, cache_dir: str, local: str | None = None, *, identity: str) -> dict:
        """`remote` and `local` for a `streaming.Stream` reading this dataset (content `identity`)
        through `cache_dir`, or through the stream's own `local` folder: either way in the
        sub-folder `cache_key(identity)`, never in the folder itself."""
        return {"remote": self.remote, "local": os.path.join(local or cache_dir, self.cache_key(identity))}
