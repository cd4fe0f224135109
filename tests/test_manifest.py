"""Manifest validation names the field at fault; compatibility checks refuse wrong pairings."""

import json

import pytest

from schemas import IncompatibleDataset, Manifest, ManifestError, check_compatible
from schemas.manifest import Codec, Counts, Source, Teacher, Tokenizer, Truncation


def make_manifest(**over):
    m = Manifest(
        teacher=Teacher(id="file:///models/t", revision="sha256:abc"),
        tokenizer=Tokenizer(fingerprint="sha256:tok", separator_id=0, add_bos=False),
        vocab_size=49152,
        seq_len=512,
        truncation=Truncation(method="top_p_k", top_p=0.95, top_k=50),
        codec=Codec(name="compact", params={"step": 0.0625}),
        sources=[Source(uri="file:///lake/a.parquet", fingerprint="sha256:1")],
        source_fingerprint="sha256:src",
        settings_fingerprint="sha256:set",
        counts=Counts(documents=10, packed_documents=9, dead_letters=1, sequences=4, tokens=2000, units=2),
    )
    return m if not over else Manifest(**{**m.__dict__, **over})


def test_round_trip():
    m = make_manifest()
    assert Manifest.from_json(m.to_json()) == m
    assert m.counts.reconciles()


def mutate(path, value=None, delete=False):
    raw = json.loads(make_manifest().to_json())
    node = raw
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(raw)


@pytest.mark.parametrize(
    "path, value, delete, match",
    [
        (["schema_version"], 99, False, "schema_version"),
        (["schema_version"], None, True, "schema_version"),
        (["vocab_size"], "49152", False, "'vocab_size' must be int"),
        (["vocab_size"], True, False, "'vocab_size' must be int"),
        (["teacher", "revision"], None, True, "missing field 'teacher.revision'"),
        (["truncation", "top_p"], 1.5, False, "truncation.top_p"),
        (["truncation", "method"], "beam", False, "truncation.method"),
        (["counts", "tokens"], 1.0, False, "counts.tokens"),
        (["sources"], {"uri": "x"}, False, "'sources' must be a list"),
        (["surprise"], 1, False, "unknown field 'surprise'"),
        (["seq_len"], 0, False, "seq_len"),
    ],
)
def test_validation_names_the_field(path, value, delete, match):
    with pytest.raises(ManifestError, match=match):
        Manifest.from_json(mutate(path, value, delete), where="gs://b/ds/manifest.json")


def test_invalid_json_names_the_file():
    with pytest.raises(ManifestError, match="gs://b/ds/manifest.json"):
        Manifest.from_json("{", where="gs://b/ds/manifest.json")


def test_compatibility():
    m = make_manifest()
    check_compatible(m, vocab_size=49152, tokenizer_fingerprint="sha256:tok", seq_len=512)
    # equal, not merely covering: a padded/larger student is refused (issue 11: README says "must match")
    with pytest.raises(IncompatibleDataset, match="vocab_size is 49152 but the student's is 49216; they must be equal"):
        check_compatible(m, vocab_size=49216)
    with pytest.raises(IncompatibleDataset, match="vocab_size is 49152"):
        check_compatible(m, vocab_size=32000)
    with pytest.raises(IncompatibleDataset, match="tokenizer"):
        check_compatible(m, tokenizer_fingerprint="sha256:other")
    with pytest.raises(IncompatibleDataset, match="seq_len"):
        check_compatible(m, seq_len=1024)
