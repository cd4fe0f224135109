"""The training recipe, top to bottom: config -> student, data, teacher, loss -> composer.Trainer.

Order matters for resumption: everything that can refuse (config, datasets, manifest vs student)
runs before the Trainer exists; the StreamingDataset is built fresh in this process and never
iterated before Composer (autoresume) loads the checkpoint state into it, so a resumed run
continues the global sample order mid-epoch instead of restarting at sample 0.

Elastic resume needs a constant GLOBAL batch (data.batch_size, divided here by the world size:
it must be divisible by every world size used), the same data.num_canonical_nodes, and the same
data.num_workers per rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile

import torch
from composer import Trainer
from composer.algorithms import GradientClipping
from composer.callbacks import LRMonitor, SpeedMonitor
from composer.core import DataSpec, Evaluator
from composer.loggers import ConsoleLogger, FileLogger, MLFlowLogger, TensorboardLogger, WandBLogger
from composer.optim import ConstantWithWarmupScheduler, CosineAnnealingWithWarmupScheduler, DecoupledAdamW
from composer.utils import MissingConditionalImportError, dist, reproducibility

from schemas import fingerprint_tokenizer, storage
from schemas.identity import json_digest
from schemas.redact import redact_uri
from trainer.checkpoints import recover_checkpoints
from trainer.config import StreamConfig, TrainConfig, check_distill_for_datasets
from trainer.cross_term import cross_term_for
from trainer.data import DistillDataset, Expect, build_dataloader, inspect_stream, num_tokens_in_batch
from trainer.errors import ResumeMismatch, SettingError
from trainer.faults import kill_callbacks
from trainer.fingerprint import RunFingerprint, check_allow_list, run_fingerprint
from trainer.loading import build_student, build_teacher, load_tokenizer
from trainer.loading import fetch_model_dir as fetch_model_dir  # re-exported: tests load models through it
from trainer.metrics_log import FILENAME, MetricsLog
from trainer.model import AlphaCallback, BatchCounts, DistillationModel, SampleLog, StopAfter
from trainer.schedules import WarmupStableDecayScheduler
from trainer.student_text import (
    StudentText,
    byte_lengths_of,
    cross_tokenizer_text,
    stored_tokenizer_json,
    tokens_json,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# building blocks


def resolve_device(name: str) -> str:
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name == "gpu" and not torch.cuda.is_available():
        raise SettingError("run.device: gpu asked for, but torch sees no CUDA device here (use cpu or auto)")
    return name


def check_writable_folder(key: str, uri: str | None) -> None:
    """Refuse, before training, a local output folder that cannot be created or written (Composer
    would raise NotADirectoryError / PermissionError mid-setup): `schemas.storage.unwritable`."""
    problem = storage.unwritable(uri, "folder")
    if problem:
        raise SettingError(f"{key}: cannot write to {uri} ({problem})")


def cache_root_for(cfg: TrainConfig) -> str:
    """Local cache root (shards, fetched models): data.local_cache, else a folder under the system
    temp dir named after the run, kept between runs.

    Ranks on one node must agree on it (streaming shares one cache per node), so the default is
    derived from the run name (or the config), never from the process. Reusing it is safe: each
    dataset is cached in a folder keyed by its content (`DatasetDir.stream_args`), so a dataset
    replaced at the same URI is fetched again, never read from the old one's cache.
    """
    if cfg.data.local_cache:
        return cfg.data.local_cache
    key = cfg.run.run_name or json_digest(cfg.to_dict(), default=str, digits=12)
    return os.path.join(tempfile.gettempdir(), "pdistill-cache", key)


def per_device_batch(global_batch: int, world_size: int, key: str = "data.batch_size") -> int:
    if global_batch % world_size:
        raise SettingError(
            f"{key}: the global batch {global_batch} is not divisible by the world size {world_size} "
            "(keep it divisible by every world size you train or resume on)"
        )
    return global_batch // world_size


def student_text_for(cfg: TrainConfig, tokenizer):
    """What the student reads (`trainer.student_text`), as a function of the first stream's URI and
    manifest: the stored tokens and their bytes, or (distill.cross_tokenizer) a re-tokenisation."""
    ct, student_json = cfg.distill.cross_tokenizer, tokens_json(tokenizer)
    if ct is None:
        return lambda uri, manifest: StudentText(
            byte_lengths_of(student_json or stored_tokenizer_json(uri, manifest), "model.tokenizer")
        )
    if student_json is None:
        raise SettingError(
            f"distill.cross_tokenizer: model.tokenizer ({cfg.model.tokenizer}) is not a fast tokenizer "
            "with a tokenizer.json; re-tokenising needs one"
        )
    method = ct.method if cfg.distill.mode == "offline" else None
    return lambda uri, manifest: cross_tokenizer_text(
        uri, manifest, student_json, student_len=ct.student_seq_len, separator=ct.separator, method=method
    )


def build_datasets(
    cfg: TrainConfig, *, vocab_size: int, tokenizer_fp: str, batch_size: int, cache_root: str, tokenizer=None
):
    d, with_teacher = cfg.data, cfg.distill.mode == "offline"
    cross = cfg.distill.cross_tokenizer is not None
    # a foreign student is checked against the dataset by its tokenizer files and byte coverage instead
    expect = Expect() if cross else Expect(vocab_size=vocab_size, tokenizer_fingerprint=tokenizer_fp)
    train = DistillDataset(
        d,
        batch_size=batch_size,
        cache_dir=os.path.join(cache_root, "train"),
        with_teacher=with_teacher,
        expect=expect,
        require_manifest=with_teacher or cross,
        student_text=student_text_for(cfg, tokenizer),
    )
    if cross:  # held-out text re-tokenised the same way; its teacher tokenizer must be the train set's
        expect = Expect(tokenizer_fingerprint=train.manifest.tokenizer.fingerprint)
    evald = None
    if d.eval_uri:
        eval_bs = per_device_batch(d.eval_batch_size or d.batch_size, _world_size(), "data.eval_batch_size")
        held_out = d.model_copy(update={"streams": [StreamConfig(uri=d.eval_uri)], "shuffle": False})
        evald = DistillDataset(
            held_out,
            batch_size=eval_bs,
            cache_dir=os.path.join(cache_root, "eval"),
            with_teacher=False,
            expect=dataclasses.replace(expect, seq_len=train.seq_len),
            require_manifest=with_teacher or cross,
            student_text=train.student_text if cross else student_text_for(cfg, tokenizer),
        )
    return train, evald


def _world_size() -> int:
    return dist.get_world_size()


def build_scheduler(cfg: TrainConfig):
    s = cfg.scheduler
    if s.name == "cosine":
        return CosineAnnealingWithWarmupScheduler(t_warmup=s.t_warmup, alpha_f=s.alpha_f)
    if s.name == "wsd":
        return WarmupStableDecayScheduler(
            t_warmup=s.t_warmup, t_decay=s.t_decay, alpha_f=s.alpha_f, decay_shape=s.decay_shape
        )
    return ConstantWithWarmupScheduler(t_warmup=s.t_warmup)


def build_optimizer(cfg: TrainConfig, params):
    o = cfg.optim
    cls = DecoupledAdamW if o.name == "decoupled_adamw" else torch.optim.AdamW
    return cls(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def build_loggers(cfg: TrainConfig):
    """Console and file always available; TensorBoard / MLflow / W&B only when their packages import.
    "file" writes the text log and, beside it, the same metrics as JSON lines (`trainer.metrics_log`)."""
    r = cfg.run
    log_dir = r.log_dir or os.path.join(
        r.save_folder if (r.save_folder and "://" not in r.save_folder) else os.getcwd(), "logs"
    )
    out = []
    for name in r.loggers:
        try:
            if name == "console":
                out.append(ConsoleLogger(log_interval=r.log_interval))
            elif name == "file":
                out.append(
                    FileLogger(
                        filename=os.path.join(log_dir, "{run_name}", "log-rank{rank}.txt"),
                        capture_stdout=False,
                        capture_stderr=False,
                        flush_interval=1,
                    )
                )
                out.append(MetricsLog(os.path.join(log_dir, "{run_name}", FILENAME)))
            elif name == "tensorboard":
                out.append(TensorboardLogger(log_dir=os.path.join(log_dir, "tensorboard")))
            elif name == "mlflow":
                out.append(MLFlowLogger())
            elif name == "wandb":
                out.append(WandBLogger())
        except (MissingConditionalImportError, ImportError) as e:
            log.warning("run.loggers: %s logger skipped (package not installed: %s)", name, e)
    return out


# ---------------------------------------------------------------------------------------------
# the recipe


def build_trainer(cfg: TrainConfig, extra_callbacks: list | None = None):
    """Everything from a validated TrainConfig; refusals happen here, before the first step."""
    r, d, k = cfg.run, cfg.data, cfg.distill
    check_allow_list(r.allow_changed)
    device = resolve_device(r.device)
    if device == "cpu" and r.precision != "fp32":
        raise SettingError(
            f"run.precision: {r.precision} needs a GPU (Composer trains on CPU in fp32 only); use run.precision=fp32"
        )
    if not dist.is_initialized() and dist.get_world_size() > 1:
        dist.initialize_dist(device)
    cache_root = cache_root_for(cfg)
    model_cache = os.path.join(cache_root, "models")
    for key, folder in (
        ("run.save_folder", r.save_folder),
        ("run.log_dir", r.log_dir),
        ("run.sample_log_dir", r.sample_log_dir),
        ("data.local_cache", cache_root),
    ):
        check_writable_folder(key, folder)
    if r.autoresume and storage.is_local(r.save_folder):
        if dist.get_global_rank() == 0:
            recover_checkpoints(os.path.abspath(storage.local_path(r.save_folder)))
        dist.barrier()

    # 1. student (seeded so the initial weights depend on run.seed only) and its tokenizer
    reproducibility.seed_all(r.seed)
    tokenizer = load_tokenizer(cfg, model_cache)
    tokenizer_fp = fingerprint_tokenizer(tokenizer)
    student = build_student(cfg, model_cache)
    vocab_size = int(student.config.vocab_size)
    teacher = build_teacher(cfg, model_cache, tokenizer_fp) if k.mode == "live" else None
    if teacher is not None and int(teacher.config.vocab_size) != vocab_size:
        raise SettingError(
            f"distill.teacher: the teacher's vocab_size is {teacher.config.vocab_size}, the student's "
            f"{vocab_size}; they must be equal (the student's vocabulary is the teacher's)"
        )

    # 2. data: preflight (manifest, index, compatibility, shard hashes), then StreamingDatasets
    if k.mode == "offline" and k.tau != 1.0:  # sampled teacher signal cannot be tempered
        check_distill_for_datasets(k, [(s.uri, inspect_stream(s.uri).manifest) for s in d.streams])
    batch = per_device_batch(d.batch_size, dist.get_world_size())
    train_ds, eval_ds = build_datasets(
        cfg,
        vocab_size=vocab_size,
        tokenizer_fp=tokenizer_fp,
        batch_size=batch,
        cache_root=cache_root,
        tokenizer=tokenizer,
    )
    rt = train_ds.student_text.retokenizer
    student_len = rt.s_len if rt is not None else train_ds.seq_len
    max_pos = getattr(student.config, "max_position_embeddings", None)
    if student_len and max_pos and student_len > max_pos:
        what = "distill.cross_tokenizer.student_seq_len" if rt is not None else "the dataset's seq_len"
        raise SettingError(f"model.hf_config.max_position_embeddings: {max_pos} < {what} {student_len}")
    if rt is not None and len(rt.student.table) > vocab_size:
        raise SettingError(f"model.hf_config.vocab_size: {vocab_size} < model.tokenizer's {len(rt.student.table)} ids")
    train_dl = DataSpec(
        build_dataloader(train_ds, batch_size=batch, num_workers=d.num_workers),
        get_num_tokens_in_batch=num_tokens_in_batch,
    )
    evaluators = []
    if eval_ds is not None:
        eval_dl = DataSpec(
            build_dataloader(eval_ds, batch_size=eval_ds.batch_size, num_workers=d.num_workers),
            get_num_tokens_in_batch=num_tokens_in_batch,
        )
        names = ["LanguageCrossEntropy", "LanguagePerplexity"]
        if eval_ds.student_text.byte_lengths is not None:
            names.append("BitsPerByte")
        else:
            log.warning("held-out bits per byte: not reported (the tokenizer's ids do not map to bytes)")
        evaluators.append(Evaluator(label="eval", dataloader=eval_dl, metric_names=names))

    # 3. model + loss
    model = DistillationModel(student, k, teacher, cross=cross_term_for(k, train_ds))
    optimizer = build_optimizer(cfg, model.parameters())

    fingerprint = run_fingerprint(cfg, dataset_ids=train_ds.identities, student=student, tokenizer_fp=tokenizer_fp)
    callbacks = [
        RunFingerprint(fingerprint, r.allow_changed, cfg.optim),
        AlphaCallback(k.alpha_schedule()),
        BatchCounts(),
        SpeedMonitor(window_size=10),
        LRMonitor(),
    ]
    if r.stop_after:
        callbacks.append(StopAfter(r.stop_after))
    if r.sample_log_dir:
        callbacks.append(SampleLog(r.sample_log_dir))
    callbacks += list(extra_callbacks or []) + kill_callbacks(r.save_folder)
    algorithms = (
        [GradientClipping(clipping_type="norm", clipping_threshold=cfg.optim.grad_clip)] if cfg.optim.grad_clip else []
    )

    # Composer touches a remote save_folder while it builds the Trainer (autoresume, its upload check)
    refusals = (
        contextlib.nullcontext()
        if storage.is_local(r.save_folder or "")
        else storage.access(f"run.save_folder {redact_uri(r.save_folder)}")
    )
    with refusals:
        return make_trainer(
            r.autoresume,
            model=model,
            train_dataloader=train_dl,
            eval_dataloader=evaluators or None,
            eval_interval=r.eval_interval if evaluators else 1,
            max_duration=r.max_duration,
            optimizers=optimizer,
            schedulers=build_scheduler(cfg),
            step_schedulers_every_batch=True,
            algorithms=algorithms,
            callbacks=callbacks,
            loggers=build_loggers(cfg),
            run_name=r.run_name,
            save_folder=r.save_folder,
            save_interval=r.save_interval,
            save_num_checkpoints_to_keep=r.save_num_checkpoints_to_keep,
            save_overwrite=not r.autoresume,
            autoresume=r.autoresume,
            device=device,
            precision=r.precision,
            device_train_microbatch_size=d.microbatch_size or batch,
            seed=r.seed,
            deterministic_mode=r.deterministic,
            progress_bar=False,
            log_to_console=False,
            console_stream="stderr",
            python_log_level=None,
        )


def make_trainer(resuming: bool, **kwargs):
    """composer.Trainer(**kwargs); a checkpoint whose weights do not fit the student is refused by name."""
    try:
        return Trainer(**kwargs)
    except RuntimeError as e:
        if resuming and "Error(s) in loading state_dict" in str(e):
            detail = " ".join(str(e).split("\n")[1:3]).strip()
            raise ResumeMismatch(
                f"run.autoresume: model.shape: the checkpoint in run.save_folder holds a student of "
                f"other shapes ({detail}); resume with its model settings or start a new run"
            ) from None
        raise


def train(cfg: TrainConfig, extra_callbacks: list | None = None):
    """Build and fit; returns the (closed) Trainer so callers can read its state."""
    trainer = build_trainer(cfg, extra_callbacks)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer
