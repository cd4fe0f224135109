"""Writing the dataset: one MDS part per work unit, published whole; then root index + manifest.

A part is written with streaming's MDSWriter into local temp space and copied to
`<out>/parts/<unit>/` with its `index.json` last: the part's index is its commit marker, so a
reader (and a resumed run) never takes a half-copied part for a finished one. A retried bundle
rewrites the same bytes (packing and inference are deterministic), and a part whose index is
already there is left alone: retries cannot duplicate or corrupt it.

Paths and publishing order belong to `schemas.dataset_dir.DatasetDir`. Beside the shards, the
part's `stats.json` holds the unit's counts (documents, packed documents, dead letters, sequences,
tokens; its file's index and why it was not read whole, for the manifest's per-source
accounting, `pipelines.accounting`) and the settings fingerprint the part was written with, so
the final step reconciles counts without re-reading shards and refuses to publish a part written
with other settings (naming it); the unit's rejected documents go to `dead_letter/<unit>.jsonl`
(one JSON object per line: file, unit, position, kind, reason, excerpt), published before the
part's index. Then the root `index.json` (`DatasetDir.root_index`) and `manifest.json` last: the
manifest is the plan's `Manifest`, its sources and counts filled in with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines import faults
from pipelines.accounting import account_sources
from pipelines.output import PartMismatch
from pipelines.teacher import Unscored
from schemas import DatasetDir, build_sample, make_codec, mds_columns
from schemas.codecs import Prime
from schemas.dataset_dir import PRIME_NAME
from schemas.integrity import check_dead_letters, part_stats
from schemas.manifest import Counts, Manifest
from schemas.redact import redact_uri

COUNT_KEYS = (
    "documents",
    "packed_documents",
    "dead_letters",
    "sequences",
    "tokens",
    "unscored_sequences",
    "unscored_tokens",
)


class EncodeSample(beam.DoFn):
    """PredictionResult(Packed, Scored | Unscored) -> (unit, (index, MDS sample dict))."""

    def __init__(self, codec: str, codec_params: dict, vocab_size: int, kept_k: int):
        self.codec_name, self.codec_params = codec, codec_params
        self.vocab_size, self.kept_k = vocab_size, kept_k

    def setup(self):
        self.codec = self.base = make_codec(self.codec_name, self.codec_params)
        self.prime_bytes = None

    def process(self, result, prime: bytes | None = None):
        """`prime`: the codec prime's stored bytes (a side input, for a codec that has one)."""
        if prime is not None and prime is not self.prime_bytes:
            if self.prime_bytes is None or prime != self.prime_bytes:
                self.codec = self.base.with_prime(Prime.from_bytes(prime))
            self.prime_bytes = prime
        p, tr = result.example, result.inference
        if isinstance(tr, Unscored):  # not written; WritePart makes it a dead letter with its tokens
            yield (
                p.unit,
                (
                    "x",
                    p.index,
                    {
                        "n_tokens": int(p.n_tokens),
                        "sample_id": int(p.sample_id),
                        "tokens": p.tokens[: p.n_tokens].tolist(),
                        "doc_starts": [int(d) for d in p.doc_starts],
                        "reason": tr.reason,
                    },
                ),
            )
            return
        sample = build_sample(
            sample_id=p.sample_id,
            tokens=p.tokens,
            n_tokens=p.n_tokens,
            doc_starts=p.doc_starts,
            truncated=tr.kept,
            codec=self.codec,
            vocab_size=self.vocab_size,
            top_k=self.kept_k,
            unit=p.unit,
            next_logp=tr.next_logp,
        )
        yield p.unit, ("s", p.index, sample)


class WritePart(beam.DoFn):
    """(unit, [samples and the unit's meta]) -> one published part; yields the unit's stats."""

    def __init__(self, output: str, vocab_size: int, kept_k: int, settings_fp: str):
        self.output, self.vocab_size, self.kept_k, self.settings_fp = output, vocab_size, kept_k, settings_fp

    def setup(self):
        self.parts_done = Metrics.counter("pdistill", "parts_written")
        self.unscored = Metrics.counter("pdistill", "unscored_sequences")

    def process(self, element, prime: bytes | None = None):
        """`prime`: the codec prime's stored bytes (a side input, for a codec that has one): its
        SHA-256 goes into the part's stats, so the final step refuses parts coded against another."""
        unit, items = element
        samples, unscored, meta = [], [], None
        for item in items:
            if item[0] == "s":
                samples.append((item[1], item[2]))
            elif item[0] == "x":
                unscored.append((item[1], item[2]))
            else:
                meta = item[1]
        if meta is None:
            raise RuntimeError(f"unit {unit}: samples without the unit's read summary")
        faults.maybe_fail("sink", unit)
        out = DatasetDir(self.output)
        if out.part_published(unit):  # a retry after the part was published
            yield unit, out.read_stats(unit)
            return
        samples.sort(key=lambda s: s[0])
        unscored.sort(key=lambda s: s[0])
        indexes = sorted(i for i, _ in samples + unscored)
        if indexes != list(range(meta["sequences"])):
            raise RuntimeError(
                f"unit {unit}: got sequence indexes {indexes[:10]}..., expected 0..{meta['sequences'] - 1}"
            )
        dead = meta.get("dead", []) + [unscored_letter(unit, meta, i, u) for i, u in unscored]
        lost_tokens = sum(u["n_tokens"] for _, u in unscored)
        stats = {
            "unit": unit,
            "settings_fingerprint": self.settings_fp,
            **{k: meta.get(k, 0) for k in COUNT_KEYS},
            "source": meta.get("source"),
            "incomplete": meta.get("incomplete", []),
        }
        stats.update(
            sequences=meta["sequences"] - len(unscored),
            tokens=meta["tokens"] - lost_tokens,
            unscored_sequences=len(unscored),
            unscored_tokens=lost_tokens,
        )
        if prime is not None:
            stats["codec_prime_sha256"] = prime_digest(prime)
        if unscored:
            self.unscored.inc(len(unscored))
        if dead:
            out.write_dead_letters(unit, dead)
        with tempfile.TemporaryDirectory(prefix=f"pdistill-{unit}-") as tmp:
            local = os.path.join(tmp, unit)
            write_mds(local, [s for _, s in samples], self.vocab_size, self.kept_k)
            out.publish_part(
                unit,
                local,
                stats,
                after_each=lambda name: faults.maybe_fail("upload", unit),
                before_commit=lambda name: faults.maybe_fail("write", unit),
            )
        self.parts_done.inc()
        yield unit, stats


def unscored_letter(unit: str, meta: dict, index: int, u: dict) -> dict:
    """The dead letter of a sequence the teacher could not score: its tokens, so nothing is lost
    (`documents` 0: its documents were packed and are counted there)."""
    return {
        "file": meta.get("file", ""),
        "unit": unit,
        "kind": "teacher_unscored",
        "reason": u["reason"],
        "position": {"sequence": index, "sample_id": u["sample_id"], "doc_starts": u["doc_starts"]},
        "excerpt": "",
        "tokens": u["tokens"],
        "documents": 0,
        "incomplete": False,
    }


def write_mds(local_dir: str, samples: list[dict], vocab_size: int, kept_k: int) -> None:
    from streaming import MDSWriter  # noqa: PLC0415 (late: streaming imports torch)

    with MDSWriter(
        out=local_dir,
        columns=mds_columns(vocab_size, kept_k, next_logp=True),
        compression="zstd",
        hashes=["xxh3_64"],
        max_workers=1,
    ) as w:
        for s in samples:
            w.write(s)


def build_root_index(output: str, units: list[str], settings_fp: str) -> tuple[dict, dict, list[dict]]:
    """Root index over every unit's part in sorted order, the summed counts, each unit's stats;
    refuses a part whose stats do not carry `settings_fp` (written by another run, or by an older
    pdistill)."""
    out = DatasetDir(output)
    missing = sorted(set(units) - out.finished_units())
    if missing:
        raise RuntimeError(
            f"{len(missing)} parts are missing under {out.parts_uri} "
            f"(first: {missing[0]}); re-run the same command to compute them"
        )
    stats, problems = part_stats(out, sorted(units))
    if problems:  # missing or unreadable: counts a manifest would have to invent
        raise _part_mismatch(output, problems[0].file.split("/")[1], f"cannot be counted ({problems[0]})")
    per_unit = [stats[unit] for unit in sorted(units)]
    totals = dict.fromkeys(COUNT_KEYS, 0)
    for stats in per_unit:
        if stats.get("settings_fingerprint") != settings_fp:
            raise _part_mismatch(
                output,
                stats["unit"],
                f"was written with settings {stats.get('settings_fingerprint')}, "
                f"the dataset's are {settings_fp}; refusing to publish a mixed dataset",
            )
        for k in COUNT_KEYS:
            totals[k] += int(stats.get(k, 0))  # parts written before a key existed: 0
    return out.root_index(units), totals, per_unit


def _part_mismatch(output: str, unit: str, what: str) -> PartMismatch:
    """A part that cannot join the dataset, and what to do about it."""
    return PartMismatch(
        f"part {redact_uri(DatasetDir(output).part_uri(unit))} {what}: delete that part folder and "
        "re-run the same command to recompute it"
    )


def prime_digest(prime: bytes) -> str:
    return Prime.from_bytes(prime).digest


def finalize(_computed, output: str, units: list[str], manifest: Manifest, prime: bytes | None = None) -> dict:
    """Root index.json, then manifest.json (last). Runs once, after every part is published.
    `manifest` is the plan's, whose sources and counts are filled in here from the parts' stats;
    with a codec prime, its SHA-256 joins the codec's parameters and every part must carry it."""
    index, totals, per_unit = build_root_index(output, units, manifest.settings_fingerprint)
    _, problems = check_dead_letters(DatasetDir(output), dict(zip(sorted(units), per_unit)))
    if problems:  # the records the counts stand for are gone or damaged: never publish counts without them
        raise _part_mismatch(
            output,
            problems[0].file.split("/")[-1].removesuffix(".jsonl"),
            f"does not reconcile with its dead letters ({problems[0]})",
        )
    if prime is not None:
        digest = prime_digest(prime)
        for stats in per_unit:
            if stats.get("codec_prime_sha256") != digest:
                raise _part_mismatch(
                    output,
                    stats["unit"],
                    f"was coded against codec prime {stats.get('codec_prime_sha256')}, "
                    f"the output's {PRIME_NAME} is {digest}; refusing to publish a dataset it cannot decode",
                )
        manifest = dataclasses.replace(
            manifest,
            codec=dataclasses.replace(manifest.codec, params={**manifest.codec.params, "prime_sha256": digest}),
        )
    sources, incomplete_files = account_sources(manifest.sources, per_unit)
    counts = Counts(units=len(units), incomplete_files=incomplete_files, **totals)
    if not counts.reconciles():
        raise RuntimeError(f"counts do not reconcile: {counts}")
    out = DatasetDir(output)
    out.publish_index(index)
    faults.maybe_fail("publish", "root")  # test hook: a kill between the root index and the manifest
    out.publish_manifest(dataclasses.replace(manifest, sources=sources, counts=counts))
    return {"units": len(units), **totals}
