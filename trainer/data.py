"""Reading distillation datasets for training: preflight checks, a StreamingDataset, a collator.

Preflight (`inspect_stream`, `check_streams`, through `schemas.DatasetDir`), before any
StreamingDataset exists:
  * the dataset's manifest and root index must both exist (the pipeline writes the manifest
    last; without either the dataset is incomplete and is refused, naming the URI);
  * the manifest is parsed and validated (`schemas.Manifest.from_json`) and checked against the
    student (`schemas.check_compatible`: vocab size, tokenizer fingerprint, seq_len);
  * all streams must share vocab size, tokenizer and seq_len (each decodes with its own codec and codec prime);
  * with hash validation on, every shard of a *local* dataset is checked against the size and
    xxh3_64 recorded in the root index (`DatasetDir.check_shards`; remote shards are checked by streaming
    as they are downloaded);
  * each stream's first sample is read and checked against the manifest (length = seq_len, token
    ids < vocab_size), and so is every sample as it is decoded (`CorruptDataset` otherwise).

`DistillDataset` is the one `streaming.StreamingDataset` of pdistill (the trainer and `pdistill
inspect` read through it), built from the config's data section (`trainer.config.DataConfig`: its
streams with proportion / repeat / choose, shuffle, partition, prefetch and hash settings) and an
`Expect` (the student's vocabulary and tokenizer). Damaged shards raise `CorruptDataset` from
`trainer.checked_stream.CheckedStream`, which checks the hash itself before streaming does; streaming's own errors
are never matched by their text. Every
stream is read through a local cache folder (`DatasetDir.stream_args`: `remote` = the dataset URI,
local or s3:// gs:// ..., `local` = `<cache_dir or the stream's local>/<key of the URI and the
dataset's content identity>`), so the dataset folder itself is never written to (streaming would
otherwise decompress shards in place), hash validation applies uniformly, and a dataset replaced
at the same URI never reads the old one's cached index or shards. No shard name from an index
leads out of the cache (`schemas.shard_names`, and `CheckedStream` where files are written).

Alignment (see `DistillCollator`): the stored teacher signal at position t is the teacher's
distribution of token t + 1 given tokens[: t + 1], which is exactly what the student's logits at t
predict. So logits are never shifted: labels[t] = tokens[t + 1] (-100 at the last position and
wherever t + 1 >= n_tokens), teacher tensors stay at t, and position_mask[t] = (t < n_tokens) and
the teacher kept at least one entry there. KD therefore also uses the last real position (the
teacher's prediction of the token after the sequence), which the LM loss cannot use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from streaming import StreamingDataset
from torch.utils.data import DataLoader

from schemas import DatasetDir, IncompatibleDataset, Manifest, check_compatible, storage
from schemas.cache_folders import mark as mark_cache_folder
from schemas.errors import CodecError, CorruptDataset, IncompleteDataset  # noqa: F401  (part of this module's API)
from schemas.identity import dataset_identity
from schemas.redact import redact_uri
from schemas.sample import decode_next_logp, decode_sample
from trainer.checked_stream import CheckedStream
from trainer.config import DataConfig
from trainer.student_text import StudentText, collate_cross, label_bytes
from trainer.teacher_batch import TeacherBatch
from trainer.vocab_projection import project_kept

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
HASH_ALGO = "xxh3_64"


@dataclass(frozen=True)
class Expect:
    """What every stream is checked against (None: not checked): the student's vocabulary and
    tokenizer, and the sequence length another dataset (e.g. the training set) already fixed."""

    vocab_size: int | None = None
    tokenizer_fingerprint: str | None = None
    seq_len: int | None = None


@dataclass
class StreamInfo:
    uri: str
    manifest: Manifest | None
    index: dict = field(repr=False)


def inspect_stream(uri: str, *, require_manifest: bool = True) -> StreamInfo:
    """Read and validate one dataset's root index and manifest; refuse an incomplete dataset."""
    with storage.access(f"dataset {redact_uri(uri)}"):
        index, manifest = DatasetDir(uri).open_checked(require_manifest)
    return StreamInfo(uri=uri, manifest=manifest, index=index)


def check_streams(infos: Sequence[StreamInfo], expect: Expect, *, need_teacher: bool) -> Manifest | None:
    """Check every stream against the student and against each other; return the first manifest."""
    first = None
    for info in infos:
        m = info.manifest
        if m is None:
            continue
        check_compatible(
            m,
            vocab_size=expect.vocab_size,
            tokenizer_fingerprint=expect.tokenizer_fingerprint,
            seq_len=expect.seq_len,
            where=info.uri,
        )
        if first is None:
            first = (info.uri, m)
            continue
        u0, m0 = first
        for name, a, b in (
            ("vocab_size", m0.vocab_size, m.vocab_size),
            ("tokenizer fingerprint", m0.tokenizer.fingerprint, m.tokenizer.fingerprint),
            ("seq_len", m0.seq_len, m.seq_len),
        ):  # codecs may differ: each stream decodes with its own
            if a != b:
                raise IncompatibleDataset(f"streams {u0} and {info.uri} differ in {name}: {a!r} vs {b!r}")
    if need_teacher and any(i.manifest is None for i in infos):
        bad = next(i.uri for i in infos if i.manifest is None)
        raise IncompleteDataset(
            f"dataset {bad}: no manifest ({DatasetDir(bad).manifest_uri}); stored teacher signal needs one"
        )
    return first[1] if first else None


def verify_local_shards(info: StreamInfo) -> None:
    """Check each shard file of a local dataset against the root index: it exists, has the recorded
    size and hash (`DatasetDir.check_shards`; raises IncompleteDataset / CorruptDataset naming the shard)."""
    DatasetDir(info.uri).check_shards(info.index)


class DistillDataset(StreamingDataset):
    """A StreamingDataset over distillation datasets that yields decoded numpy samples.

    Each item: ``tokens`` int64 [T], ``n_tokens`` int, ``sample_id`` int (uint64 value) and, when
    ``with_teacher``, ``teacher``: the stored teacher signal as the codec decodes it, a
    `schemas.KeptEntries` over the T positions (the collator lays the batch out densely, K =
    ``top_k``, the manifests' largest).

    ``batch_size`` is the PER-DEVICE batch size (streaming needs it for deterministic resumption).
    Build the dataset *after* any state load decision and never iterate it before Composer has
    loaded its checkpoint state (a state loaded into an iterated dataset is ignored).
    """

    def __init__(
        self,
        data: DataConfig,
        *,
        batch_size: int,
        cache_dir: str,
        with_teacher: bool = True,
        expect: Expect = Expect(),
        require_manifest: bool = True,
        epoch_size: int | None = None,
        student_text=None,
    ):
        """Read ``data.streams`` with the section's shuffle, partition, prefetch and hash settings;
        ``student_text``: a `trainer.student_text.StudentText`, or a function of (first stream's uri,
        its manifest) returning one (what the student reads, and its labels' bytes)."""
        infos = [inspect_stream(s.uri, require_manifest=require_manifest or with_teacher) for s in data.streams]
        manifest = check_streams(infos, expect, need_teacher=with_teacher)
        if callable(student_text):
            student_text = student_text(infos[0].uri, manifest)
        self.student_text: StudentText = student_text or StudentText()
        if data.validate_hash:
            for info in infos:
                if storage.is_local(info.uri):
                    verify_local_shards(info)
        self.uris = [s.uri for s in data.streams]
        self.identities = [dataset_identity(i.manifest.to_json() if i.manifest else None, i.index) for i in infos]
        self.manifest = manifest
        self.with_teacher = with_teacher
        self.seq_len = manifest.seq_len if manifest else expect.seq_len
        if with_teacher:  # each stream decodes with its own codec (and its own codec prime)
            self.codecs = []
            for i in infos:
                with storage.access(f"dataset {redact_uri(i.uri)}"):
                    self.codecs.append(DatasetDir(i.uri).stored_codec(i.manifest))
            self.top_k = max(i.manifest.truncation.top_k for i in infos)
        else:
            self.codecs, self.top_k = [], 0
        self._vocab_limit = expect.vocab_size or (manifest.vocab_size if manifest else None)
        self._bg_error: BaseException | None = None
        streams = [
            CheckedStream(
                **DatasetDir(s.uri).stream_args(cache_dir, s.local, identity=ident),
                index=info.index,
                proportion=s.proportion,
                repeat=s.repeat,
                choose=s.choose,
            )
            for s, info, ident in zip(data.streams, infos, self.identities)
        ]
        super().__init__(
            streams=streams,
            batch_size=batch_size,
            shuffle=data.shuffle,
            shuffle_seed=data.shuffle_seed,
            shuffle_algo=data.shuffle_algo,
            num_canonical_nodes=data.num_canonical_nodes,
            predownload=data.predownload,
            validate_hash=data.validate_hash or None,
            partition_algo=data.partition_algo,
            epoch_size=epoch_size,
            download_retry=2,
            download_timeout=60,
        )
        for stream, uri, ident in zip(streams, self.uris, self.identities):
            mark_cache_folder(stream.local, uri, ident)  # found again by `pdistill cache`
        self.check_first_samples()

    # -- the samples must be what the manifest says ------------------------------------------
    def check_first_samples(self) -> None:
        """Read each stream's first sample now, so that a manifest whose seq_len (or vocabulary)
        disagrees with its samples is refused before training, not at some step."""
        for i, uri in enumerate(self.uris):
            if self.samples_per_stream[i] > 0:
                self[int(self.sample_offset_per_stream[i])]

    def check_sample(self, raw: dict, tokens: np.ndarray, n: int) -> None:
        """Raise CorruptDataset unless the sample has the manifest's shape and the student's vocabulary."""
        where = f"dataset {', '.join(self.uris)}: sample {int(raw.get('sample_id', -1))} (unit {raw.get('unit', '?')})"
        if self.seq_len and tokens.shape != (self.seq_len,):
            raise CorruptDataset(f"{where} has {tokens.shape[0]} tokens, the manifest's seq_len is {self.seq_len}")
        if not 0 <= n <= tokens.shape[0]:
            raise CorruptDataset(f"{where}: n_tokens {n} is outside 0..{tokens.shape[0]}")
        if self._vocab_limit and n and int(tokens[:n].max()) >= self._vocab_limit:
            raise CorruptDataset(f"{where} holds token id {int(tokens[:n].max())} >= vocab_size {self._vocab_limit}")
        if self.with_teacher and np.asarray(raw["teacher_counts"]).shape != tokens.shape:
            raise CorruptDataset(
                f"{where}: teacher signal for {np.asarray(raw['teacher_counts']).shape[0]} positions, "
                f"tokens {tokens.shape[0]}"
            )

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, raw: dict, stream: int = 0) -> dict[str, Any]:
        """The stored sample `raw` of stream number `stream`, decoded."""
        tokens = np.asarray(raw["tokens"]).astype(np.int64)
        n = int(raw["n_tokens"]) if "n_tokens" in raw else int(tokens.shape[0])
        self.check_sample(raw, tokens, n)
        out = {"tokens": tokens, "n_tokens": n, "sample_id": int(raw.get("sample_id", -1))}
        rt = self.student_text.retokenizer
        if rt is not None:
            where = f"dataset {self.uris[stream]}: sample {out['sample_id']}"
            out["student"] = rt(tokens, n, raw.get("doc_starts") or (), where=where)
            if self.with_teacher:
                out["next_logp"] = decode_next_logp(raw)
        if self.with_teacher:
            kept = decode_sample(raw, self.codecs[stream])
            if kept.counts.size and int(kept.counts.max()) > self.top_k:  # the collator's K slots
                raise CorruptDataset(
                    f"dataset {self.uris[stream]}: sample {int(raw.get('sample_id', -1))} keeps "
                    f"{int(kept.counts.max())} entries at a position, more than the manifest's top_k {self.top_k}"
                )
            out["teacher"] = kept
            first = self.student_text.first_token
            if first is not None and "student" in out:  # method first_token (`trainer.vocab_projection`)
                r = out["student"]
                out["teacher"] = project_kept(kept, first, r.teacher_pos, r.student_pos, len(r.ids))
                out["projected"] = True
        return out

    def raw(self, idx: int) -> dict:
        """The stored sample as MDS columns (undecoded: `pdistill inspect` reads these)."""
        return super().__getitem__(idx)  # damaged shards raise CorruptDataset (`CheckedStream`)

    def __getitem__(self, idx):  # type: ignore[override]
        raw, stream = self.raw(idx), self.stream_of(idx)
        try:
            return self.decode(raw, stream)
        except CorruptDataset:
            raise
        except (CodecError, ValueError, IndexError) as e:  # bytes that pass no hash check (validate_hash off)
            raise CorruptDataset(
                f"dataset {self.uris[stream]}: shard {self.shard_name(idx)}: sample "
                f"{int(raw.get('sample_id', -1))} does not decode ({type(e).__name__}: {e})"
            ) from None

    def shard_name(self, idx: int) -> str:
        """The stored file (relative to its dataset) of the shard sample ``idx`` lives in."""
        raw_info, zip_info = self.shards[int(self.spanner[idx][0])].file_pairs[0]
        return (zip_info or raw_info).basename

    def stream_of(self, idx: int) -> int:
        """Which of ``data.streams`` sample ``idx`` lives in."""
        return int(self.stream_per_shard[self.spanner[idx][0]])

    # -- clearer errors from streaming's background download threads --------------------------
    def on_exception(self, future) -> None:  # type: ignore[override]
        exc = future.exception()
        if exc is not None and self._bg_error is None:
            self._bg_error = exc
        super().on_exception(future)

    def __iter__(self):
        try:
            yield from super().__iter__()
        except RuntimeError as e:  # streaming's "a background thread failed": report what failed there
            err = self._bg_error
            if isinstance(err, CorruptDataset):
                raise CorruptDataset(f"reading dataset {', '.join(self.uris)} failed: {err}") from err
            if isinstance(err, FileNotFoundError):
                raise IncompleteDataset(
                    f"reading dataset {', '.join(self.uris)} failed: {type(err).__name__}: {err}"
                ) from err
            raise e


class DistillCollator:
    """Stack decoded samples into torch tensors, aligned so that position t predicts token t + 1.

    Output (B sequences, T = seq_len, K = top_k):
      input_ids [B, T] int64, attention_mask [B, T] int64 (1 on real tokens),
      labels [B, T] int64 = tokens shifted left by one, -100 at the last position and where
        t + 1 >= n_tokens (so logits[b, t] are scored against labels[b, t], no shift downstream),
      position_mask [B, T] bool: t < n_tokens (and, with a teacher, at least one kept entry),
      sample_id [B] int64 (the uint64 id's bits; `as_uint64` recovers it),
      and with a teacher: teacher_ids [B, T, K] int64, teacher_logp [B, T, K] float32,
      teacher_mask [B, T, K] bool, teacher_log_tail [B, T] float32: the columns of a
      `trainer.teacher_batch.TeacherBatch` (`TeacherBatch.from_batch` reads them back), built the
      same way as the live teacher's.
    """

    def __init__(self, with_teacher: bool = True, top_k: int = 0, byte_lengths: np.ndarray | None = None):
        """``top_k``: K, the kept-entry slots per position (the dataset's `top_k`); ``byte_lengths``
        [V]: bytes per student id, for the ``label_bytes`` column (bits per byte)."""
        if with_teacher and top_k < 1:
            raise ValueError(f"a collator with teacher signal needs top_k >= 1, got {top_k}")
        self.with_teacher, self.top_k, self.byte_lengths = with_teacher, int(top_k), byte_lengths

    def __call__(self, samples: list[dict]) -> dict:
        if samples and "student" in samples[0]:  # a student with its own tokenizer (`trainer.student_text`)
            return collate_cross(samples, self.top_k, self.with_teacher)
        return self.collate(samples)

    def collate(self, samples: list[dict]) -> dict:
        tokens = np.stack([s["tokens"] for s in samples]).astype(np.int64)
        b, t = tokens.shape
        n = np.asarray([s["n_tokens"] for s in samples], dtype=np.int64)
        pos = np.arange(t)[None, :]
        attn = pos < n[:, None]
        labels = np.full((b, t), IGNORE_INDEX, dtype=np.int64)
        labels[:, :-1] = np.where(pos[:, 1:] < n[:, None], tokens[:, 1:], IGNORE_INDEX)
        sid = np.asarray([s["sample_id"] & 0xFFFFFFFFFFFFFFFF for s in samples], dtype=np.uint64).view(np.int64)
        out = {
            "input_ids": torch.from_numpy(tokens),
            "attention_mask": torch.from_numpy(attn.astype(np.int64)),
            "labels": torch.from_numpy(labels),
            "sample_id": torch.from_numpy(sid.copy()),
        }
        nbytes = label_bytes(labels, self.byte_lengths)
        if nbytes is not None:
            out["label_bytes"] = torch.from_numpy(nbytes)
        if self.with_teacher:
            out.update(TeacherBatch.from_kept([s["teacher"] for s in samples], t, self.top_k, attn).columns())
        else:
            out["position_mask"] = torch.from_numpy(attn)
        return out


def as_uint64(sample_ids) -> list[int]:
    """Collated sample_id tensor (int64 bits) -> the datasets' uint64 ids."""
    arr = np.asarray(sample_ids.cpu().numpy() if hasattr(sample_ids, "cpu") else sample_ids, dtype=np.int64)
    return [int(x) for x in arr.view(np.uint64)]


def num_tokens_in_batch(batch: dict) -> int:
    """Real (non-padding) tokens in a collated batch (for Composer's token counter)."""
    return int(batch["attention_mask"].sum())


def build_dataloader(
    dataset: DistillDataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
    pin_memory: bool = False,
    with_teacher: bool | None = None,
):
    """A torch DataLoader over `dataset` with the distillation collator (per-device batch size)."""
    kwargs = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=DistillCollator(
            dataset.with_teacher if with_teacher is None else with_teacher,
            dataset.top_k,
            dataset.student_text.byte_lengths,
        ),
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        **kwargs,
    )
