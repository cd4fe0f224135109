"""`pdistill logits`: run the teacher pass (corpus -> distillation dataset).

Settings come from defaults, then `--config FILE.yaml`, then flags; flags Beam knows (and any
flag this command does not) are passed through to Beam's PipelineOptions, e.g.
`--direct_running_mode=multi_processing` or Dataflow's `--project`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from pipelines.config import ConfigError, PipelineConfig
from schemas.redact import redact_text, redact_uri

# flag -> config key (argparse dest is the key); everything defaults to None = "not given"
FLAGS = [
    ("--input", dict(action="append", dest="inputs", help="input URI, glob or folder (repeatable or comma list)")),
    ("--teacher", dict(help="teacher checkpoint: local folder or object-store URI")),
    ("--tokenizer", dict(help="tokenizer folder/URI (default: the teacher's)")),
    ("--output", dict(help="output dataset URI")),
    ("--format", dict(help="auto | parquet | jsonl | text")),
    ("--text-column", dict(dest="text_column", help="Parquet column / JSON key of the text (default text)")),
    ("--seq-len", dict(dest="seq_len", type=int)),
    ("--selection", dict(help="top_p_k | sample")),
    ("--top-p", dict(dest="top_p", type=float)),
    ("--top-k", dict(dest="top_k", type=int)),
    ("--num-draws", dict(dest="num_draws", type=int, help="draws per position for --selection sample")),
    ("--seed", dict(type=int)),
    ("--codec", dict(help="compact3 (default) | compact2 | compact | exact")),
    ("--codec-params", dict(dest="codec_params", type=json.loads, help="codec parameters as JSON")),
    ("--separator", dict(help="separator token id or string (default: the tokenizer's EOS)")),
    ("--add-bos", dict(dest="add_bos", action=argparse.BooleanOptionalAction, help="prepend BOS to every document")),
    ("--rows-per-unit", dict(dest="rows_per_unit", type=int)),
    ("--bytes-per-unit", dict(dest="bytes_per_unit", type=int)),
    ("--inference-args", dict(dest="inference_args", type=json.loads, help="JSON kwargs for the model call")),
    ("--dtype", dict(help="auto | float32 | bfloat16 | float16")),
    ("--batch-size", dict(dest="batch_size", type=int)),
    ("--device", dict(help="auto | cpu | cuda")),
    ("--runner", dict(help="Beam runner (default DirectRunner)")),
    ("--runner-config", dict(dest="runner_config_file", help="YAML/JSON file of runner settings")),
    ("--direct-running-mode", dict(dest="direct_running_mode", help="in_memory | multi_threading | multi_processing")),
    ("--direct-num-workers", dict(dest="direct_num_workers", type=int)),
    ("--progress", dict(action=argparse.BooleanOptionalAction, help="progress display (default on)")),
]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pdistill logits",
        description="Beam teacher pass: corpus (Parquet/JSONL/text on any fsspec URI) -> MDS dataset + manifest. "
        "Unknown --flags are passed to Beam's PipelineOptions.",
    )
    ap.add_argument("--config", help="YAML file of settings (keys as in pipelines.config.PipelineConfig)")
    ap.add_argument("--json", action="store_true", help="print the final report as JSON")
    ap.add_argument("--report-json", dest="report_json", metavar="PATH",
                    help="also write the final report as JSON to PATH (any fsspec URI)")
    for flag, kw in FLAGS:
        ap.add_argument(flag, default=None, **kw)
    return ap


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    base = {}
    if args.config:
        import dataclasses

        base = dataclasses.asdict(PipelineConfig.from_yaml(args.config))
    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in ("config", "json", "report_json", "runner_config_file")}
    if args.runner_config_file:
        from schemas import storage

        import yaml

        given["runner_config"] = yaml.safe_load(storage.read_text(args.runner_config_file)) or {}
    return PipelineConfig.from_dict({**base, **given}, where="command line")


def print_report(report, stream=None) -> None:
    stream = stream or sys.stdout  # looked up at call time (sys.stdout may be replaced after import)
    m, s = report.metrics, report.summary
    if report.complete_before:
        print(f"{redact_uri(report.output)}: already complete with these settings; nothing to do", file=stream)
    if m:
        print("Beam metrics:", file=stream)
        for k in sorted(m):
            print(f"  {k:<22} {m[k]:.1f}" if isinstance(m[k], float) else f"  {k:<22} {m[k]}", file=stream)
    print(
        f"dataset {redact_uri(report.output)}: {s.get('sequences')} sequences, {s.get('tokens')} tokens, "
        f"{s.get('documents')} documents = {s.get('packed_documents')} packed + {s.get('dead_letters')} dead letters; "
        f"{report.computed_units}/{report.units} units computed in this run ({report.seconds:.1f} s)",
        file=stream,
    )
    if s.get("incomplete_files"):
        print(f"warning: {s['incomplete_files']} input files were not read to their end (truncated, corrupt or "
              "unreadable): see `complete`/`problem` of the manifest's sources and dead_letter/", file=stream)


def main(argv: list[str] | None = None) -> int:
    from pipelines.job import SettingsMismatch, run
    from pipelines.sources import InputError
    from pipelines.teacher import TeacherError

    args, extra = parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("apache_beam", "streaming", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        report = run(config, extra)
    except (ConfigError, InputError, TeacherError, SettingsMismatch, ValueError) as e:
        print(f"pdistill logits: error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True, default=str))
    if args.report_json:
        from schemas import storage

        storage.write_text_atomic(args.report_json, json.dumps(report.as_dict(), indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
