"""`manifest.json`: the dataset's commit marker and its identity card.

Written last by the pipeline (`schemas.dataset_dir.DatasetDir` owns where); a dataset without it
(or without its root `index.json`) is incomplete and the trainer refuses it. Everything needed to refuse a wrong pairing is here.
Loading validates every field and names the one at fault.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from schemas.errors import IncompatibleDataset, ManifestError
from schemas.layout import TOKENIZER_FILES

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Teacher:
    id: str  # URI or name the teacher was loaded from
    revision: str  # fingerprint of the weights/config (sha256) or a VCS revision


@dataclass(frozen=True)
class Tokenizer:
    fingerprint: str
    separator_id: int  # token placed between documents
    add_bos: bool  # whether each document starts with the tokenizer's BOS
    # SHA-256 of each tokenizer file stored under <dataset>/tokenizer/ (None: written before pdistill stored them)
    files: dict[str, str] | None = None


@dataclass(frozen=True)
class Truncation:
    method: str  # "top_p_k" | "sample"
    top_p: float
    top_k: int  # max kept entries per position (for "sample": the number of draws)
    temperature: float = 1.0  # always 1: temperature is a training-time choice


@dataclass(frozen=True)
class Codec:
    name: str
    params: dict


@dataclass(frozen=True)
class NextLogp:
    """The `teacher_next_logp` column's format (`schemas.next_logp`)."""

    codec: str  # "nl1"
    step: float  # quantisation step in nats (the round-trip error is at most step / 2)


@dataclass(frozen=True)
class Source:
    uri: str  # redacted (schemas.redact): no credentials are persisted
    fingerprint: str
    # what the pipeline read from this file (None in manifests written before these were recorded)
    documents: int | None = None
    packed_documents: int | None = None
    dead_letters: int | None = None
    complete: bool = True  # False: the file was not read to its end (truncated, corrupt, unreadable)
    problem: str = ""  # why it is incomplete (the first reason; its dead letters hold all of them)


@dataclass(frozen=True)
class Counts:
    documents: int  # documents read from the sources
    packed_documents: int  # documents that went into sequences
    dead_letters: int  # documents sent to dead_letter/ with a reason (the sum of its records' `documents`)
    sequences: int
    tokens: int  # real (non-padding) tokens in sequences
    units: int
    incomplete_files: int = 0  # input files not read to their end: documents past the break are not counted
    # sequences the teacher could not score (non-finite logits): not written; dead_letter/ holds their tokens
    unscored_sequences: int = 0
    unscored_tokens: int = 0

    def reconciles(self) -> bool:
        return self.documents == self.packed_documents + self.dead_letters


@dataclass(frozen=True)
class Manifest:
    teacher: Teacher
    tokenizer: Tokenizer
    vocab_size: int
    seq_len: int
    truncation: Truncation
    codec: Codec
    sources: list[Source]
    source_fingerprint: str
    settings_fingerprint: str  # hash of every setting that shapes the output
    counts: Counts
    schema_version: int = SCHEMA_VERSION
    created_by: str = "pdistill"
    extra: dict = field(default_factory=dict)
    next_logp: NextLogp | None = None  # None: the samples have no teacher_next_logp column (older datasets)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "manifest.json") -> Manifest:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: not valid JSON ({e})") from None
        return parse_manifest(raw, where)


class Opt:
    """A field that older manifests (same schema version) do not have; its dataclass default applies."""

    def __init__(self, spec):
        self.spec = spec


_SPEC = {
    "schema_version": int,
    "created_by": str,
    "teacher": {"id": str, "revision": str},
    "tokenizer": {"fingerprint": str, "separator_id": int, "add_bos": bool, "files": Opt((dict, type(None)))},
    "vocab_size": int,
    "seq_len": int,
    "truncation": {"method": str, "top_p": float, "top_k": int, "temperature": float},
    "codec": {"name": str, "params": dict},
    "sources": [
        {
            "uri": str,
            "fingerprint": str,
            "documents": Opt((int, type(None))),
            "packed_documents": Opt((int, type(None))),
            "dead_letters": Opt((int, type(None))),
            "complete": Opt(bool),
            "problem": Opt(str),
        }
    ],
    "source_fingerprint": str,
    "settings_fingerprint": str,
    "counts": {
        **{k: int for k in ("documents", "packed_documents", "dead_letters", "sequences", "tokens", "units")},
        "incomplete_files": Opt(int),
        "unscored_sequences": Opt(int),
        "unscored_tokens": Opt(int),
    },
    "extra": dict,
    "next_logp": Opt(({"codec": str, "step": float}, type(None))),
}
NEXT_LOGP_CODECS = ("nl1",)


def _check(value, spec, path: str, where: str):
    if isinstance(spec, Opt):
        spec = spec.spec
    if isinstance(spec, tuple):  # one of several types (e.g. int or None; an object or None)
        objects = [one for one in spec if isinstance(one, dict)]
        if objects and isinstance(value, dict):  # its own field errors, not "must be object or null"
            return _check(value, objects[0], path, where)
        for one in spec:
            try:
                return _check(value, one, path, where)
            except ManifestError:
                pass
        names = " or ".join(
            "null" if t is type(None) else "object" if isinstance(t, dict) else t.__name__ for t in spec
        )
        raise ManifestError(f"{where}: field '{path}' must be {names}, got {type(value).__name__} ({value!r})")
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: field '{path}' must be an object, got {type(value).__name__}")
        for key, sub in spec.items():
            if key not in value:
                if isinstance(sub, Opt):
                    continue
                raise ManifestError(f"{where}: missing field '{path + '.' if path else ''}{key}'")
            _check(value[key], sub, f"{path + '.' if path else ''}{key}", where)
        unknown = sorted(set(value) - set(spec))
        if unknown:
            raise ManifestError(f"{where}: unknown field '{path + '.' if path else ''}{unknown[0]}'")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise ManifestError(f"{where}: field '{path}' must be a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check(item, spec[0], f"{path}[{i}]", where)
    else:
        ok = isinstance(value, spec) and not (spec is int and isinstance(value, bool))
        if spec is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise ManifestError(
                f"{where}: field '{path}' must be {spec.__name__}, got {type(value).__name__} ({value!r})"
            )


def parse_manifest(raw: dict, where: str = "manifest.json") -> Manifest:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: top level must be an object")
    version = raw.get("schema_version")
    if version is None:
        raise ManifestError(f"{where}: missing field 'schema_version'")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: field 'schema_version' is {version!r}; this pdistill reads version {SCHEMA_VERSION} only"
        )
    _check(raw, _SPEC, "", where)
    tr = raw["truncation"]
    if tr["method"] not in ("top_p_k", "sample"):
        raise ManifestError(f"{where}: field 'truncation.method' must be 'top_p_k' or 'sample', got {tr['method']!r}")
    if not 0.0 < tr["top_p"] <= 1.0:
        raise ManifestError(f"{where}: field 'truncation.top_p' must be in (0, 1], got {tr['top_p']}")
    for name in ("vocab_size", "seq_len"):
        if raw[name] < 1:
            raise ManifestError(f"{where}: field '{name}' must be positive, got {raw[name]}")
    files = raw["tokenizer"].get("files")
    if files is not None:
        _check_tokenizer_files(files, where)
    nl = raw.get("next_logp")
    if nl is not None and (nl["codec"] not in NEXT_LOGP_CODECS or not 0.0 < nl["step"] <= 1.0):
        raise ManifestError(
            f"{where}: field 'next_logp' must name codec {' or '.join(NEXT_LOGP_CODECS)} with a step in (0, 1], "
            f"got {nl!r} (a newer pdistill's dataset?)"
        )
    return Manifest(
        teacher=Teacher(**raw["teacher"]),
        tokenizer=Tokenizer(**raw["tokenizer"]),
        vocab_size=raw["vocab_size"],
        seq_len=raw["seq_len"],
        truncation=Truncation(**{**tr, "top_p": float(tr["top_p"]), "temperature": float(tr["temperature"])}),
        codec=Codec(**raw["codec"]),
        sources=[Source(**s) for s in raw["sources"]],
        source_fingerprint=raw["source_fingerprint"],
        settings_fingerprint=raw["settings_fingerprint"],
        counts=Counts(**raw["counts"]),
        schema_version=version,
        created_by=raw["created_by"],
        extra=raw["extra"],
        next_logp=None if nl is None else NextLogp(codec=nl["codec"], step=float(nl["step"])),
    )


def _check_tokenizer_files(files: dict, where: str) -> None:
    """Known file names only (they become paths under the dataset), each with a SHA-256 in hex."""
    if "tokenizer.json" not in files:
        raise ManifestError(f"{where}: field 'tokenizer.files' must list tokenizer.json")
    for name, digest in files.items():
        if name not in TOKENIZER_FILES:
            raise ManifestError(f"{where}: field 'tokenizer.files' names {name!r}; known: {', '.join(TOKENIZER_FILES)}")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise ManifestError(f"{where}: field 'tokenizer.files.{name}' must be a SHA-256 in hex, got {digest!r}")


def check_compatible(
    manifest: Manifest,
    *,
    vocab_size: int | None = None,
    tokenizer_fingerprint: str | None = None,
    seq_len: int | None = None,
    where: str = "dataset",
) -> None:
    """Refuse a dataset that does not fit the student (vocab, tokenizer, sequence length).

    The vocabularies must be equal, not merely cover each other: a larger student has output rows
    no teacher id and no token ever trains, and its KD tail would spread over ids that do not exist.
    """
    if vocab_size is not None and vocab_size != manifest.vocab_size:
        raise IncompatibleDataset(
            f"{where}: teacher vocab_size is {manifest.vocab_size} but the student's is {vocab_size}; "
            "they must be equal (the student's vocabulary is the teacher's: set the student's vocab_size "
            f"to {manifest.vocab_size})"
        )
    if tokenizer_fingerprint is not None and tokenizer_fingerprint != manifest.tokenizer.fingerprint:
        raise IncompatibleDataset(
            f"{where}: tokenizer fingerprint {manifest.tokenizer.fingerprint} does not match the student's "
            f"tokenizer ({tokenizer_fingerprint}); distillation needs the teacher's tokenizer"
        )
    if seq_len is not None and seq_len != manifest.seq_len:
        raise IncompatibleDataset(f"{where}: seq_len is {manifest.seq_len}, the run asks for {seq_len}")
