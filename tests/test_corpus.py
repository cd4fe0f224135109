"""The demo corpus: real stdlib prose, a deterministic document-level split, Parquet + fingerprint."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from pdistill import corpus


def test_documents_are_real_prose_with_stable_keys():
    docs = corpus.pydoc_documents()
    assert len(docs) > 100
    assert all(len(d.text) >= corpus.MIN_DOC_CHARS for d in docs)
    assert len({d.key for d in docs}) == len(docs)
    assert sum(len(d.text) for d in docs) > 400_000  # the reference text, ~465 KB
    assert any("if_stmt" in d.text for d in docs)


def test_split_is_by_document_hash_and_order_independent():
    docs = corpus.pydoc_documents()
    a = corpus.split_documents(docs, heldout_percent=10)
    b = corpus.split_documents(list(reversed(docs)), heldout_percent=10)
    assert [d.key for d in a["train"]] == [d.key for d in b["train"]]
    assert not {d.key for d in a["train"]} & {d.key for d in a["heldout"]}
    assert 0.03 < len(a["heldout"]) / len(docs) < 0.2
    # budgets cut each split without moving a document to the other split
    c = corpus.split_documents(docs, heldout_percent=10, train_chars=20_000, heldout_chars=5_000)
    assert {d.key for d in c["train"]} <= {d.key for d in a["train"]}
    assert 20_000 <= sum(len(d.text) for d in c["train"]) < 20_000 + max(len(d.text) for d in docs)


def test_build_writes_parquet_and_marker_and_reuses(tmp_path):
    rec = corpus.build(tmp_path, train_chars=8_000, heldout_chars=3_000, num_files=2)
    assert rec["reused"] is False
    for split in corpus.SPLITS:
        files = sorted((tmp_path / "corpus" / split).glob("*.parquet"))
        assert files
        texts = [t for f in files for t in pq.read_table(f).column("text").to_pylist()]
        assert len(texts) == rec["splits"][split]["documents"]
        assert sum(len(t) for t in texts) == rec["splits"][split]["chars"]
    marker = json.loads((tmp_path / "corpus" / corpus.MARKER).read_text())
    assert marker["fingerprint"].startswith("sha256:")
    assert not list(tmp_path.glob(".corpus.tmp-*"))
    again = corpus.build(tmp_path, train_chars=8_000, heldout_chars=3_000, num_files=2)
    assert again["reused"] is True and again["fingerprint"] == rec["fingerprint"]
