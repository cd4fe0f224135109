"""`pdistill tokenizer train`: a byte-level BPE student tokenizer from the lake's training split.

A student with its own tokenizer (cross-tokenizer distillation) needs one that can spell any byte
and keeps the text's bytes as they are: byte-level BPE, no normaliser. The inputs are read like
the pipeline's (`pipelines.sources`: folders, globs, URIs; Parquet / JSONL / text, compressed or
not), in the pipeline's order, so the same inputs give the same tokenizer.json (checked by a
test: training is deterministic). Unusable records are counted (dead letters), never fatal.

Output folder: tokenizer.json (loads with `tokenizers.Tokenizer.from_file`) and the files of a
`PreTrainedTokenizerFast` (`transformers.AutoTokenizer.from_pretrained`), `<|endoftext|>` as
EOS, separator and pad.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pipelines.sources import InputError, list_inputs, plan_units, read_unit
from schemas import storage
from schemas.errors import ConfigError
from schemas.redact import redact_uri
from schemas.token_bytes import UnfitTokenizer, check_byte_coverage, token_bytes

EOS = "<|endoftext|>"
WHOLE_FILE = 1 << 62  # one work unit per file: the order is the files' order


class Counts:
    def __init__(self):
        self.documents = self.dead_letters = self.utf8_bytes = 0


def documents(inputs: list[str], text_column: str, fmt: str, counts: Counts, max_docs: int | None) -> Iterator[str]:
    """The inputs' document texts in the pipeline's order; dead letters counted and skipped."""
    files = list_inputs(inputs, fmt).files
    for unit in plan_units(files, WHOLE_FILE, WHOLE_FILE):
        for item in read_unit(unit, text_column):
            if isinstance(item, dict):
                counts.dead_letters += 1
                continue
            if max_docs is not None and counts.documents >= max_docs:
                return
            counts.documents += 1
            counts.utf8_bytes += len(item.text.encode("utf-8"))
            yield item.text


def train(
    inputs: list[str],
    vocab_size: int = 8192,
    text_column: str = "text",
    fmt: str = "auto",
    min_frequency: int = 2,
    max_docs: int | None = None,
) -> tuple[Tokenizer, Counts]:
    """A byte-level BPE tokenizer trained on the inputs' documents, checked for byte coverage."""
    if vocab_size < 257:
        raise ConfigError(f"--vocab-size must be >= 257 (256 bytes + {EOS}), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    counts = Counts()
    tok.train_from_iterator(documents(inputs, text_column, fmt, counts, max_docs), trainer=trainer)
    if counts.documents == 0:
        raise InputError(f"no usable document in the inputs ({counts.dead_letters} dead letters)")
    check_byte_coverage(token_bytes(tok.to_str()), "trained tokenizer")
    return tok, counts


def save(tok: Tokenizer, output: str) -> str:
    """Write the folder (local or a store URI); returns tokenizer.json's SHA-256."""
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 (late: transformers is heavy)

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=None)
    if storage.is_local(output):
        fast.save_pretrained(storage.local_path(output))
    else:
        with tempfile.TemporaryDirectory(prefix="pdistill-tokenizer-") as tmp:
            fast.save_pretrained(tmp)
            storage.upload_dir(tmp, output)
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pdistill tokenizer", description="student tokenizer utilities")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a byte-level BPE on the lake's training split")
    t.add_argument("--input", action="append", required=True, help="input URI / glob / folder (repeatable)")
    t.add_argument("--output", required=True, help="folder to write (local path or store URI)")
    t.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size incl. <|endoftext|> (default 8192)")
    t.add_argument("--text-column", default="text", help="text field of JSONL / Parquet records (default text)")
    t.add_argument("--format", default="auto", choices=["auto", "parquet", "jsonl", "text"])
    t.add_argument("--min-frequency", type=int, default=2, help="a merge's minimum pair count (default 2)")
    t.add_argument("--max-docs", type=int, help="train on the first N documents only")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.max_docs is not None and args.max_docs < 1:
            raise ConfigError(f"--max-docs must be >= 1, got {args.max_docs}")
        why = storage.unwritable(args.output)
        if why:
            raise ConfigError(f"--output {redact_uri(args.output)}: {why}")
        tok, counts = train(
            args.input, args.vocab_size, args.text_column, args.format, args.min_frequency, args.max_docs
        )
        with storage.access(f"output {redact_uri(args.output)}"):
            sha = save(tok, args.output)
    except (ConfigError, InputError, UnfitTokenizer, OSError) as e:
        print(f"pdistill tokenizer train: error: {e}", file=sys.stderr)
        return 2
    summary = {
        "output": redact_uri(args.output),
        "vocab_size": tok.get_vocab_size(),
        "documents": counts.documents,
        "dead_letters": counts.dead_letters,
        "utf8_bytes": counts.utf8_bytes,
        "tokenizer_json_sha256": sha,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
