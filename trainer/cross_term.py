"""The KD term of a student with its own tokenizer (`distill.cross_tokenizer`), as the model uses it.

Built once per run from the two tokenizers' byte tables (`schemas.token_bytes`, held by the loader's
`trainer.retokenize.Retokenizer`): the vocabulary maps the losses need (teacher id -> student id with
the identical byte string, with the teacher's separator / BOS mapped to the student's; each id's
first byte). Each step it reads the cross-tokenizer batch (`trainer.student_text.collate_cross`) and
returns the method's sum (`trainer.cross_tokenizer.alm_loss`, `trainer.cross_tokenizer_pairs.gold_loss` /
`next_byte_loss`): from the student's hidden state and output projection, never its [B, S, V] logits.

Normalisation: the term is its sum over the global batch divided by the number of aligned pairs in
it (`count`): a count read off the batch's columns, so every microbatch and rank can take its share
before any loss is computed, as the LM and same-tokenizer KD terms do (`trainer.model`). For ALM the
units summed are chunks (one fewer than pairs per sequence, fewer where a chunk is skipped); the
denominator stays the pair count, which only rescales the term by a near-constant factor.
"""

from __future__ import annotations

import numpy as np
import torch

from schemas.token_bytes import NO_BYTE, TokenBytes
from trainer.config import CrossTokenizerConfig
from trainer.cross_tokenizer import CrossLoss, alm_loss
from trainer.cross_tokenizer_pairs import check_vocab_maps, gold_loss, next_byte_loss
from trainer.errors import SettingError
from trainer.teacher_batch import TeacherBatch

# ALM's temperature on chunk log-likelihoods: tokenkit's default binarization_temp (`alm_loss`)
DEFAULT_TAU = {"alm": 100.0, "gold": 1.0, "next_byte": 1.0}  # first_token: distill.tau
METHODS_NEEDING_NEXT_LOGP = ("alm",)


def exact_map(teacher: TokenBytes, student: TokenBytes, pairs: dict[int, int]) -> np.ndarray:
    """[V_t] int64: the student id spelling the same bytes as each teacher id (-1: none); ``pairs``
    maps the byteless control ids (separator, BOS) of the teacher to the student's."""
    by_bytes: dict[bytes, int] = {}
    for i, b in enumerate(student.table):
        if b and i not in student.special:
            by_bytes.setdefault(b, i)
    out = np.full(len(teacher.table), -1, dtype=np.int64)
    for i, b in enumerate(teacher.table):
        if b and i not in teacher.special:
            out[i] = by_bytes.get(b, -1)
    for t, s in pairs.items():
        out[t] = s
    return out


class CrossTokenizerTerm:
    """The method, its temperature and the vocabulary maps (moved to the batch's device on first use)."""

    def __init__(self, config: CrossTokenizerConfig, retokenizer, chunk_size: int | None):
        self.method = config.method
        self.tau = float(config.tau if config.tau is not None else DEFAULT_TAU[self.method])
        self.rows = int(chunk_size or 1024)
        rt = retokenizer
        pairs = {rt.t_sep: rt.s_sep}
        if rt.t_bos is not None and rt.s_bos is not None:
            pairs[int(rt.t_bos)] = int(rt.s_bos)
        maps = (
            torch.from_numpy(exact_map(rt.teacher, rt.student, pairs)),
            torch.from_numpy(rt.teacher.first_byte.astype(np.int64)),
            torch.from_numpy(rt.student.first_byte.astype(np.int64)),
        )
        check_vocab_maps(*maps, len(rt.teacher.table), len(rt.student.table))
        self._maps = maps
        self.matched_fraction = float((maps[0] >= 0).float().mean())

    def maps(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._maps[0].device != torch.device(device):
            self._maps = tuple(m.to(device) for m in self._maps)
        return self._maps

    @staticmethod
    def count(batch: dict) -> torch.Tensor:
        """Aligned pairs in the batch (the term's denominator, `module docstring`)."""
        return (batch["pair_teacher"] >= 0).sum()

    @staticmethod
    def teacher(batch: dict) -> TeacherBatch:
        return TeacherBatch(
            batch["teacher_ids"],
            batch["teacher_logp"],
            batch["teacher_mask"],
            batch["teacher_log_tail"],
            position_mask=batch.get("teacher_position_mask"),
        )

    def loss_sum(self, hidden, weight, bias, batch: dict) -> CrossLoss:
        """The method's (sum, count of units summed) for this (micro)batch."""
        exact, t_first, s_first = self.maps(hidden.device)
        if s_first.shape[0] < weight.shape[0]:  # ids the model has beyond its tokenizer's (padded vocab): no bytes
            s_first = torch.nn.functional.pad(s_first, (0, weight.shape[0] - s_first.shape[0]), value=NO_BYTE)
            self._maps = (exact, t_first, s_first)
        if self.method == "alm":
            return alm_loss(
                hidden,
                weight,
                bias,
                batch["labels"],
                batch["student_chunk"],
                batch["teacher_next_logp"],
                batch["teacher_chunk"],
                tau=self.tau,
                rows=self.rows,
            )
        args = (hidden, weight, bias, self.teacher(batch), batch["pair_teacher"], batch["pair_student"])
        if self.method == "gold":
            res = gold_loss(*args, exact, tau=self.tau, rows=self.rows)
            return CrossLoss(res.sum, res.count)
        return next_byte_loss(*args, t_first, s_first, tau=self.tau, rows=self.rows)


def cross_term_for(distill, dataset) -> CrossTokenizerTerm | None:
    """The run's cross-tokenizer term (None without distill.cross_tokenizer or without a teacher);
    refuses, before step 1, a method the dataset cannot feed."""
    ct = distill.cross_tokenizer
    rt = dataset.student_text.retokenizer
    if ct is None or rt is None or distill.mode != "offline" or ct.method == "first_token":
        return None  # first_token: the teacher comes projected onto the student's positions, usual KD
    if ct.method in METHODS_NEEDING_NEXT_LOGP and dataset.manifest.next_logp is None:
        raise SettingError(
            f"distill.cross_tokenizer.method: {ct.method} needs the teacher's log-probability of each next "
            f"token, and dataset {', '.join(dataset.uris)} has no teacher_next_logp column (written before "
            "pdistill stored it); re-run the pipeline, or use method gold or next_byte"
        )
    if not distill.fused_head:
        raise SettingError(
            "distill.cross_tokenizer: needs distill.fused_head: true (its losses start from the hidden state)"
        )
    return CrossTokenizerTerm(ct, rt, distill.chunk_size)
