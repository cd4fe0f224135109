"""The teacher-pass job: checks and planning on the launcher, then the Beam graph, then the run.

`prepare` does everything that can fail without a worker, before any work is scheduled:
inputs exist and are planned into units, the tokenizer loads and its separator is valid, the
teacher checkpoint is readable and covers the tokenizer's vocabulary, the output lies outside
every input and is empty or ours, and this run claims it atomically for its settings
(`pipelines.output`). It also finds the parts already published (a resumed run) and
leaves them out of the work, so neither the tokenizer nor the teacher sees them again.

Graph:  units -> Reshuffle -> ReadAndPack -> RunInference(teacher) -> EncodeSample
        -> (+ each unit's read summary) GroupByKey(unit) -> WritePart -> ToList -> Finalize
With a codec that has a prime (compact5), `pipelines.prime`'s small branch computes and publishes
it first; encoder, part writer and final step take its stored bytes as a side input.
On the DirectRunner, encoded samples and read summaries also feed the progress counters
(`pipelines.progress`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.config import PipelineConfig
from pipelines.output import (  # noqa: F401  (SettingsMismatch, OutputError: part of this module's API)
    OutputError,
    SettingsMismatch,
    claim_output,
    clean_orphans,
    refuse_overlap,
    refuse_unwritable,
    verify_finished,
)
from pipelines.packing import TEXT_ENCODING, ReadAndPack, load_tokenizer, resolve_bos, resolve_separator
from pipelines.prime import needs_prime, prime_input
from pipelines.progress import Progress, RecordProgress
from pipelines.sink import EncodeSample, WritePart, finalize
from pipelines.sources import SourceFile, Unit, list_inputs, plan_units, source_fingerprint, source_versions
from pipelines.teacher import TeacherModelHandler
from pipelines.teacher_checkpoint import TeacherInfo, check_tokenizer_fits, inspect_teacher, prefetch_revision
from pipelines.teacher_limits import check_fits
from pipelines.tokenizer_files import tokenizer_files
from schemas import DatasetDir, Manifest, fingerprint_tokenizer, make_codec, storage
from schemas import next_logp as next_logp_codec
from schemas.codecs import Prime
from schemas.errors import CodecError
from schemas.manifest import Codec, Counts, NextLogp, Source, Teacher, Tokenizer, Truncation
from schemas.redact import redact_uri
from schemas.truncation import validate_params

log = logging.getLogger("pdistill.pipeline")


@dataclass
class Plan:
    config: PipelineConfig
    files: list[SourceFile]
    units: list[Unit]
    todo: list[Unit]  # units whose part is not published yet
    source_fp: str
    sep_id: int
    bos_id: int | None
    tokenizer_len: int
    teacher: TeacherInfo
    settings: dict  # {"settings": shaping settings, "resolved": identities}
    settings_fp: str
    complete: bool = False  # the output already has a manifest with these settings
    manifest: Manifest | None = None  # what finalize publishes, once it has filled in sources and counts
    prime: bytes | None = None  # the codec prime already stored in the output (a resumed compact5 run)
    hidden: list[str] = dataclasses.field(default_factory=list)  # input files skipped for a hidden name


def prepare(config: PipelineConfig) -> Plan:
    config.require_io()
    refuse_overlap(config.output, config.inputs)
    refuse_unwritable(config.output)
    revision = prefetch_revision(config.teacher)  # overlaps the sha256 of the weights with the checks below
    listing = list_inputs(config.inputs, config.format)
    files = listing.files
    units = plan_units(files, config.rows_per_unit, config.bytes_per_unit)
    src_fp = source_fingerprint(files)
    tok = load_tokenizer(config.tokenizer_uri)
    sep_id = resolve_separator(tok, config.separator, f"tokenizer {config.tokenizer_uri}")
    bos_id = resolve_bos(tok, config.add_bos, f"tokenizer {config.tokenizer_uri}")
    teacher = inspect_teacher(config.teacher, len(tok), config.tokenizer_uri, revision)
    check_tokenizer_fits(
        teacher,
        tok,
        redact_uri(config.teacher),
        redact_uri(config.tokenizer_uri),
        own_checked=config.tokenizer_uri != config.teacher,
    )
    check_fits(teacher, config)  # seq_len within the teacher's positions; the forward fits in memory
    if config.selection == "top_p_k":
        validate_params(config.top_p, config.top_k, teacher.vocab_size)
    resolved = {
        "source_fingerprint": src_fp,
        "teacher_revision": teacher.revision,
        "tokenizer_fingerprint": fingerprint_tokenizer(tok),
        "separator_id": sep_id,
        "bos_id": bos_id,
        "vocab_size": teacher.vocab_size,
        "text_encoding": TEXT_ENCODING,  # a pdistill that encoded them as control ids must not resume this run
    }
    settings = {"settings": config.shaping_settings(), "resolved": resolved}
    fp = config.settings_fingerprint(resolved)
    plan = Plan(
        config, files, units, [], src_fp, sep_id, bos_id, len(tok), teacher, settings, fp, hidden=listing.hidden
    )
    plan.manifest = _manifest(plan)
    stored_tokenizer = tokenizer_files(config.tokenizer_uri, tok)
    with storage.access(f"output {redact_uri(config.output)}"):
        plan.complete = claim_output(config.output, fp, settings, source_versions(files))
        if plan.complete:
            verify_finished(config.output)  # "nothing to do" vouches for the dataset: damage is refused
        else:
            done = DatasetDir(config.output).finished_units()
            plan.todo = [u for u in units if u.name not in done]
            clean_orphans(config.output, {u.name for u in plan.todo})
            digests = DatasetDir(config.output).publish_tokenizer_files(stored_tokenizer)
            plan.manifest = dataclasses.replace(
                plan.manifest, tokenizer=dataclasses.replace(plan.manifest.tokenizer, files=digests)
            )
            if needs_prime(make_codec(config.codec, config.codec_params)):
                plan.prime = stored_prime(config.output, done)
    return plan


def stored_prime(output: str, done: set[str]) -> bytes | None:
    """The output's codec prime, if a run wrote one; refuses parts without their prime."""
    out = DatasetDir(output)
    data = out.read_prime()
    if data is None and done:
        raise OutputError(
            f"output {redact_uri(output)}: {len(done)} parts are published but the codec prime "
            f"{redact_uri(out.prime_uri)} they were coded against is missing; they cannot be decoded: "
            "restore that file, or delete the output and run again"
        )
    if data is not None:
        try:
            Prime.from_bytes(data, where=redact_uri(out.prime_uri))
        except CodecError as e:
            raise OutputError(f"output {redact_uri(output)}: {e}; delete the output and run again") from None
    return data


def _manifest(plan: Plan) -> Manifest:
    """The dataset's manifest as far as the launcher knows it; the counts (zero here) and each
    source's accounting are filled in by `pipelines.sink.finalize` from the parts."""
    c, r = plan.config, plan.settings["resolved"]
    sample = c.selection == "sample"
    return Manifest(
        teacher=Teacher(id=redact_uri(c.teacher), revision=plan.teacher.revision),
        tokenizer=Tokenizer(fingerprint=r["tokenizer_fingerprint"], separator_id=plan.sep_id, add_bos=c.add_bos),
        vocab_size=plan.teacher.vocab_size,
        seq_len=c.seq_len,
        truncation=Truncation(method=c.selection, top_p=1.0 if sample else c.top_p, top_k=c.kept_k, temperature=1.0),
        codec=Codec(name=c.codec, params=make_codec(c.codec, c.codec_params).params()),
        next_logp=NextLogp(**next_logp_codec.manifest_entry()),
        sources=[Source(uri=redact_uri(f.uri), fingerprint=f.fingerprint) for f in plan.files],
        source_fingerprint=plan.source_fp,
        settings_fingerprint=plan.settings_fp,
        counts=Counts(documents=0, packed_documents=0, dead_letters=0, sequences=0, tokens=0, units=0),
        extra={
            "trailing": c.trailing,
            "pad_id": plan.sep_id,
            "pad_log_tail": "-inf",
            "bos_id": plan.bos_id,
            "packing": f"separator after every document; {TEXT_ENCODING}; units packed independently",
            "tokenizer_uri": redact_uri(c.tokenizer_uri),
            "text_column": c.text_column,
            "format": c.format,
            "num_draws": c.num_draws if sample else None,
            "seed": c.seed if sample else None,
            "inference_args": c.inference_args,
            "dtype": c.dtype,
            "units_per_file": f"rows_per_unit={c.rows_per_unit:d} bytes_per_unit={c.bytes_per_unit:d}",
        },
    )


def build(p: beam.Pipeline, plan: Plan, progress_folder: str | None = None) -> None:
    """The graph; with `progress_folder`, two counting branches report progress there (pipelines.progress)."""
    c = plan.config
    handler = TeacherModelHandler(c, min_vocab=plan.tokenizer_len)
    vocab = plan.teacher.vocab_size
    read = (
        p
        | "Units" >> beam.Create(plan.todo)
        | "Spread" >> beam.Reshuffle()
        | "ReadAndPack"
        >> beam.ParDo(
            ReadAndPack(c.tokenizer_uri, c.text_column, c.seq_len, plan.sep_id, plan.bos_id, plan.source_fp)
        ).with_outputs(ReadAndPack.META, main="seqs")
    )
    codec = make_codec(c.codec, c.codec_params)
    prime = {"prime": beam.pvalue.AsSingleton(prime_input(p, plan, codec))} if needs_prime(codec) else {}
    encoded = (
        read.seqs
        | "Teacher" >> RunInference(handler, inference_args=dict(c.inference_args))
        | "Encode" >> beam.ParDo(EncodeSample(c.codec, c.codec_params, vocab, c.kept_k), **prime)
    )
    (
        (encoded, read[ReadAndPack.META])
        | "Join" >> beam.Flatten()
        | "ByUnit" >> beam.GroupByKey()
        | "WriteParts" >> beam.ParDo(WritePart(c.output, vocab, c.kept_k, plan.settings_fp), **prime)
        | "AllParts" >> beam.combiners.ToList()
        | "Finalize" >> beam.Map(finalize, c.output, [u.name for u in plan.units], plan.manifest, **prime)
    )
    if progress_folder:
        _ = encoded | "CountTeacher" >> beam.ParDo(RecordProgress(progress_folder, "teacher"))
        _ = read[ReadAndPack.META] | "CountRead" >> beam.ParDo(RecordProgress(progress_folder, "read"))


def make_options(config: PipelineConfig, extra_args: list[str]) -> PipelineOptions:
    """Beam options: pipelines.runner_options when present, plain flags otherwise."""
    runner_config = dict(config.runner_config)
    if config.runner.lower() in ("directrunner", "direct"):
        runner_config.setdefault("direct_running_mode", config.direct_running_mode)
        runner_config.setdefault("direct_num_workers", config.direct_num_workers)
    try:
        from pipelines.runner_options import build_options  # noqa: PLC0415 (late: optional, flags without it)
    except ImportError:
        flags = [f"--runner={config.runner}"] + [f"--{k}={v}" for k, v in runner_config.items()]
        return PipelineOptions(flags + list(extra_args))
    return build_options(config.runner, runner_config, list(extra_args))


def collect_metrics(result) -> dict:
    """Our counters and distributions (namespace 'pdistill'), committed values when the runner has them."""
    out = {}
    try:
        q = result.metrics().query()
    except Exception:  # some runners report no metrics
        return out
    for kind in ("counters", "distributions"):
        for m in q.get(kind, []):
            if not m.key.metric.namespace.startswith("pdistill"):
                continue
            value = m.committed if m.committed is not None else m.attempted
            name = m.key.metric.name
            if kind == "distributions":
                value = {"count": value.count, "sum": value.sum, "min": value.min, "max": value.max}
                out[name] = value
            else:
                out[name] = out.get(name, 0) + value
    micros = out.get("teacher_micros", 0)
    if micros:
        out["teacher_tokens_per_s"] = out.get("teacher_tokens", 0) / (micros / 1e6)
    return out


@dataclass
class RunReport:
    complete_before: bool
    units: int
    computed_units: int
    metrics: dict
    seconds: float
    output: str
    summary: dict
    hidden_files_skipped: int = 0  # input files not read for a hidden name (`.`/`_`: pipelines.sources)

    def as_dict(self):
        return dataclasses.asdict(self)


def run(
    config: PipelineConfig, extra_args: list[str] | None = None, options: PipelineOptions | None = None
) -> RunReport:
    """Prepare, build and run the teacher pass; returns what was done (raises on failure)."""
    t0 = time.time()
    plan = prepare(config)
    if plan.complete:
        return RunReport(
            True,
            len(plan.units),
            0,
            {},
            time.time() - t0,
            config.output,
            dataclasses.asdict(DatasetDir(config.output).read_manifest().counts),
            len(plan.hidden),
        )
    log.info(
        "%d units planned over %d files, %d to compute (%d already published under %s)",
        len(plan.units),
        len(plan.files),
        len(plan.todo),
        len(plan.units) - len(plan.todo),
        redact_uri(DatasetDir(config.output).parts_uri),
    )
    options = options or make_options(config, extra_args or [])
    p = beam.Pipeline(options=options)
    local = "direct" in config.runner.lower()  # a DirectRunner: its workers can write our progress files
    with Progress(config.output, plan.files, plan.todo, local_workers=local, enabled=config.progress) as progress:
        build(p, plan, progress.folder)
        result = p.run()
        result.wait_until_finish()
    manifest = DatasetDir(config.output).read_manifest()  # written by a worker (read_manifest drops listing caches)
    return RunReport(
        False,
        len(plan.units),
        len(plan.todo),
        collect_metrics(result),
        time.time() - t0,
        config.output,
        dataclasses.asdict(manifest.counts),
        len(plan.hidden),
    )
