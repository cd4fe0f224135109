"""The demo corpus: real English prose that is on every machine with Python, written as a data lake.

Sources (nobody on this project wrote them; both ship with CPython itself, so the corpus is
offline and reproducible for a given Python version):
  * `pydoc_data.topics`: the Python language reference text that `help()` shows (~465 KB),
    split into one document per section (a heading underlined with ***, === or ---);
  * the module docstrings of the standard library's own `.py` files, read with `ast` (no module
    is imported, so nothing runs), skipping test suites and docstrings under 200 characters.

Each document has a stable key (`pydoc/<topic>#<section>` or `stdlib/<relative path>`). The
train/held-out split is by a hash of the key: deterministic, document-level (no document is in
both splits), and independent of the order documents are found in. Optional character budgets
take documents in hash order until the budget is reached, so the demo can size its teacher pass
without changing which split a document belongs to.

Output (`<lake>/corpus/`):
  train/part-NNNNN.parquet, heldout/part-NNNNN.parquet   column `text` (plus `doc_key`)
  corpus.json                                            counts, bytes and fingerprints, written last
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from pydoc_data import topics

from schemas.identity import fingerprint_json, hasher, int_key, tagged

CORPUS_DIR = "corpus"
MARKER = "corpus.json"
SPLITS = ("train", "heldout")
MIN_DOC_CHARS = 200
_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}\s*$")
_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3"}


@dataclass(frozen=True)
class Document:
    key: str
    text: str


def _sections(topic: str, text: str) -> list[Document]:
    """Split one pydoc topic at its headings; tiny sections are merged into the following one."""
    lines = text.split("\n")
    starts = [0]
    for i in range(1, len(lines)):
        if (
            _UNDERLINE.match(lines[i])
            and lines[i - 1].strip()
            and len(lines[i].strip()) >= len(lines[i - 1].strip()) - 1
        ):
            if i - 1 > starts[-1]:
                starts.append(i - 1)
    starts.append(len(lines))
    chunks = ["\n".join(lines[a:b]).strip() for a, b in zip(starts[:-1], starts[1:])]
    docs, carry = [], ""
    for chunk in chunks:
        carry = f"{carry}\n\n{chunk}".strip() if carry else chunk
        if len(carry) >= MIN_DOC_CHARS:
            docs.append(carry)
            carry = ""
    if carry:
        if docs:
            docs[-1] = f"{docs[-1]}\n\n{carry}"
        else:
            docs.append(carry)
    return [Document(f"pydoc/{topic}#{i:03d}", d) for i, d in enumerate(docs)]


def pydoc_documents() -> list[Document]:
    out: list[Document] = []
    for topic in sorted(topics.topics):
        out.extend(_sections(topic, topics.topics[topic]))
    return out


def stdlib_docstring_documents() -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[Document] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS & set(rel.parts):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=True)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        if doc and len(doc) >= MIN_DOC_CHARS:
            out.append(Document(f"stdlib/{rel.as_posix()}", doc.strip()))
    return out


def all_documents() -> list[Document]:
    return pydoc_documents() + stdlib_docstring_documents()


def doc_hash(key: str) -> int:
    return int_key(key)


def split_of(key: str, heldout_percent: int) -> str:
    return "heldout" if doc_hash(key) % 100 < heldout_percent else "train"


def split_documents(
    docs: list[Document],
    heldout_percent: int = 10,
    train_chars: int | None = None,
    heldout_chars: int | None = None,
) -> dict[str, list[Document]]:
    """Documents by split, each split in hash order, cut at its character budget (if any)."""
    budgets = {"train": train_chars, "heldout": heldout_chars}
    by_split: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for d in sorted(docs, key=lambda d: (doc_hash(d.key), d.key)):
        by_split[split_of(d.key, heldout_percent)].append(d)
    for s in SPLITS:
        if budgets[s] is not None:
            kept, total = [], 0
            for d in by_split[s]:
                if total >= budgets[s]:
                    break
                kept.append(d)
                total += len(d.text)
            by_split[s] = kept
    return by_split


def fingerprint(docs: list[Document]) -> str:
    h = hasher()
    for d in docs:
        h.update(d.key.encode())
        h.update(b"\x00")
        h.update(d.text.encode())
        h.update(b"\x00")
    return tagged(h)


def _write_split(docs: list[Document], out_dir: Path, num_files: int, row_group_docs: int) -> list[dict]:
    import pyarrow as pa  # noqa: PLC0415 (late: optional dependency)
    import pyarrow.parquet as pq  # noqa: PLC0415 (late: optional dependency)

    out_dir.mkdir(parents=True, exist_ok=True)
    n_files = max(1, min(num_files, len(docs)))
    files = []
    for f in range(n_files):
        part = docs[f::n_files]  # round-robin: files of similar size
        table = pa.table({"text": [d.text for d in part], "doc_key": [d.key for d in part]})
        path = out_dir / f"part-{f:05d}.parquet"
        pq.write_table(table, path, row_group_size=max(1, row_group_docs), compression="zstd")
        files.append({"path": f"{out_dir.name}/{path.name}", "documents": len(part), "bytes": path.stat().st_size})
    return files


def read_marker(lake: str | os.PathLike) -> dict | None:
    path = Path(lake) / CORPUS_DIR / MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def build(
    lake: str | os.PathLike,
    *,
    heldout_percent: int = 10,
    train_chars: int | None = None,
    heldout_chars: int | None = None,
    num_files: int = 4,
    row_group_docs: int = 16,
) -> dict:
    """Write `<lake>/corpus/{train,heldout}/*.parquet` and `corpus.json`; reuse a matching one.

    Returns the marker record. The corpus is written to a temporary folder beside the final one
    and renamed into place, so a half-written corpus is never taken for a finished one.
    """
    params = {
        "heldout_percent": heldout_percent,
        "train_chars": train_chars,
        "heldout_chars": heldout_chars,
        "num_files": num_files,
        "row_group_docs": row_group_docs,
        "python": sys.version.split()[0],
    }
    final = Path(lake) / CORPUS_DIR
    existing = read_marker(lake)
    if existing is not None and existing.get("params") == params:
        existing["reused"] = True
        return existing
    by_split = split_documents(all_documents(), heldout_percent, train_chars, heldout_chars)
    tmp = final.with_name(f".{CORPUS_DIR}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    record = {
        "sources": [
            f"pydoc_data.topics (Python {params['python']} language reference)",
            f"module docstrings of the standard library in {sysconfig.get_paths()['stdlib']}",
        ],
        "params": params,
        "splits": {},
    }
    for s in SPLITS:
        docs = by_split[s]
        files = _write_split(docs, tmp / s, num_files, row_group_docs)
        record["splits"][s] = {
            "documents": len(docs),
            "chars": sum(len(d.text) for d in docs),
            "utf8_bytes": sum(len(d.text.encode()) for d in docs),
            "fingerprint": fingerprint(docs),
            "files": files,
        }
    record["fingerprint"] = fingerprint_json({s: record["splits"][s]["fingerprint"] for s in SPLITS})
    (tmp / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, final)
    record["reused"] = False
    return record


def split_glob(lake: str | os.PathLike, split: str) -> str:
    return str(Path(lake).resolve() / CORPUS_DIR / split / "*.parquet")
