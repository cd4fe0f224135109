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
import typing

from pipelines.config import PipelineConfig
from pipelines.errors import quiet_user_errors_in_beam_logs, user_errors, without_step
from schemas import storage, strict_json
from schemas.errors import ConfigError
from schemas.redact import redact_process_output, redact_text, redact_uri, remember_secrets
from schemas.settings import file_problem, type_label

# Flags whose name is not the setting's (`--<key with - for _>`), or that are not settings.
FLAG_NAMES = {"inputs": "--input"}
NOT_FLAGS = ("runner_config",)  # given as --runner-config FILE (a YAML/JSON file), see `parser`


def _flag_kwargs(tp) -> dict:
    """argparse keywords for a setting of type `tp`: numbers parsed, booleans as --x/--no-x,
    mappings as JSON, lists repeatable; a value pydantic then checks as for YAML."""
    args = [typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a for a in typing.get_args(tp)]
    if tp is bool:
        return dict(action=argparse.BooleanOptionalAction)
    if tp in (int, float):
        return dict(type=tp)
    if tp is dict:
        return dict(type=json.loads)
    if typing.get_origin(tp) is list:
        return dict(action="append")
    if bool in args:  # e.g. share_model: true | false | auto
        return dict(type=lambda text: {"true": True, "false": False}.get(text.lower(), text))
    return {}


def add_setting_flags(ap: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per `PipelineConfig` field, its help from the field (also used by `pdistill plan`)."""
    group = ap.add_argument_group("settings (as in a --config file; a flag wins over the file)")
    for key, info in PipelineConfig.model_fields.items():
        if key in NOT_FLAGS or key in skip:
            continue
        default = info.get_default(call_default_factory=True)
        text = f"{info.description or type_label(info.annotation)} (default {default!r})"
        group.add_argument(
            FLAG_NAMES.get(key, "--" + key.replace("_", "-")),
            dest=key,
            default=None,
            help=text.replace("%", "%%"),
            **_flag_kwargs(info.annotation),
        )
    group.add_argument("--runner-config", dest="runner_config_file", help="YAML/JSON file of runner settings")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pdistill logits",
        description="Beam teacher pass: corpus (Parquet/JSONL/text on any fsspec URI) -> MDS dataset + manifest. "
        "Unknown --flags are passed to Beam's PipelineOptions.",
    )
    ap.add_argument("--config", help="YAML file of settings (keys as in pipelines.config.PipelineConfig)")
    ap.add_argument("--json", action="store_true", help="print the final report as JSON")
    ap.add_argument(
        "--report-json",
        dest="report_json",
        metavar="PATH",
        help="also write the final report as JSON to PATH (any fsspec URI)",
    )
    add_setting_flags(ap)
    return ap


def read_file_setting(flag: str, uri: str, load):
    """`load(uri)` for a file named on the command line; one that cannot be read (missing, a
    folder, no permission) is a ConfigError naming the flag and the file, not a traceback."""
    try:
        return load(uri)
    except OSError as e:
        raise ConfigError(f"{flag} {redact_uri(uri)}: cannot read it ({file_problem(e)})") from None


def check_writable_file(flag: str, uri: str | None) -> None:
    """Refuse, before any work, a file named by `flag` that cannot be written (`storage.unwritable`)."""
    problem = storage.unwritable(uri, "file")
    if problem:
        raise ConfigError(f"{flag} {redact_uri(uri)}: cannot write to it ({problem})")


def check_report_path(uri: str | None) -> None:
    check_writable_file("--report-json", uri)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """Defaults, then --config FILE, then the flags given."""
    base = {}
    if args.config:
        base = read_file_setting("--config", args.config, PipelineConfig.from_yaml).model_dump(exclude_unset=True)
    given = {k: v for k, v in vars(args).items() if v is not None and k in PipelineConfig.model_fields}
    if getattr(args, "runner_config_file", None):
        from pipelines.runner_options import load_runner_config  # noqa: PLC0415 (late: Beam is heavy; --help skips it)

        given["runner_config"] = read_file_setting("--runner-config", args.runner_config_file, load_runner_config)
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
    if report.hidden_files_skipped:
        print(
            f"note: skipped {report.hidden_files_skipped} hidden files (a name, or a folder below the input, "
            "starting with '.' or '_', as Spark and pyarrow do; name them in --input to read them)",
            file=stream,
        )
    if s.get("incomplete_files"):
        print(
            f"warning: {s['incomplete_files']} input files were not read to their end (truncated, corrupt or "
            "unreadable): see `complete`/`problem` of the manifest's sources and dead_letter/",
            file=stream,
        )
    if s.get("unscored_sequences"):
        print(
            f"warning: the teacher could not score {s['unscored_sequences']} sequences ({s.get('unscored_tokens')} "
            "tokens; non-finite logits): not written; their tokens are in dead_letter/ (kind teacher_unscored)",
            file=stream,
        )


def main(argv: list[str] | None = None) -> int:
    from pipelines.job import run  # noqa: PLC0415 (late: Beam is heavy; tests patch job.run)

    redact_process_output(sys.argv[1:] if argv is None else argv)
    args, extra = parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("apache_beam", "streaming", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_user_errors_in_beam_logs()  # a refusal in the final step is one line below, not a traceback above it
    try:
        check_report_path(args.report_json)
        config = config_from_args(args)
        remember_secrets(config.model_dump())  # URIs of a --config file too
        report = run(config, extra)
    except user_errors() as e:
        print(f"pdistill logits: error: {redact_text(without_step(str(e)))}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        print(redact_text(strict_json.dumps(report.as_dict(), sort_keys=True, default=str)))
    if args.report_json:
        try:
            storage.write_text_atomic(
                args.report_json,
                redact_text(strict_json.dumps(report.as_dict(), indent=2, sort_keys=True, default=str)),
            )
        except (OSError,) + storage.refusals() as e:  # checked before the run; a remote path fails only here
            print(
                f"pdistill logits: error: --report-json {redact_uri(args.report_json)}: cannot write to it "
                f"({type(e).__name__}: {redact_text(' '.join(str(e).split()))}); the dataset itself is complete",
                file=sys.stderr,
            )
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
