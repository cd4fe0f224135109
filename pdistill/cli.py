"""`pdistill <command> ...`: one console command; each subcommand lives with the code it runs.

Subcommands are imported lazily so that `pdistill inspect` works without torch or Beam installed.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from pdistill import __version__

COMMANDS = {
    "logits": ("pipelines.cli", "run the Beam teacher pass: corpus -> distillation dataset (MDS + manifest)"),
    "train": ("trainer.cli", "pre-train a student with Composer on a distillation dataset"),
    "plan": ("pdistill.plan", "predict a teacher pass's tokens, bytes, accelerator-hours and cost from a sample"),
    "inspect": ("pdistill.inspect", "is a dataset whole? (every shard vs its index), its manifest, counts, fidelity"),
    "teacher": ("pdistill.teacher", "teacher utilities (import-gguf: GGUF file -> Hugging Face checkpoint)"),
    "tokenizer": ("pdistill.tokenizer_train", "train a byte-level BPE student tokenizer on the lake (tokenizer train)"),
    "cache": ("pdistill.cache", "list the trainer's local dataset caches; prune copies of replaced datasets"),
    "demo": ("pdistill.demo", "the end-to-end demo on the embedded default (see README)"),
}


def usage() -> str:
    lines = ["usage: pdistill <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`pdistill <command> --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    # google-cloud client libraries warn about grpcio at every import; that is not the user's concern
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(grpcio|Post-Quantum).*")
    name = argv[0]
    if name not in COMMANDS:
        print(f"pdistill: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from schemas.redact import redact_process_output, redact_text  # noqa: PLC0415 (late: start-up cost)

    redact_process_output(argv[1:])  # every command: no secret of its URIs in what it prints or logs
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(argv[1:]) or 0)
    except SystemExit as e:  # a refusal's message may hold a library's text
        if isinstance(e.code, str):
            raise SystemExit(redact_text(e.code)) from None
        raise


if __name__ == "__main__":
    sys.exit(main())
