"""Tokenize and pack: documents -> fixed-length sequences of `seq_len` tokens, boundaries kept.

Layout of the token stream of one work unit, in file order:
    [BOS] doc_0 SEP [BOS] doc_1 SEP ... [BOS] doc_n SEP
(BOS only with add_bos; the separator, by default the tokenizer's EOS, ends every document, so
the teacher also scores the end of each document. A document's own text never yields a control
id: special-token strings in it are encoded as text, `encode_texts`.) The stream is cut every `seq_len` tokens;
a document may continue into the next sequence. `doc_starts` lists the offsets inside a
sequence where a document begins (its BOS, or its first token).

Trailing policy "pad": the unit's last partial sequence is padded with the separator id up to
`seq_len`; `n_tokens` says how many positions are real, and the teacher signal on the padding
is empty (count 0). Nothing is carried across units, so every unit packs on its own and the
result depends only on the unit's content: deterministic whatever runs it, in any order.
Attention is plain causal over the packed sequence (as in pre-training), so right padding never
changes the teacher output of a real position.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines import faults
from pipelines.readers import Doc, dead_letter, letter_file, read_unit
from pipelines.sources import Unit
from schemas import sample_id, storage
from schemas.errors import ConfigError

TOKENIZE_CHUNK = 64  # documents per tokenizer call (the fast tokenizers batch in Rust)
TEXT_ENCODING = "special-token strings in a text encoded as text"  # what `encode_texts` does (in the manifest)


@dataclass
class Packed:
    unit: str
    index: int  # position of the sequence inside its unit
    sample_id: int
    tokens: np.ndarray  # [seq_len] int64 (padding after n_tokens)
    n_tokens: int
    doc_starts: np.ndarray  # uint32 offsets where a document begins


@functools.lru_cache(maxsize=4)
def load_tokenizer(uri: str):
    """A Hugging Face tokenizer from a local folder or an object-store URI (cached per process)."""
    from transformers import AutoTokenizer  # noqa: PLC0415 (late: transformers is heavy)

    try:
        tok = AutoTokenizer.from_pretrained(storage.fetch_dir(uri))
    except Exception as e:
        raise ConfigError(f"tokenizer {uri}: cannot load ({type(e).__name__}: {e})") from None
    tok.model_max_length = 1 << 60  # we cut sequences ourselves; silence the long-input warning
    return tok


def resolve_separator(tokenizer, separator, where: str = "tokenizer") -> int:
    """Separator id from None (the EOS), an id, or a token string; validated against the tokenizer."""
    n = len(tokenizer)
    if separator is None:
        sep = tokenizer.eos_token_id
        if sep is None:
            raise ConfigError(f"{where} has no EOS token: set `separator` to a token id or string")
        return int(sep)
    if isinstance(separator, str) and separator.lstrip("-").isdigit():
        separator = int(separator)
    if isinstance(separator, int):
        if not 0 <= separator < n:
            raise ConfigError(f"separator id {separator} is outside the tokenizer's {n} ids")
        return separator
    sep = tokenizer.convert_tokens_to_ids(separator)
    if sep is None or (sep == tokenizer.unk_token_id and separator != tokenizer.unk_token):
        raise ConfigError(f"separator {separator!r} is not a token of the {where}")
    return int(sep)


def resolve_bos(tokenizer, add_bos: bool, where: str = "tokenizer") -> int | None:
    if not add_bos:
        return None
    if tokenizer.bos_token_id is None:
        raise ConfigError(f"add_bos is set but the {where} has no BOS token")
    return int(tokenizer.bos_token_id)


class Packer:
    """Cuts one unit's token stream into seq_len sequences (see the module docstring)."""

    def __init__(self, seq_len: int, sep_id: int, bos_id: int | None = None, pad_id: int | None = None):
        self.seq_len, self.sep_id, self.bos_id = seq_len, sep_id, bos_id
        self.pad_id = sep_id if pad_id is None else pad_id
        self.buf: list[int] = []
        self.starts: list[int] = []  # document starts, offsets into buf

    def add(self, ids: list[int]) -> list[tuple[np.ndarray, int, np.ndarray]]:
        """Append one document; return the sequences it completed as (tokens, n_tokens, doc_starts)."""
        self.starts.append(len(self.buf))
        if self.bos_id is not None:
            self.buf.append(self.bos_id)
        self.buf.extend(ids)
        self.buf.append(self.sep_id)
        out, cut = [], 0
        while len(self.buf) - cut >= self.seq_len:
            out.append(self._emit(cut, self.seq_len))
            cut += self.seq_len
        if cut:
            self.buf = self.buf[cut:]
            self.starts = [s - cut for s in self.starts if s >= cut]
        return out

    def _emit(self, cut: int, n: int) -> tuple[np.ndarray, int, np.ndarray]:
        tokens = np.full(self.seq_len, self.pad_id, dtype=np.int64)
        tokens[:n] = self.buf[cut : cut + n]
        starts = np.asarray([s - cut for s in self.starts if cut <= s < cut + n], dtype=np.uint32)
        return tokens, n, starts

    def finish(self) -> list[tuple[np.ndarray, int, np.ndarray]]:
        """The trailing partial sequence, padded (policy "pad"), if any tokens are left."""
        if not self.buf:
            return []
        out = [self._emit(0, len(self.buf))]
        self.buf, self.starts = [], []
        return out


def encode_texts(texts, tokenizer) -> list[list[int]]:
    """Token ids of document texts, encoded as text: no special tokens added, and a special token's
    string inside a text (`<|endoftext|>`, `<|im_start|>`: a document quoting a chat log or code) is
    encoded as the characters it is, not as its control id, so no document ends or restarts in its
    middle. The separator and BOS this pipeline inserts (`Packer`) are the only control ids.
    `pdistill plan` counts tokens with this same call."""
    return tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]


def tokenize_documents(texts, tokenizer) -> list[list[int] | Exception]:
    """Token ids of each text (`encode_texts`), or the exception the tokenizer raised on it. One
    batched call; when it fails (a poison pill anywhere in the batch), each text again on its own,
    so one bad document costs itself and not its neighbours, in the same order (deterministic)."""
    try:
        return [list(ids) for ids in encode_texts(texts, tokenizer)]
    except Exception:
        pass
    out: list[list[int] | Exception] = []
    for text in texts:
        try:
            out.append(list(encode_texts([text], tokenizer)[0]))
        except Exception as e:
            out.append(e)
    return out


def pack_documents(
    texts, tokenizer, packer: Packer, unit: str, source_fp: str, first_index: int = 0, rejected: list | None = None
):
    """Tokenize a chunk of documents and return the Packed sequences they complete. A document the
    tokenizer cannot take is not packed: (its index in `texts`, the error) goes to `rejected`
    (raised when no list is given)."""
    if not texts:
        return []
    out = []
    for j, doc in enumerate(tokenize_documents(texts, tokenizer)):
        if isinstance(doc, Exception):
            if rejected is None:
                raise doc
            rejected.append((j, doc))
            continue
        for tokens, n, starts in packer.add(doc):
            i = first_index + len(out)
            out.append(Packed(unit, i, sample_id(source_fp, unit, i), tokens, n, starts))
    return out


def finish_packing(packer: Packer, unit: str, source_fp: str, first_index: int):
    return [
        Packed(unit, first_index + j, sample_id(source_fp, unit, first_index + j), t, n, s)
        for j, (t, n, s) in enumerate(packer.finish())
    ]


class ReadAndPack(beam.DoFn):
    """A work unit -> its Packed sequences (main output) and one summary on the "meta" output.

    The summary carries the unit's counts, its dead letters and the reasons its file was not read
    whole (`incomplete`), so the sink can publish them with the part and the manifest can
    reconcile documents == packed + dead letters, per source and in total. A dead letter counts
    for the documents it stands for (its `documents` field), not for one.
    """

    META = "meta"

    def __init__(
        self,
        tokenizer_uri: str,
        text_column: str,
        seq_len: int,
        sep_id: int,
        bos_id: int | None,
        source_fp: str,
        metric_prefix: str = "",
    ):
        """`metric_prefix` names its counters apart (the codec prime re-reads the first units: "prime_")."""
        self.tokenizer_uri, self.text_column, self.seq_len = tokenizer_uri, text_column, seq_len
        self.sep_id, self.bos_id, self.source_fp = sep_id, bos_id, source_fp
        self.metric_prefix = metric_prefix

    def setup(self):
        self.tokenizer = load_tokenizer(self.tokenizer_uri)
        self.m = {
            k: Metrics.counter("pdistill", self.metric_prefix + k)
            for k in ("documents", "packed_documents", "dead_letters", "sequences", "tokens", "units_read")
        }

    def process(self, unit: Unit):
        faults.maybe_fail("read", unit.name)
        packer = Packer(self.seq_len, self.sep_id, self.bos_id)
        stats = {"documents": 0, "packed_documents": 0, "dead_letters": 0, "sequences": 0, "tokens": 0}
        dead, docs, incomplete = [], [], []

        def reject(item: dict):
            stats["dead_letters"] += item["documents"]
            dead.append(item)
            if item.get("incomplete"):
                incomplete.append(item["reason"])

        def flush(final: bool):
            rejected = []
            out = pack_documents(
                [d.text for d in docs], self.tokenizer, packer, unit.name, self.source_fp, stats["sequences"], rejected
            )
            for j, e in rejected:
                reject(
                    dead_letter(
                        unit,
                        docs[j].position,
                        "tokenizer_error",
                        f"the tokenizer cannot take this document: {type(e).__name__}: {e}",
                        docs[j].text,
                    )
                )
            stats["packed_documents"] += len(docs) - len(rejected)
            docs.clear()
            if final:
                out += finish_packing(packer, unit.name, self.source_fp, stats["sequences"] + len(out))
            stats["sequences"] += len(out)
            stats["tokens"] += sum(p.n_tokens for p in out)
            return out

        for item in read_unit(unit, self.text_column):
            if isinstance(item, Doc):
                stats["documents"] += 1
                docs.append(item)
                if len(docs) >= TOKENIZE_CHUNK:
                    yield from flush(False)
            else:
                stats["documents"] += item["documents"]
                reject(item)
        yield from flush(True)
        for k, v in stats.items():
            self.m[k].inc(v)
        self.m["units_read"].inc()
        summary = {
            **stats,
            "dead": dead,
            "source": unit.source,
            "file": letter_file(unit.uri),
            "incomplete": incomplete,
        }
        yield beam.pvalue.TaggedOutput(self.META, (unit.name, ("m", summary)))
