"""The teacher's next-token distribution moved onto the student's vocabulary (method `first_token`).

At an aligned pair (`trainer.retokenize`) both models predict the text from the same byte on. A
teacher token t stands for bytes that the student spells starting with one token s = first(t):
the student's next token is s whenever the teacher's is t (up to how the two tokenisations cut the
rest). So the teacher's distribution over its kept ids gives a distribution over the student's
first tokens, P(s) = sum of P(t) over the kept t with first(t) = s, which the student's own
next-token distribution at that position is trained against with the same-tokenizer KD machinery
(every kind, support, tau; the fused head; `trainer.losses`). With the teacher's own tokenizer
first() is the identity and this IS same-tokenizer KD (a test).

first(t) is the student token with exactly t's bytes when there is one; else the student
tokenizer's first token of t's text (its bytes decoded; a token that is not whole UTF-8 uses its
longest whole prefix), checked to be a byte prefix of t; when it is not
(a dummy-prefix rule, a merge the standalone text allows), the longest student token that is a
prefix of t's bytes. A teacher id without bytes maps to the student's separator / BOS through
``pairs``; any other byteless id maps nowhere and its mass joins the teacher's dropped tail.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from schemas.kept import PAD_LOG_TAIL, KeptEntries
from schemas.token_bytes import TokenBytes


def _whole_utf8_prefix(b: bytes) -> str:
    for cut in range(len(b), max(len(b) - 4, -1), -1):
        try:
            return b[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return ""


def first_token_map(
    teacher: TokenBytes, student: TokenBytes, student_tok: Tokenizer, pairs: dict[int, int]
) -> np.ndarray:
    """[V_t] int64: the student id each teacher id's bytes begin with (-1: none; see the module docstring)."""
    by_bytes: dict[bytes, int] = {}
    for i, b in enumerate(student.table):
        if b and i not in student.special:
            by_bytes.setdefault(b, i)
    longest = max((len(b) for b in by_bytes), default=0)
    out = np.full(len(teacher.table), -1, dtype=np.int64)
    ids = [i for i, b in enumerate(teacher.table) if b and i not in teacher.special]
    texts = [_whole_utf8_prefix(teacher.table[i]) for i in ids]
    encoded = student_tok.encode_batch(texts, add_special_tokens=False) if texts else []
    for i, enc in zip(ids, encoded):
        b = teacher.table[i]
        if b in by_bytes:  # the same bytes are one student token: that token
            out[i] = by_bytes[b]
            continue
        first = next((s for s in enc.ids if student.table[s]), None)
        if first is not None and b.startswith(student.table[first]):
            out[i] = first
            continue
        for n in range(min(len(b), longest), 0, -1):  # longest student token that is a prefix
            s = by_bytes.get(b[:n])
            if s is not None:
                out[i] = s
                break
    for t, s in pairs.items():
        out[t] = s
    return out


def project_kept(
    kept: KeptEntries, first: np.ndarray, teacher_pos: np.ndarray, student_pos: np.ndarray, student_len: int
) -> KeptEntries:
    """The teacher's kept entries at each aligned teacher position, mapped by ``first`` onto the
    student's ids (entries that land on one id merged: probabilities added) and placed at the
    paired student position; every other student position keeps nothing. Mass that maps nowhere
    joins the dropped tail: t' = t + (1 - t) m, the rest renormalised over what is kept."""
    tp = np.asarray(teacher_pos, dtype=np.int64)
    sp = np.asarray(student_pos, dtype=np.int64)
    offsets = kept.offsets()
    cnt = kept.counts[tp].astype(np.int64)
    idx = np.repeat(offsets[tp] - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()))
    pair = np.repeat(np.arange(len(tp)), cnt)
    sid = first[kept.ids[idx]]
    lp = kept.logp[idx].astype(np.float64)
    ok = sid >= 0
    # the kept set's own distribution (the stored log-probs are renormalised over it; be exact anyway)
    log_z = np.full(len(tp), -np.inf)
    np.logaddexp.at(log_z, pair, lp)
    log_kept = np.full(len(tp), -np.inf)
    np.logaddexp.at(log_kept, pair[ok], lp[ok])
    order = np.lexsort((sid[ok], pair[ok]))
    p_ok, s_ok, l_ok = pair[ok][order], sid[ok][order], (lp[ok] - log_z[pair[ok]])[order]
    new = np.ones(len(p_ok), dtype=bool)
    new[1:] = (p_ok[1:] != p_ok[:-1]) | (s_ok[1:] != s_ok[:-1])
    starts = np.flatnonzero(new)
    merged = np.logaddexp.reduceat(l_ok, starts) if len(starts) else np.zeros(0)
    p_g, s_g = p_ok[starts], s_ok[starts]
    kept_share = log_kept - log_z  # log of the share of the kept mass that maps somewhere
    per_pair = np.bincount(p_g, minlength=len(tp))
    counts = np.zeros(student_len, dtype=np.int64)
    counts[sp] = per_pair
    log_tail = np.full(student_len, PAD_LOG_TAIL, dtype=np.float32)
    t = np.exp(np.minimum(kept.log_tail[tp].astype(np.float64), 0.0))
    m_lost = -np.expm1(np.where(per_pair > 0, kept_share, 0.0))  # share of the kept mass mapped nowhere
    with np.errstate(divide="ignore"):
        log_tail[sp] = np.log(t + (1.0 - t) * m_lost)
    renorm = np.where(per_pair > 0, kept_share, 0.0)[p_g]
    return KeptEntries(counts, s_g.astype(np.int64), (merged - renorm).astype(np.float32), log_tail)
