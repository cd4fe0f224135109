"""Dataflow Flex Template entry point: template parameters -> `pdistill logits` -> DataflowRunner.

Dataflow's launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE in infra/docker/Dockerfile.worker)
with every template parameter as `--name=value` and its own pipeline options (project, region,
temp/staging locations, job_name, sdk_container_image, service account, ...) appended. Template
parameter names are the CLI's long flags with '-' replaced by '_' (flex-template names cannot
hold '-'), as declared in infra/dataflow/metadata.json; tests/test_infra.py keeps the two in sync.

This file does the renaming only; everything else is `pipelines.cli.main`.
"""

from __future__ import annotations

import argparse
import sys

from pipelines import cli

# CLI options that make no sense inside a launcher VM (and so are not template parameters).
LOCAL_ONLY = ("runner", "direct_running_mode", "direct_num_workers", "progress", "json", "report_json")


def cli_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Template parameter name -> the CLI action it stands for."""
    out = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--") and not s.startswith("--no-")]
        if longs:
            out[longs[0][2:].replace("-", "_")] = action
    return out


def translate(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Rewrite `--template_param=value` into the CLI's flags; pass Beam/Dataflow options through.

    Booleans arrive as strings ("true"/"false") and become --flag / --no-flag. Any --runner given
    by the launcher is replaced: a flex template always runs on DataflowRunner.
    """
    flags = cli_flags(parser)
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            out.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        if key not in flags or key in LOCAL_ONLY:
            if key == "runner" or key in LOCAL_ONLY:
                if not eq and i < len(argv) and not argv[i].startswith("--"):
                    i += 1  # drop its separate value too
                continue
            out.append(arg)
            continue
        action = flags[key]
        if not eq:
            if action.nargs == 0:
                value = "true"
            elif i < len(argv):
                value, i = argv[i], i + 1
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
            truthy = value.strip().lower() in ("1", "true", "yes", "on")
            if isinstance(action, argparse.BooleanOptionalAction):
                out.append(flag if truthy else "--no-" + flag[2:])
            elif truthy:
                out.append(flag)
            continue
        if value == "":
            continue  # an optional parameter left empty in the console
        out += [flag, value]
    return ["--runner", "DataflowRunner", "--no-progress"] + out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli.main(translate(argv, cli.parser()))


if __name__ == "__main__":
    sys.exit(main())
