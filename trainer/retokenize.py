"""One teacher sequence, re-tokenised with the student's tokenizer and aligned to it by bytes.

A stored sample holds the teacher's tokens, packed `[BOS] doc_0 SEP [BOS] doc_1 SEP ...` and cut
every seq_len tokens. To train a student with another tokenizer we spell the teacher's tokens as
bytes (`schemas.token_bytes`), encode each document piece with the student's tokenizer (never
across a separator: the student would merge what the pipeline keeps apart), and map the
teacher's separator / BOS to the student's. Both sides then live on one axis: text bytes, plus
one unit per separator / BOS (a distinct symbol on both sides, never bytes).

Teacher position i and student position a are an aligned pair when their NEXT tokens start at the
same offset of that axis (both predict "the text from byte b on"). Consecutive pairs delimit
chunks covered exactly by teacher tokens i_c+1..i_{c+1} and student tokens a_c+1..a_{c+1}: what
the cross-tokenizer losses compare. A sequence may begin and end inside a UTF-8 character (the
cut is by teacher tokens); only whole characters are re-tokenised, so no pair falls inside the
dropped bytes. SentencePiece's dummy prefix is not text: the teacher's is removed at each
document start (it cannot tell a text that began with a space, a known approximation that both
sides share), the student's from each piece it encodes.

Runs in DataLoader workers: numpy + tokenizers only, deterministic, picklable (rebuilt from the
two tokenizer.json texts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from schemas.token_bytes import TokenBytes, check_byte_coverage, token_bytes

IGNORE_INDEX = -100  # as trainer/data.py's collator
SEPARATOR_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")
BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>")


@dataclass(frozen=True)
class Retokenized:
    """One sample on the student's side, with its alignment to the teacher's positions."""

    ids: np.ndarray  # [S] int64 student tokens, padded with the student's pad id after n
    n: int  # real student tokens
    labels: np.ndarray  # [S] int64: ids[s + 1], IGNORE_INDEX where s + 1 >= n
    label_bytes: np.ndarray  # [S] int32: text bytes of labels[s]'s token (0 for -100 and separators)
    teacher_pos: np.ndarray  # [C] int32 ascending: teacher position of each aligned pair
    student_pos: np.ndarray  # [C] int32 ascending: student position of each aligned pair
    teacher_chunk: np.ndarray  # [T] int32: chunk c for teacher_pos[c] <= p < teacher_pos[c + 1], else -1
    student_chunk: np.ndarray  # [S] int32: the same on the student's positions


def _utf8_need(lead: int) -> int:
    """Bytes of the character a UTF-8 lead byte starts (1 for anything else: decoding refuses it)."""
    if lead >> 5 == 0b110:
        return 2
    if lead >> 4 == 0b1110:
        return 3
    if lead >> 3 == 0b11110:
        return 4
    return 1


def head_partial(b: bytes) -> int:
    """How many leading bytes are continuation bytes (a character begun before the cut)."""
    k = 0
    while k < len(b) and b[k] & 0xC0 == 0x80:
        k += 1
    return k


def tail_partial(b: bytes) -> int:
    """How many trailing bytes are an unfinished character (cut before its end)."""
    j = len(b) - 1
    while j >= 0 and len(b) - j <= 4 and b[j] & 0xC0 == 0x80:
        j -= 1
    if j < 0 or b[j] < 0x80:
        return 0
    return len(b) - j if len(b) - j < _utf8_need(b[j]) else 0


def chunk_of(pos: np.ndarray, size: int) -> np.ndarray:
    """[size] int32: c where pos[c] <= p < pos[c + 1], -1 before the first and from the last pair."""
    out = np.full(size, -1, dtype=np.int32)
    if len(pos) >= 2:
        p = np.arange(pos[0], pos[-1])
        out[pos[0] : pos[-1]] = np.searchsorted(pos, p, side="right") - 1
    return out


def _named_id(tok: Tokenizer, names: tuple[str, ...]) -> int | None:
    for name in names:
        i = tok.token_to_id(name)
        if i is not None:
            return int(i)
    return None


class Retokenizer:
    """Built once per (teacher, student) pair; `__call__` re-tokenises and aligns one sample."""

    def __init__(
        self,
        teacher_json: str,
        student_json: str,
        teacher_sep: int,
        teacher_bos: int | None,
        student_len: int,
        student_sep: int | None = None,
        student_bos: int | None = None,
        student_pad: int | None = None,
    ):
        self._args = (teacher_json, student_json, teacher_sep, teacher_bos, student_len, student_sep, student_bos)
        self._args += (student_pad,)
        self.teacher: TokenBytes = token_bytes(teacher_json)
        self.student: TokenBytes = token_bytes(student_json)
        check_byte_coverage(self.student)
        self.tok = Tokenizer.from_str(student_json)
        self.tok.encode_special_tokens = True  # a special token's string in a text is text (as the pipeline)
        if student_len < 2:
            raise ValueError(f"student_len must be >= 2, got {student_len}")
        vt, vs = len(self.teacher.table), len(self.student.table)
        for name, value, size in (("teacher_sep", teacher_sep, vt), ("teacher_bos", teacher_bos, vt)):
            if value is not None and not 0 <= value < size:
                raise ValueError(f"{name} {value} is outside the teacher's {size} ids")
        teacher_tok = Tokenizer.from_str(teacher_json)
        if student_sep is None:  # the teacher's separator's own string, else a usual end-of-text name
            student_sep = _named_id(self.tok, (teacher_tok.id_to_token(teacher_sep), *SEPARATOR_NAMES))
            if student_sep is None:
                raise ValueError(f"the student tokenizer has none of {SEPARATOR_NAMES}: set student_sep")
        if student_bos is None and teacher_bos is not None:
            found = _named_id(self.tok, (teacher_tok.id_to_token(teacher_bos), *BOS_NAMES))
            student_bos = student_sep if found is None else found
        pad = student_sep if student_pad is None else student_pad
        for name, value in (("student_sep", student_sep), ("student_bos", student_bos), ("student_pad", pad)):
            if value is not None and not 0 <= value < vs:
                raise ValueError(f"{name} {value} is outside the student's {vs} ids")
        self.t_sep, self.t_bos, self.s_len = int(teacher_sep), teacher_bos, int(student_len)
        self.s_sep, self.s_bos, self.s_pad = int(student_sep), student_bos, int(pad)
        special = np.zeros(vt, dtype=bool)
        special[list(self.teacher.special)] = True
        self.t_special = special

    def __getstate__(self):
        return self._args

    def __setstate__(self, args):
        self.__init__(*args)

    def __call__(self, tokens, n_tokens: int, doc_starts=(), where: str = "sample") -> Retokenized:
        """Re-tokenise one teacher sequence (`where` names it in errors)."""
        n_t = int(n_tokens)
        toks = np.asarray(tokens, dtype=np.int64)
        if not 0 < n_t <= len(toks):
            raise ValueError(f"{where}: n_tokens {n_t} is outside 1..{len(toks)}")
        toks = toks[:n_t]
        if toks.min() < 0 or toks.max() >= len(self.teacher.table):
            raise ValueError(f"{where}: a token id is outside the teacher's {len(self.teacher.table)} ids")
        ctrl = toks == self.t_sep
        if self.t_bos is not None:
            ctrl |= toks == self.t_bos
        stray = np.flatnonzero(self.t_special[toks] & ~ctrl)
        if len(stray):
            p = int(stray[0])
            raise ValueError(f"{where}: teacher position {p} holds special id {int(toks[p])}, not separator or BOS")
        blens = self.teacher.lengths[toks]
        blens[ctrl] = 0  # a separator / BOS is a symbol, never bytes
        raw_all = self.teacher.decode(toks, blens)
        rcum = np.concatenate([[0], np.cumsum(blens)]).tolist()
        strip = self._teacher_prefix(toks, ctrl, doc_starts)
        lens = blens + ctrl  # the axis: text bytes, one unit per symbol
        for p, k in strip.items():
            lens[p] -= k
        ends_t = np.cumsum(lens)

        # pieces of text between the control symbols, in order
        cuts = np.flatnonzero(ctrl)
        starts = np.concatenate([[0], cuts + 1]).tolist()
        stops = np.concatenate([cuts, [n_t]]).tolist()
        texts, head = [], 0
        for a, b in zip(starts, stops):
            if b <= a:
                texts.append("")
                continue
            raw = raw_all[rcum[a] + strip.get(a, 0) : rcum[b]]
            if a == 0:
                head = head_partial(raw)
                raw = raw[head:]
            if b == n_t:
                raw = raw[: len(raw) - tail_partial(raw)]
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: teacher tokens {a}..{b} are not UTF-8 text ({e.reason})") from None
        return self._student_side(texts, toks[cuts], head, ends_t, n_t, len(tokens), where)

    def _teacher_prefix(self, toks, ctrl, doc_starts) -> dict[int, int]:
        """Position -> bytes of the teacher's dummy prefix to drop: each document's first text token."""
        prefix = self.teacher.prefix
        strip: dict[int, int] = {}
        if not prefix:
            return strip
        for p in np.asarray(doc_starts, dtype=np.int64).reshape(-1).tolist():
            while p < len(toks) and ctrl[p] and toks[p] == self.t_bos:
                p += 1
            if p < len(toks) and not ctrl[p] and self.teacher.table[toks[p]].startswith(prefix):
                strip[p] = len(prefix)
        return strip

    def _student_side(self, texts, ctrl_ids, head, ends_t, n_t, t_size, where) -> Retokenized:
        enc = self.tok.encode_batch([t for t in texts if t], add_special_tokens=False)
        parts_ids, parts_lens, parts_text, e = [], [], [], 0
        s_prefix = len(self.student.prefix)
        for k, text in enumerate(texts):
            if k > 0:  # the control symbol before piece k
                c = int(ctrl_ids[k - 1])
                parts_ids.append(np.array([self.s_sep if c == self.t_sep else self.s_bos], dtype=np.int64))
                parts_lens.append(np.ones(1, dtype=np.int64))
                parts_text.append(np.zeros(1, dtype=bool))
            if not text:
                continue
            ids = np.asarray(enc[e].ids, dtype=np.int64)
            e += 1
            lens = self.student.lengths[ids]
            extra = int(lens.sum()) - len(text.encode("utf-8"))
            if extra and extra != s_prefix:
                raise ValueError(f"{where}: the student's tokens of piece {k} spell {extra} bytes more than its text")
            j = 0
            while extra > 0:  # the dummy prefix is in the first token(s), not the text
                take = min(extra, int(lens[j]))
                lens[j] -= take
                extra -= take
                j += 1
            parts_ids.append(ids)
            parts_lens.append(lens)
            parts_text.append(np.ones(len(ids), dtype=bool))
        ids_all = np.concatenate(parts_ids) if parts_ids else np.zeros(0, dtype=np.int64)
        lens_all = np.concatenate(parts_lens) if parts_lens else np.zeros(0, dtype=np.int64)
        S = self.s_len
        n = min(len(ids_all), S)
        ends_s = head + np.cumsum(lens_all[:n])
        ids = np.full(S, self.s_pad, dtype=np.int64)
        ids[:n] = ids_all[:n]
        labels = np.full(S, IGNORE_INDEX, dtype=np.int64)
        label_bytes = np.zeros(S, dtype=np.int32)
        if n > 1:
            labels[: n - 1] = ids_all[1:n]
            text = np.concatenate(parts_text) if parts_text else np.zeros(0, dtype=bool)
            label_bytes[: n - 1] = np.where(text[1:n], lens_all[1:n], 0)  # a symbol is no bytes
        _, tp, sp = np.intersect1d(ends_t[: n_t - 1], ends_s[: max(n - 1, 0)], return_indices=True)
        tp, sp = tp.astype(np.int32), sp.astype(np.int32)
        return Retokenized(ids, n, labels, label_bytes, tp, sp, chunk_of(tp, t_size), chunk_of(sp, S))


def stack_pairs(records: list[Retokenized], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[B, C] teacher_pos and student_pos of a batch, filled with -1 past each record's pairs."""
    width = max((len(r.teacher_pos) for r in records), default=0) if width is None else width
    tp = np.full((len(records), width), -1, dtype=np.int32)
    sp = np.full((len(records), width), -1, dtype=np.int32)
    for b, r in enumerate(records):
        c = min(len(r.teacher_pos), width)
        tp[b, :c], sp[b, :c] = r.teacher_pos[:c], r.student_pos[:c]
    return tp, sp
