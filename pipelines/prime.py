"""The codec prime (compact5): teacher signal on the corpus's first tokens, written once per output.

compact5 codes every sample against a *prime* (`schemas.codecs.prime`): the teacher's kept ids
on a few thousand tokens of the same corpus. It must exist before the first sample is encoded
and never change afterwards, so it is its own small branch of the graph, whose one output is a
side input of the encoder, the part writer and the final step:

    first units -> ReadAndPack -> each unit's first sequences -> (all) the first `prime_tokens`
    tokens in unit order -> RunInference(teacher) -> Prime -> `DatasetDir.publish_prime`

`publish_prime` creates `codec_prime.bin` only if it is absent and returns the stored bytes: of
runs racing for one output exactly one writes it and all code against that one. A resumed run
reads the stored prime on the launcher and skips the branch (the teacher is not called for it;
forward passes on another machine could round differently and change the prime under parts
already coded against it). The branch re-reads at most `PRIME_UNITS` units and runs the teacher
on at most `prime_tokens` tokens (8,192 by default: ~0.003 % of a 300 M-token run); its counters
carry the `prime_` prefix so the run's own counts stay the dataset's.
"""

from __future__ import annotations

import math

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from pipelines.packing import ReadAndPack
from pipelines.teacher import TeacherModelHandler, Unscored
from schemas import DatasetDir
from schemas.codecs import Prime

PRIME_UNITS = 8  # the first units (in plan order) the prime is taken from


def needs_prime(codec) -> bool:
    """Whether the codec codes against a dataset prime (`schemas.codecs.PrimedCodec`)."""
    return codec.needs_prime


def first_sequences(seqs: list, unit_order: dict[str, int], n_seqs: int) -> list:
    """The first `n_seqs` sequences in plan order (unit, then position in the unit)."""
    return sorted(seqs, key=lambda p: (unit_order[p.unit], p.index))[:n_seqs]


def build_prime(results: list, unit_order: dict[str, int], prime_tokens: int) -> Prime:
    """The prime from the teacher's results on the first sequences: real tokens only, in plan
    order, cut at `prime_tokens`; a sequence the teacher could not score is left out."""
    parts, left = [], prime_tokens
    for r in sorted(results, key=lambda r: (unit_order[r.example.unit], r.example.index)):
        if left <= 0 or isinstance(r.inference, Unscored):
            continue
        n = min(int(r.example.n_tokens), left)
        parts.append((r.example.tokens[:n], r.inference.kept.head(n)))
        left -= n
    return Prime.from_signal(parts)


def publish(results: list, output: str, unit_order: dict[str, int], prime_tokens: int) -> bytes:
    """Build the prime and publish it unless another run did first; the stored bytes."""
    return DatasetDir(output).publish_prime(build_prime(results, unit_order, prime_tokens).to_bytes())


def prime_input(p: beam.Pipeline, plan, codec) -> beam.PCollection:
    """A one-element PCollection: the prime's stored bytes (the launcher's copy on a resumed run)."""
    c = plan.config
    if plan.prime is not None:
        return p | "Prime" >> beam.Create([plan.prime])
    unit_order = {u.name: i for i, u in enumerate(plan.units)}
    n_seqs = math.ceil(codec.prime_tokens / c.seq_len)
    handler = TeacherModelHandler(c, min_vocab=plan.tokenizer_len, metric_prefix="prime_")
    read = (
        p
        | "PrimeUnits" >> beam.Create(plan.units[:PRIME_UNITS])
        | "PrimeRead"
        >> beam.ParDo(
            ReadAndPack(
                c.tokenizer_uri,
                c.text_column,
                c.seq_len,
                plan.sep_id,
                plan.bos_id,
                plan.source_fp,
                metric_prefix="prime_",
            )
        ).with_outputs(ReadAndPack.META, main="seqs")
    )
    return (
        read.seqs
        | "PrimeHeads" >> beam.Filter(lambda s: s.index < n_seqs)
        | "PrimeGather" >> beam.combiners.ToList()
        | "PrimeFirst" >> beam.FlatMap(first_sequences, unit_order, n_seqs)
        | "PrimeTeacher" >> RunInference(handler, inference_args=dict(c.inference_args))
        | "PrimeSignal" >> beam.combiners.ToList()
        | "PrimePublish" >> beam.Map(publish, c.output, unit_order, codec.prime_tokens)
    )
