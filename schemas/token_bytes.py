"""The exact bytes each token id stands for: what cross-tokenizer alignment is built on.

Two tokenizers can only be aligned if each token is a known run of the text's UTF-8 bytes. We
read that table off the tokenizer model (tokenizer.json) for the two families that have it:
  * byte-level BPE (GPT-2, Llama 3, SmolLM): a ByteLevel pre-tokenizer / decoder; each piece's
    characters are bytes through GPT-2's `bytes_to_unicode` map, inverted here;
  * SentencePiece-style BPE / Unigram with byte fallback (Llama 2, Mistral, Gemma): "▁" is a
    space, `<0xNN>` is byte NN, any other piece is its UTF-8.
Special tokens stand for no bytes (b""). SentencePiece adds a dummy "▁" before a text's first
token; that space is not the text's: recorded as `prefix` (and whether it is skipped when the
text already starts with a space, `prefix_if_absent`).

The table is then checked against the tokenizer itself on fixed probes (multi-byte UTF-8, CJK,
emoji, combining marks, whitespace runs, leading spaces): the tokens' bytes must spell the text
and `decode` must give it back. A normaliser that changes bytes (NFKC, lowercasing, stripping)
fails that check and is refused, naming the probe and what it became: the stored text would not
be the teacher's text. Any other kind of tokenizer is refused (`UnfitTokenizer`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from schemas.errors import SchemaError

NO_BYTE = 256  # first_byte of an id that stands for no bytes
PROBES = (
    "Hello, world.",
    "The quick brown fox jumps over the lazy dog 0123456789!?",
    "ﬁ ligature Ⅻ ＡＢＣ",
    "café naïve résumé",
    "e\u0301 combining a\u0308",
    "中文字符和日本語のテキスト",
    "emoji 😀🚀 👩‍👩‍👧 done",
    "  two leading spaces",
    " one leading space",
    "tabs\tand\t\ttabs",
    "line\nbreaks\n\n\nand   runs    of spaces  ",
    "\n leading newline",
    "MiXeD CaSe UPPER",
)
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class UnfitTokenizer(SchemaError):
    """A tokenizer whose tokens are not known byte runs of the text (cannot be aligned by bytes)."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


@dataclass(frozen=True)
class TokenBytes:
    """Per id: the bytes it stands for; which ids are special; the tokenizer's start-of-text rule."""

    table: tuple[bytes, ...]
    special: frozenset[int]
    first_byte: np.ndarray  # [V] int16: 0..255, NO_BYTE for ids with no bytes
    lengths: np.ndarray  # [V] int64 byte length of each id
    blob: np.ndarray  # [sum of lengths] uint8: the table's bytes end to end (vectorised decode)
    starts: np.ndarray  # [V] int64 offset of each id's bytes in blob
    kind: str  # "byte_level" | "byte_fallback"
    prefix: bytes = b""  # added before a text's first token, not part of the text (SentencePiece's dummy " ")
    prefix_if_absent: bool = False  # the prefix is skipped when the text already starts with it

    def byte_ends(self, ids) -> np.ndarray:
        """Cumulative byte ends of `ids` (int64), as the tokens spell them (prefix included)."""
        return np.cumsum(self.lengths[np.asarray(ids, dtype=np.int64)])

    def decode(self, ids, lengths: np.ndarray | None = None) -> bytes:
        """The bytes `ids` spell, end to end; `lengths` (per id of `ids`) may shorten some to 0."""
        ids = np.asarray(ids, dtype=np.int64)
        lens = self.lengths[ids] if lengths is None else lengths
        ends = np.cumsum(lens)
        # byte k of the output comes from blob[starts[id] + (k - start of its token in the output)]
        gather = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(self.starts[ids] - (ends - lens), lens)
        return self.blob[gather].tobytes()

    def spell(self, text: str, ids) -> bytes:
        """The text's bytes as `ids` spell them, with the start-of-text prefix removed (if any)."""
        got = self.decode(ids)
        if self.prefix and got.startswith(self.prefix):
            if not (self.prefix_if_absent and text.encode("utf-8").startswith(self.prefix)):
                got = got[len(self.prefix) :]
        return got


def _byte_level_piece(piece: str) -> bytes:
    try:
        return bytes(_UNICODE_TO_BYTE[c] for c in piece)
    except KeyError as e:
        raise UnfitTokenizer(f"byte-level piece {piece!r} holds {e.args[0]!r}, outside the byte alphabet") from None


def _fallback_piece(piece: str, space: str) -> bytes:
    m = _BYTE_PIECE.match(piece)
    return bytes([int(m.group(1), 16)]) if m else piece.replace(space, " ").encode("utf-8")


def _walk(node) -> list[dict]:
    """A pre-tokenizer / decoder / normaliser node and the nodes of its Sequence, flattened."""
    if not isinstance(node, dict):
        return []
    out = [node]
    for key in ("pretokenizers", "decoders", "normalizers"):
        for child in node.get(key) or []:
            out.extend(_walk(child))
    return out


def _kind(spec: dict) -> tuple[str, str]:
    """("byte_level" | "byte_fallback", the SentencePiece space character) or UnfitTokenizer."""
    model = spec.get("model") or {}
    mtype = model.get("type")
    types = {n.get("type") for part in ("pre_tokenizer", "decoder") for n in _walk(spec.get(part))}
    if mtype == "BPE" and "ByteLevel" in types:
        return "byte_level", ""
    if mtype in ("BPE", "Unigram") and model.get("byte_fallback"):
        space = "▁"
        for n in _walk(spec.get("pre_tokenizer")) + _walk(spec.get("decoder")):
            if n.get("type") == "Metaspace":
                space = n.get("replacement", space)
        return "byte_fallback", space
    if mtype in ("BPE", "Unigram"):
        raise UnfitTokenizer(
            f"{mtype} tokenizer is neither byte-level nor byte-fallback: some text has no token (unknown pieces)"
        )
    raise UnfitTokenizer(f"tokenizer model {mtype!r} is not byte-level or byte-fallback BPE")


def _vocab(spec: dict) -> dict[str, int]:
    vocab = spec["model"]["vocab"]
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        return {p: i for i, (p, _) in enumerate(vocab)}
    return dict(vocab)


def _build(tokenizer_json: str) -> TokenBytes:
    try:
        spec = json.loads(tokenizer_json)
        tok = Tokenizer.from_str(tokenizer_json)
    except Exception as e:
        raise UnfitTokenizer(f"tokenizer.json does not load ({type(e).__name__}: {e})") from None
    kind, space = _kind(spec)
    size = tok.get_vocab_size(with_added_tokens=True)
    table: list[bytes] = [b""] * size
    for piece, i in _vocab(spec).items():
        if i < size:
            table[i] = _byte_level_piece(piece) if kind == "byte_level" else _fallback_piece(piece, space)
    special: set[int] = set()
    for added in spec.get("added_tokens") or []:
        i = int(added["id"])
        if added.get("special", False):
            table[i] = b""
            special.add(i)
        else:
            table[i] = added["content"].encode("utf-8")
    lengths = np.fromiter((len(b) for b in table), dtype=np.int64, count=size)
    first = np.fromiter((b[0] if b else NO_BYTE for b in table), dtype=np.int16, count=size)
    blob = np.frombuffer(b"".join(table), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    prefix, if_absent = _prefix_rule(tok, table)
    tb = TokenBytes(tuple(table), frozenset(special), first, lengths, blob, starts, kind, prefix, if_absent)
    _check_probes(tok, tb, spec)
    return tb


def _encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def _prefix_rule(tok: Tokenizer, table: list[bytes]) -> tuple[bytes, bool]:
    """What the tokenizer puts before a text's first token (measured, not read off the config)."""
    got = b"".join(table[i] for i in _encode(tok, "a"))
    if got == b"a":
        return b"", False
    if len(got) > 1 and got.endswith(b"a"):
        prefix = got[:-1]
        spaced = b"".join(table[i] for i in _encode(tok, prefix.decode("utf-8", "replace") + "a"))
        return prefix, spaced == prefix + b"a"
    raise UnfitTokenizer(f"the tokens of 'a' spell {got!r}")


def _check_probes(tok: Tokenizer, tb: TokenBytes, spec: dict) -> None:
    for probe in PROBES:
        ids = _encode(tok, probe)
        spelled = tb.spell(probe, ids)
        if spelled != probe.encode("utf-8"):
            if spec.get("normalizer") is not None:
                normal = tok.normalizer.normalize_str(probe)
                plain = normal.replace("▁", " ") if tb.kind == "byte_fallback" else normal
                if plain not in (probe, tb.prefix.decode("utf-8", "replace") + probe):
                    shown = (repr, repr) if repr(plain) != repr(probe) else (ascii, ascii)
                    raise UnfitTokenizer(f"normaliser changes {shown[0](probe)} to {shown[1](plain)}")
            text = spelled.decode("utf-8", "backslashreplace")
            raise UnfitTokenizer(f"the tokens of probe {probe!r} spell {text!r}, not the text")
        decoded = tok.decode(ids, skip_special_tokens=False)
        expect = probe.removeprefix(tb.prefix.decode("utf-8", "replace")) if tb.prefix else probe
        if decoded not in (probe, expect):
            raise UnfitTokenizer(f"the tokenizer decodes probe {probe!r} as {decoded!r}")


_CACHE: dict[str, TokenBytes] = {}


def token_bytes(tokenizer_json: str) -> TokenBytes:
    """The checked byte table of a tokenizer (its tokenizer.json text); cached per content."""
    key = hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()
    if key not in _CACHE:
        _CACHE[key] = _build(tokenizer_json)
    return _CACHE[key]


def check_byte_coverage(tb: TokenBytes, where: str = "student tokenizer") -> None:
    """A student must be able to spell any text: a single-byte token for each of the 256 bytes."""
    have = {b[0] for i, b in enumerate(tb.table) if len(b) == 1 and i not in tb.special}
    missing = [b for b in range(256) if b not in have]
    if missing:
        raise UnfitTokenizer(
            f"{where} cannot encode byte 0x{missing[0]:02X} ({len(missing)} of 256 bytes have no token): "
            "it needs byte-level BPE or byte fallback"
        )
