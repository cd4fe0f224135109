"""What the student reads of each stored sample, and the bytes behind its labels.

Two cases, one record (`StudentText`), built once per dataset before any worker starts:
  same tokenizer   the student reads the teacher's tokens as stored; its labels' byte lengths come
                   from the tokenizer's byte table (`schemas.token_bytes`), for bits per byte;
  cross tokenizer  (`distill.cross_tokenizer`) each sample's teacher tokens are spelled as bytes,
                   re-tokenised with the student's tokenizer and aligned with the teacher's
                   positions (`trainer.retokenize.Retokenizer`, in the loader's worker processes:
                   a pure function of the sample, so order, determinism and resume are the
                   dataset's own).
`collate_cross` stacks re-tokenised samples into the batch the cross-tokenizer loss reads
(`trainer.cross_term`): the student's columns, the teacher's columns at the teacher's positions,
and the alignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from schemas import DatasetDir, storage
from schemas.errors import IncompatibleDataset
from schemas.manifest import Manifest
from schemas.redact import redact_uri
from schemas.token_bytes import TokenBytes, token_bytes
from trainer.errors import SettingError
from trainer.retokenize import IGNORE_INDEX, Retokenized, Retokenizer, stack_pairs
from trainer.teacher_batch import TeacherBatch
from trainer.vocab_projection import first_token_map


@dataclass
class StudentText:
    """``byte_lengths`` [V] int64: UTF-8 bytes of each STUDENT id (None: unknown, no bits per byte);
    ``retokenizer``: set for a student with its own tokenizer."""

    byte_lengths: np.ndarray | None = None
    retokenizer: Retokenizer | None = None
    first_token: np.ndarray | None = None  # [V_t] method first_token: `trainer.vocab_projection`


def stored_tokenizer_json(uri: str, manifest: Manifest | None) -> str | None:
    """The teacher's tokenizer.json stored with the dataset (verified), or None when the dataset
    predates stored tokenizer files (the same-tokenizer path then needs model.tokenizer for bytes)."""
    if manifest is None or not manifest.tokenizer.files:
        return None
    with storage.access(f"dataset {redact_uri(uri)}"):
        return DatasetDir(uri).tokenizer_json(manifest)


def student_seq_len(configured: int | None, teacher_seq_len: int) -> int:
    """The student's tokens per sequence: as configured, else 1.25 x the teacher's rounded up to 8 (an
    8k byte-level BPE spells SmolLM2's text in 1.01x its tokens; the slack is for other pairs, and a
    longer re-tokenisation is cut there, its pairs past the cut dropped)."""
    return int(configured) if configured else int(math.ceil(teacher_seq_len * 1.25 / 8) * 8)


def byte_lengths_of(tokenizer_json: str | None, where: str) -> np.ndarray | None:
    """Byte length per id, or None when the tokenizer's ids do not map to bytes (no bits per byte
    then; said once in the log by the caller)."""
    if tokenizer_json is None:
        return None
    try:
        return token_bytes(tokenizer_json).lengths
    except ValueError:
        return None


def cross_tokenizer_text(
    uri: str,
    manifest: Manifest,
    student_json: str,
    *,
    student_len: int | None,
    separator: str | None,
    method: str | None = None,
) -> StudentText:
    """The re-tokenising `StudentText` for a dataset whose manifest is ``manifest``; refuses, in one
    line, a dataset without stored tokenizer files or a tokenizer pair that cannot be aligned."""
    teacher_json = stored_tokenizer_json(uri, manifest)
    if teacher_json is None:
        raise IncompatibleDataset(
            f"dataset {redact_uri(uri)}: no teacher tokenizer files stored with it (written before pdistill "
            "stored them); distill.cross_tokenizer needs them: re-run the pipeline"
        )
    student_sep = None
    if separator is not None:
        from tokenizers import Tokenizer  # noqa: PLC0415 (late: only for a configured separator)

        student_sep = Tokenizer.from_str(student_json).token_to_id(separator)
        if student_sep is None:
            raise SettingError(f"distill.cross_tokenizer.separator: {separator!r} is not a token of model.tokenizer")
    bos = _teacher_bos(teacher_json) if manifest.tokenizer.add_bos else None
    try:
        rt = Retokenizer(
            teacher_json,
            student_json,
            manifest.tokenizer.separator_id,
            bos,
            student_seq_len(student_len, manifest.seq_len),
            student_sep=student_sep,
        )
    except ValueError as e:  # UnfitTokenizer and bad ids: one line, naming the side
        raise SettingError(f"distill.cross_tokenizer: {e}") from None
    first = None
    if method == "first_token":  # the teacher's kept ids moved onto the student's vocabulary, per sample
        first = first_token_map(rt.teacher, rt.student, rt.tok, _control_pairs(rt, teacher_json))
    return StudentText(byte_lengths=rt.student.lengths, retokenizer=rt, first_token=first)


def _control_pairs(rt: Retokenizer, teacher_json: str) -> dict[int, int]:
    """Teacher ids without bytes -> the student's: separator and BOS as the re-tokenisation maps them,
    and every other special token the student has under the same string (none: its mass is dropped)."""
    from tokenizers import Tokenizer  # noqa: PLC0415 (late: only for method first_token)

    teacher = Tokenizer.from_str(teacher_json)
    pairs = {}
    for t in sorted(rt.teacher.special):
        s = rt.tok.token_to_id(teacher.id_to_token(t) or "")
        if s is not None and s in rt.student.special:
            pairs[t] = s
    pairs[rt.t_sep] = rt.s_sep
    if rt.t_bos is not None and rt.s_bos is not None:
        pairs[int(rt.t_bos)] = int(rt.s_bos)
    return pairs


def _teacher_bos(teacher_json: str) -> int | None:
    """The teacher's BOS id, as the pipeline added it (the post-processor's first special token)."""
    import json  # noqa: PLC0415 (late: rarely needed)

    spec = json.loads(teacher_json)
    post = spec.get("post_processor") or {}
    for item in post.get("single", []) or []:
        special = item.get("SpecialToken") if isinstance(item, dict) else None
        if special:
            ids = (post.get("special_tokens", {}).get(special["id"], {}) or {}).get("ids") or []
            return int(ids[0]) if ids else None
    return None


def label_bytes(labels: np.ndarray, byte_lengths: np.ndarray | None) -> np.ndarray | None:
    """[B, T] int32 bytes of each label token (0 where ignored); None without a byte table."""
    if byte_lengths is None:
        return None
    safe = np.where(labels == IGNORE_INDEX, 0, labels)
    return np.where(labels == IGNORE_INDEX, 0, byte_lengths[safe]).astype(np.int32)


def collate_cross(samples: list[dict], top_k: int, with_teacher: bool) -> dict:
    """The batch of re-tokenised samples (B sequences, S student and T teacher positions, C pairs):

    input_ids / attention_mask / labels / label_bytes [B, S] (the student's, as `DistillCollator`
    lays them out), position_mask [B, S] (its real tokens); with a teacher projected onto the student's
    positions (method first_token, `trainer.vocab_projection`): the usual TeacherBatch columns over
    [B, S] (position_mask: real tokens with kept entries), nothing else; otherwise the TeacherBatch columns
    at the teacher's positions ([B, T, K] and [B, T], position_mask named teacher_position_mask),
    teacher_next_logp [B, T] float32 (NaN where none or not stored), pair_teacher / pair_student
    [B, C] int64 (-1 past each sample's pairs), teacher_chunk [B, T] and student_chunk [B, S] int64.
    """
    rts: list[Retokenized] = [s["student"] for s in samples]
    ids = np.stack([r.ids for r in rts])
    s_len = ids.shape[1]
    attn = np.arange(s_len)[None, :] < np.asarray([r.n for r in rts])[:, None]
    sid = np.asarray([s["sample_id"] & 0xFFFFFFFFFFFFFFFF for s in samples], dtype=np.uint64).view(np.int64)
    out = {
        "input_ids": torch.from_numpy(ids.astype(np.int64)),
        "attention_mask": torch.from_numpy(attn.astype(np.int64)),
        "labels": torch.from_numpy(np.stack([r.labels for r in rts])),
        "label_bytes": torch.from_numpy(np.stack([r.label_bytes for r in rts])),
        "position_mask": torch.from_numpy(attn),
        "sample_id": torch.from_numpy(sid.copy()),
    }
    if not with_teacher:
        return out
    if samples[0].get("projected"):  # method first_token: the teacher is already on the student's positions
        teacher = TeacherBatch.from_kept([s["teacher"] for s in samples], s_len, top_k, attn)
        out.update(teacher.columns())
        return out
    tokens = np.stack([s["tokens"] for s in samples])
    t_len = tokens.shape[1]
    t_attn = np.arange(t_len)[None, :] < np.asarray([s["n_tokens"] for s in samples])[:, None]
    teacher = TeacherBatch.from_kept([s["teacher"] for s in samples], t_len, top_k, t_attn).columns()
    teacher["teacher_position_mask"] = teacher.pop("position_mask")
    nl = [s.get("next_logp") for s in samples]
    next_logp = np.stack([np.full(t_len, np.nan, np.float32) if x is None else x.astype(np.float32) for x in nl])
    tp, sp = stack_pairs(rts)
    out.update(teacher)
    out.update(
        {
            "teacher_next_logp": torch.from_numpy(next_logp),
            "pair_teacher": torch.from_numpy(tp.astype(np.int64)),
            "pair_student": torch.from_numpy(sp.astype(np.int64)),
            "teacher_chunk": torch.from_numpy(np.stack([r.teacher_chunk for r in rts]).astype(np.int64)),
            "student_chunk": torch.from_numpy(np.stack([r.student_chunk for r in rts]).astype(np.int64)),
        }
    )
    return out


def tokens_json(tokenizer) -> str | None:
    """tokenizer.json text of a loaded Hugging Face tokenizer (a fast one), else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend.to_str() if backend is not None else None


__all__ = [
    "StudentText",
    "TokenBytes",
    "byte_lengths_of",
    "collate_cross",
    "cross_tokenizer_text",
    "label_bytes",
    "stored_tokenizer_json",
    "student_seq_len",
    "tokens_json",
]
