"""`pdistill train CONFIG.yaml [key=value ...] [--key VALUE ...]` (and `python -m trainer`, `composer -n N -m trainer`).

CONFIG is a YAML path or the name of a shipped config (pd_best, pd_vanilla, lm_only, pd_cross); overrides
are dotted keys (`data.streams.0.uri=s3://bucket/ds run.max_duration=1000ba`), or the same as
flags (`--run.max_duration 1000ba`): one flag per setting, generated from `trainer.config`'s
fields with their help. Configuration and dataset problems are reported as one line naming the
key or URI, exit status 2, before training (and the same for a dataset found corrupt while
training); only a bug in our code traces.
Under the Composer launcher each process reads RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT from the environment (Composer initialises torch.distributed).
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from schemas.redact import redact_process_output, redact_text, remember_secrets
from schemas.settings import leaf_settings, type_label
from trainer.config import ConfigError, TrainConfig, load_config
from trainer.errors import USER_ERRORS

USAGE = "pdistill train CONFIG.yaml [key=value ...] [--key VALUE ...]"


def parser() -> argparse.ArgumentParser:
    """The command line: CONFIG, dotted overrides, and one `--<dotted key>` flag per setting."""
    ap = argparse.ArgumentParser(
        prog="pdistill train", usage=USAGE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("config", help="YAML config path or shipped config name")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    ap.add_argument("--print-config", action="store_true", help="print the validated config and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for st in leaf_settings(TrainConfig):
        section = st.key.split(".")[0]
        group = groups.get(section) or groups.setdefault(section, ap.add_argument_group(f"{section} settings"))
        shown = f"; default {_yaml(st.default)}" if st.has_default and st.default != {} else ""
        text = f"{type_label(st.annotation)}{shown}" + (f". {st.description}" if st.description else "")
        group.add_argument(f"--{st.key}", dest=st.key, metavar="VALUE", default=None, help=text.replace("%", "%%"))
    return ap


def _yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """Positional overrides, then the flags given (a flag wins over a positional override)."""
    flags = [f"{k}={v}" for k, v in vars(args).items() if "." in k and v is not None]
    return list(args.overrides) + flags


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    redact_process_output(argv)
    args = parser().parse_intermixed_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("composer", "streaming", "urllib3", "botocore", "s3fs", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = load_config(args.config, overrides_from_args(args))
    except ConfigError as e:
        print(f"pdistill train: config error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    remember_secrets(cfg.to_dict())  # URIs of the config file too
    if args.print_config:
        print(redact_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False)))
        return 0

    from trainer.train import build_trainer  # noqa: PLC0415 (late: torch, Composer: after config)

    try:
        trainer = build_trainer(cfg)
    except USER_ERRORS as e:
        print(f"pdistill train: refused: {redact_text(str(e))}", file=sys.stderr)
        return 2
    try:
        trainer.fit()
    except USER_ERRORS as e:  # e.g. a shard found corrupt while streaming
        print(f"pdistill train: stopped: {redact_text(str(e))}", file=sys.stderr)
        return 2
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
