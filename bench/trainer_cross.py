"""bench.trainer's (b''): the loader WITH re-tokenisation against the cross-tokenizer KD step.

A student with its own tokenizer (`distill.cross_tokenizer`) reads every teacher sample through the
loader's re-tokeniser (bytes of the teacher's tokens -> the student's tokens -> byte alignment,
`trainer.student_text`), which costs loader time the same-tokenizer loader of (b) does not pay;
its KD step (method alm, from the hidden state, `trainer.cross_term`) is another step too. Both
are built as `pdistill train` builds them (`trainer.train.student_text_for`, `cross_term_for`):
the student tokenizer is a byte-level BPE of 8,192 ids trained with `pdistill.tokenizer_train` on
the demo corpus's prose (`pdistill.corpus`: pydoc topics and stdlib docstrings, the bench's teacher
text among them), the student pd_best's with that vocabulary, alpha at its 0.9 peak.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import statistics
import time

from bench.trainer import KD_ALPHA, loader_rate, make_loader, train_step

STUDENT_VOCAB = 8192
METHOD = "alm"


def train_student_tokenizer(work: str, vocab: int = STUDENT_VOCAB):
    """A byte-level BPE of `vocab` ids on `pdistill.corpus`'s documents, saved as the trainer loads it;
    the loaded Hugging Face tokenizer (what model.tokenizer gives `pdistill train`)."""
    from transformers import AutoTokenizer

    from pdistill import corpus, tokenizer_train

    src = os.path.join(work, "student-corpus.jsonl")
    with open(src, "w") as f:
        for doc in corpus.all_documents():
            f.write(json.dumps({"text": doc.text}) + "\n")
    tok, _ = tokenizer_train.train([src], vocab)
    out = os.path.join(work, "student-tokenizer")
    tokenizer_train.save(tok, out)
    return AutoTokenizer.from_pretrained(out)


def cross_config(vocab: int = STUDENT_VOCAB):
    """pd_best with a student of `vocab` ids and distill.cross_tokenizer.method alm."""
    from trainer.config import CrossTokenizerConfig, load_config

    cfg = load_config("pd_best")
    hf = dict(cfg.model.hf_config, vocab_size=vocab)
    return cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"hf_config": hf}),
            "distill": cfg.distill.model_copy(update={"cross_tokenizer": CrossTokenizerConfig(method=METHOD)}),
        }
    )


def build_cross_model(cfg, dataset, alpha: float):
    """The seeded student in a DistillationModel with the run's cross-tokenizer term (read off the
    loader's dataset, as `pdistill train` does); AdamW as the trainer builds it."""
    from composer.utils import reproducibility

    from trainer.cross_term import cross_term_for
    from trainer.model import DistillationModel
    from trainer.train import build_optimizer, build_student

    reproducibility.seed_all(cfg.run.seed)
    student = build_student(cfg, None)
    model = DistillationModel(student, cfg.distill, alpha=alpha, cross=cross_term_for(cfg.distill, dataset))
    model.bench_variant = "cross-" + METHOD
    return model, build_optimizer(cfg, model.parameters())


def cross_step_time(cfg, dataset, batches: list[dict], rounds: int) -> float:
    """Median step time of the cross-tokenizer KD step over `rounds` steps after one warm-up step
    (what bench.trainer's `train_step` does: forward, loss, backward, clip, AdamW)."""
    model, opt = build_cross_model(cfg, dataset, KD_ALPHA)
    train_step(model, opt, cfg, batches[0])  # warm-up: allocator, optimizer state
    times = []
    for r in range(rounds):
        b = batches[(r % (len(batches) - 1)) + 1] if len(batches) > 1 else batches[0]
        t0 = time.perf_counter()
        train_step(model, opt, cfg, b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(args, data: str, work: str) -> None:
    """(b''): loader samples/s with re-tokenisation against the consumption of the cross-tokenizer
    KD step, on bench.trainer's dataset (which carries the teacher's tokenizer files and next_logp)."""
    from trainer.train import student_text_for

    t0 = time.perf_counter()
    student_tok = train_student_tokenizer(work)
    t_tok = time.perf_counter() - t0
    cfg = cross_config()
    text = student_text_for(cfg, student_tok)  # what `pdistill train` gives the loader
    ds, dl = make_loader(data, os.path.join(work, "cache-cross-batches"), args.batch, student_text=text)
    it = iter(dl)
    batches = list(itertools.islice(it, 3))  # as (a): one warm-up batch, then the others in turn
    del it, dl
    t_x = cross_step_time(cfg, ds, batches, args.rounds)
    s_len = ds.student_text.retokenizer.s_len
    del ds
    gc.collect()
    loader_sps, n = loader_rate(data, os.path.join(work, "cache-loader-cross"), args.batch, student_text=text)
    train_sps = args.batch / t_x
    ratio = loader_sps / train_sps
    print(
        f"(b'') loader with re-tokenisation to a byte-level BPE of {len(student_tok):,} ids (trained in "
        f"{t_tok:.0f} s; student seq_len {s_len}): {loader_sps:.0f} samples/s (decode + re-tokenise + align + "
        f"collate, {n} samples); cross-tokenizer KD ({METHOD}, student vocab {STUDENT_VOCAB:,}) step "
        f"{t_x * 1e3:.0f} ms (median of {args.rounds}), consumes {train_sps:.1f} samples/s"
    )
    print(f"    loader / training          {ratio:6.1f}x   target >= 10x    {'PASS' if ratio >= 10 else 'MISS'}")
    if args.workers:
        cache = os.path.join(work, "cache-loader-cross-workers")
        sps, n = loader_rate(data, cache, args.batch, workers=args.workers, student_text=text)
        print(
            f"    with {args.workers} DataLoader workers: loader {sps:.0f} samples/s ({n} samples), "
            f"{sps / train_sps:.1f}x training (info)"
        )
