"""Cross-tokenizer losses at aligned pairs: the GOLD hybrid and the next-byte view.

At an aligned pair (teacher position i, student position a whose next tokens start at the same
byte, `trainer.retokenize`) both models predict "the text from byte b on": the teacher's kept
distribution F (softmax(logp / tau) over the kept set, `trainer.kd_rows.prepare_teacher`) and the
student's full softmax q = softmax(logits / tau) over its own vocabulary are compared where they
can be: ids with the identical byte string (``exact_map``), sorted probabilities for the rest
(ULD), or the distribution of the next byte. The student's logits exist only at aligned rows and
one chunk at a time (`trainer.cross_tokenizer.rows_logits_loss`).

Padding pairs (-1) and pairs at a teacher position without kept entries are rows with weight 0:
the pair count is fixed by the batch's shapes (no host synchronisation).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from trainer.cross_tokenizer import CrossLoss, accumulate_dtype, check_head, matmul_dtype, rows_logits_loss
from trainer.kd_rows import PreparedTeacher, prepare_teacher
from trainer.teacher_batch import TeacherBatch

N_BYTE_BUCKETS = 257  # 256 byte values + one for ids without bytes (separators, BOS)


class GoldLoss(NamedTuple):
    """sum = matched_weight * matched + unmatched_weight * unmatched (graph-attached); matched and
    unmatched: the two parts' sums (for logging); count: aligned positions (int64)."""

    sum: torch.Tensor
    count: torch.Tensor
    matched: torch.Tensor
    unmatched: torch.Tensor


class AlignedRows(NamedTuple):
    """The B * C pairs as flat rows: hidden [M, H] at the student positions, the teacher prepared at
    the teacher positions (its ``valid``: the pair exists and the teacher has kept entries there)."""

    hidden: torch.Tensor
    teacher: PreparedTeacher


def aligned_rows(
    hidden: torch.Tensor,
    teacher: TeacherBatch,
    pair_teacher: torch.Tensor,
    pair_student: torch.Tensor,
    tau: float,
    dtype: torch.dtype,
) -> AlignedRows:
    """Gather both sides at the pairs: hidden [B, S, H], teacher [B, T, K], pairs [B, C] (-1 padding)."""
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, S, H], got {tuple(hidden.shape)}")
    bsz, s_len, h_dim = hidden.shape
    if teacher.ids.dim() != 3 or teacher.ids.shape[0] != bsz:
        raise ValueError(f"teacher_ids must be [{bsz}, T, K], got {tuple(teacher.ids.shape)}")
    t_len = teacher.ids.shape[1]
    if pair_teacher.shape != pair_student.shape or pair_teacher.dim() != 2 or pair_teacher.shape[0] != bsz:
        raise ValueError(
            f"pair_teacher and pair_student must both be [{bsz}, C], got "
            f"{tuple(pair_teacher.shape)} and {tuple(pair_student.shape)}"
        )
    dev = hidden.device
    pt = pair_teacher.to(device=dev, dtype=torch.int64)
    ps = pair_student.to(device=dev, dtype=torch.int64)
    present = (pt >= 0) & (ps >= 0)
    seq = torch.arange(bsz, device=dev)[:, None]
    t_idx = seq * t_len + pt.clamp(0, t_len - 1)  # [B, C]
    s_idx = (seq * s_len + ps.clamp(0, s_len - 1)).reshape(-1)
    k = teacher.ids.shape[-1]
    at_pairs = TeacherBatch(
        *(x.to(dev).reshape(bsz * t_len, k)[t_idx] for x in (teacher.ids, teacher.logp, teacher.mask)),
        teacher.log_tail.to(dev).reshape(-1)[t_idx],
        position_mask=teacher.valid_positions().to(dev).reshape(-1)[t_idx] & present,
    )
    prepared = prepare_teacher(at_pairs, tau, False, 0, dtype)
    return AlignedRows(hidden.reshape(bsz * s_len, h_dim)[s_idx], prepared)


def check_vocab_maps(
    exact_map: torch.Tensor,
    teacher_first_byte: torch.Tensor,
    student_first_byte: torch.Tensor,
    teacher_vocab: int,
    student_vocab: int,
) -> None:
    """Raise ValueError naming the vocabulary map that does not fit the two vocabularies. Call it once
    when the maps are built: the losses do not re-check them (that would cost a host sync a step)."""
    for name, table, size, low, high in (
        ("exact_map", exact_map, teacher_vocab, -1, student_vocab - 1),
        ("teacher_first_byte", teacher_first_byte, teacher_vocab, 0, N_BYTE_BUCKETS - 1),
        ("student_first_byte", student_first_byte, student_vocab, 0, N_BYTE_BUCKETS - 1),
    ):
        if table.dim() != 1 or table.shape[0] != size or table.is_floating_point():
            raise ValueError(f"{name} must be an integer [{size}] vector, got {table.dtype} {tuple(table.shape)}")
        if table.numel() and (int(table.min()) < low or int(table.max()) > high):
            raise ValueError(f"{name} values must lie in [{low}, {high}], got [{int(table.min())}, {int(table.max())}]")


# --------------------------------------------------------------------------------------------
# GOLD: exact-match KL + ULD on the rest


def _first_of_each_id(sid: torch.Tensor, matched: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(same [M, K, K]: matched slots j, k map to the same student id; first [M, K]: slot j is the
    first matched slot with its student id). Two teacher ids may share a byte string (added tokens)."""
    same = (sid[:, :, None] == sid[:, None, :]) & matched[:, :, None] & matched[:, None, :]
    k = sid.shape[1]
    earlier = torch.ones(k, k, dtype=torch.bool, device=sid.device).tril(-1)  # [j, k]: k < j
    first = matched & ~(same & earlier).any(-1)
    return same, first


def gold_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    teacher: TeacherBatch,
    pair_teacher: torch.Tensor,
    pair_student: torch.Tensor,
    exact_map: torch.Tensor,
    *,
    tau: float = 1.0,
    matched_weight: float | None = None,
    unmatched_weight: float | None = None,
    rows: int = 1024,
) -> GoldLoss:
    """TRL GOLD's hybrid cross-tokenizer loss at each aligned pair (TRL `ULDLoss._compute_hybrid_uld_loss`,
    `uld_use_hybrid_loss=True`), from the student's hidden state.

    exact_map [V_t] int64: teacher id -> student id with the identical byte string, -1 if none.
    Matched part: the teacher's kept entries whose id has an exact match, against the student at
    those ids: forward KL(P_m || q_m), both renormalised over the matched set (the teacher's matched
    mass summed per student id). TRL uses its generalised JSD with beta (beta = 0: this forward KL)
    on un-renormalised probabilities; we renormalise because the teacher is known only over its kept
    set, and so that with identical tokenizers this part IS the same-tokenizer KD
    (`kd_loss`, forward_kl, support "kept"). A row without a matched entry adds 0.
    Unmatched part (ULD): sum_r |p_(r) - q_(r)| over the top K of each (K: the teacher's slots, the
    shorter padded with 0), p: F at the kept entries without a match (not renormalised), q: the
    student's softmax over the ids that are no teacher id's exact match (as TRL: the whole matched
    set of the vocabularies is excluded, not only this position's). TRL sums over all unmatched ids;
    beyond rank K the teacher has nothing, so we drop the student's remainder there.
    Weights: TRL's default (both None) is adaptive, matched = (number of teacher ids with a match)
    / V_t, unmatched = 1 - matched; give both to fix them. Count: aligned positions with a teacher
    (TRL divides each part by the sequence length). Tau divides both sides' logits (teacher: its
    stored log-probs, as `trainer.kd_rows`).
    """
    check_head(hidden, weight, bias)
    if (matched_weight is None) != (unmatched_weight is None):
        raise ValueError("GOLD matched_weight and unmatched_weight must be given together (or both left None)")
    dev = hidden.device
    v_s = weight.shape[0]
    if exact_map.dim() != 1:
        raise ValueError(f"exact_map must be a [V_t] vector, got {tuple(exact_map.shape)}")
    exact_map = exact_map.to(device=dev, dtype=torch.int64)  # values checked once by `check_vocab_maps`
    acc = accumulate_dtype(matmul_dtype(hidden))
    rows_in = aligned_rows(hidden, teacher, pair_teacher, pair_student, tau, acc)
    tp = rows_in.teacher
    sid = exact_map[tp.ids]
    matched = tp.mask & (sid >= 0) & tp.valid[:, None]
    unmatched = tp.mask & (sid < 0) & tp.valid[:, None]
    sid = sid.clamp_min(0)
    same, first = _first_of_each_id(sid, matched)
    f = tp.f
    z_m = torch.where(matched, f, 0.0).sum(-1)
    tiny = torch.finfo(acc).tiny
    pm = torch.where(first, (same.to(f.dtype) * f[:, None, :]).sum(-1) / z_m.clamp_min(tiny)[:, None], 0.0)
    log_pm = torch.where(pm > 0, pm.clamp_min(tiny).log(), 0.0)
    # rows without a matched slot keep slot 0 in the student's normaliser: finite, weight 0
    norm_slots = first | (~first.any(-1, keepdim=True) & (torch.arange(first.shape[1], device=dev) == 0))
    p_u = torch.where(unmatched, f, 0.0).sort(-1, descending=True).values
    hit = torch.where(exact_map >= 0, exact_map, v_s)  # -1 -> a spare slot (no boolean indexing: no sync)
    student_matched = torch.zeros(v_s + 1, dtype=torch.bool, device=dev).index_fill_(0, hit, True)[:v_s]
    k = f.shape[1]

    def per_row(x: torch.Tensor, sl: slice) -> torch.Tensor:
        s = x / tau
        lse = torch.logsumexp(s, -1, keepdim=True)
        lq = s.gather(1, sid[sl]) - lse
        lqz = torch.logsumexp(torch.where(norm_slots[sl], lq, float("-inf")), -1, keepdim=True)
        kl = torch.where(pm[sl] > 0, pm[sl] * (log_pm[sl] - (lq - lqz)), 0.0).sum(-1)
        top = s.masked_fill(student_matched, float("-inf")).topk(min(k, s.shape[1]), -1).values
        q_u = (top - lse).exp()
        if q_u.shape[1] < k:
            q_u = torch.nn.functional.pad(q_u, (0, k - q_u.shape[1]))
        uld = (p_u[sl] - q_u).abs().sum(-1)
        return torch.where(tp.valid[sl, None], torch.stack([kl, uld], -1), 0.0)

    parts = rows_logits_loss(rows_in.hidden, weight, bias, rows, per_row).sum(0)
    if matched_weight is None:
        w_m = (exact_map >= 0).sum().to(acc) / max(1, exact_map.shape[0])
        w_u = 1.0 - w_m
    else:
        w_m, w_u = float(matched_weight), float(unmatched_weight)
    return GoldLoss(w_m * parts[0] + w_u * parts[1], tp.valid.sum(), parts[0], parts[1])


# --------------------------------------------------------------------------------------------
# next byte


def next_byte_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    teacher: TeacherBatch,
    pair_teacher: torch.Tensor,
    pair_student: torch.Tensor,
    teacher_first_byte: torch.Tensor,
    student_first_byte: torch.Tensor,
    *,
    tau: float = 1.0,
    rows: int = 1024,
) -> CrossLoss:
    """Forward KL between the two models' distributions of the next byte, at each aligned pair.

    teacher_first_byte [V_t], student_first_byte [V_s] int64 in 0..256 (256: the id has no bytes).
    Teacher: P_b = sum of F over its kept entries whose first byte is b (F renormalised over the
    kept set; the dropped tail is assigned to no byte). Student: Q_b = sum of softmax(logits / tau)
    over every id whose first byte is b (exact, from its full softmax). Loss sum_b P_b (log P_b -
    log Q_b) (Q_b floored at the dtype's smallest normal number: a byte no student id starts with
    costs ~87 nats; `schemas.token_bytes.check_byte_coverage` rules that out); count: aligned positions with a
    teacher. Both tokenizers cut the text at the same byte here, so the next byte is the first byte
    of either's next token.
    """
    check_head(hidden, weight, bias)
    dev = hidden.device
    v_s = weight.shape[0]
    tfb = teacher_first_byte.to(device=dev, dtype=torch.int64)
    sfb = student_first_byte.to(device=dev, dtype=torch.int64)
    if tuple(sfb.shape) != (v_s,):
        raise ValueError(f"student_first_byte must have shape ({v_s},), got {tuple(sfb.shape)}")
    acc = accumulate_dtype(matmul_dtype(hidden))
    rows_in = aligned_rows(hidden, teacher, pair_teacher, pair_student, tau, acc)
    tp = rows_in.teacher
    m = tp.mask & tp.valid[:, None]
    big_p = torch.zeros(m.shape[0], N_BYTE_BUCKETS, dtype=acc, device=dev)
    big_p.scatter_add_(1, tfb[tp.ids], torch.where(m, tp.f, 0.0))
    log_p = torch.where(big_p > 0, big_p.clamp_min(torch.finfo(acc).tiny).log(), 0.0)

    def per_row(x: torch.Tensor, sl: slice) -> torch.Tensor:
        q = torch.softmax(x / tau, -1)
        big_q = q.new_zeros(q.shape[0], N_BYTE_BUCKETS).index_add(1, sfb, q)
        log_q = big_q.clamp_min(torch.finfo(q.dtype).tiny).log()
        p = big_p[sl]
        kl = torch.where(p > 0, p * (log_p[sl] - log_q), 0.0).sum(-1)
        return torch.where(tp.valid[sl], kl, 0.0)

    per = rows_logits_loss(rows_in.hidden, weight, bias, rows, per_row)
    return CrossLoss(per.sum(), tp.valid.sum())
