"""Beam `PipelineOptions` for each supported runner, built from a small config and validated.

    from pipelines.runner_options import build_options, describe
    opts = build_options("DataflowRunner", {"project": "p", "region": "us-central1",
                                            "temp_location": "gs://b/tmp",
                                            "sdk_container_image": "...:tag",
                                            "machine_type": "g2-standard-8",
                                            "worker_accelerator": "type:nvidia-l4;count:1;install-nvidia-driver"},
                         extra_args=[])

The config uses Beam's own option names (`project`, `machine_type`, `spark_master_url`, ...) plus
a few conveniences (`worker_accelerator` as a string or a dict, `environment_config` as a dict for
PROCESS). It is turned into command-line flags, `extra_args` are appended after them (so a flag
given on the command line wins over the config), Beam parses the lot, and the resulting option
objects are validated: a missing required field raises `RunnerConfigError` naming the field.

Supported runners (see docs/design.md, "Pitfalls": Runners):
- DirectRunner: local, in tests and the demo (`direct_running_mode`, `direct_num_workers`).
- DataflowRunner: production; GPU workers through the `worker_accelerator` Dataflow service
  option and a custom `sdk_container_image` (infra/docker/Dockerfile.worker).
- SparkRunner / FlinkRunner / PortableRunner: Beam's portable runners. They need a Beam job server
  (started by Beam from a jar it downloads, or run separately and given as `job_endpoint`) and an
  SDK worker environment (DOCKER image, PROCESS command or EXTERNAL worker pool).
DaskRunner is refused: on Beam 2.71 it returned wrong results here (see `REFUSED`).

Only option construction is tested on CI: Dataflow needs a cloud project and the portable runners a
job server; nothing here claims that those runners ran.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import yaml
from apache_beam.options.pipeline_options import (
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    SparkRunnerOptions,
    StandardOptions,
    WorkerOptions,
)

from pipelines.runner_keys import (  # noqa: F401
    ENVIRONMENT_TYPES,
    GPU_MACHINE_FAMILIES,
    KEYS,
    REFUSED,
    SUPPORTED,
    RunnerConfigError,
    normalize_runner,
)
from schemas import storage
from schemas.settings import file_problem

REPO_SETUP_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


def accelerator_option(spec: str | dict) -> str:
    """The Dataflow `worker_accelerator=...` service option from a string or a dict.

    Dict form: {"type": "nvidia-l4", "count": 1, "install_nvidia_driver": True, "use_nvidia_mps": False}.
    """
    if isinstance(spec, dict):
        unknown = set(spec) - {"type", "count", "install_nvidia_driver", "use_nvidia_mps"}
        if unknown:
            raise RunnerConfigError(f"worker_accelerator: unknown keys {sorted(unknown)}")
        if not spec.get("type"):
            raise RunnerConfigError("worker_accelerator.type is required (e.g. nvidia-l4)")
        parts = [f"type:{spec['type']}", f"count:{int(spec.get('count', 1))}"]
        if spec.get("install_nvidia_driver", True):
            parts.append("install-nvidia-driver")
        if spec.get("use_nvidia_mps"):
            parts.append("use_nvidia_mps")
        spec = ";".join(parts)
    spec = str(spec)
    if spec.startswith("worker_accelerator="):
        spec = spec[len("worker_accelerator=") :]
    fields = dict(p.split(":", 1) if ":" in p else (p, "") for p in spec.split(";") if p)
    if not fields.get("type"):
        raise RunnerConfigError(f"worker_accelerator {spec!r}: 'type:<gpu type>' is required")
    if not re.fullmatch(r"[1-9][0-9]*", fields.get("count", "")):
        raise RunnerConfigError(f"worker_accelerator {spec!r}: 'count:<positive integer>' is required")
    return "worker_accelerator=" + spec


def _flags(runner: str, config: dict[str, Any]) -> list[str]:
    allowed = KEYS[runner]
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise RunnerConfigError(
            f"{runner}: unknown config field(s) {unknown}; accepted: {sorted(allowed)} "
            "(other Beam flags can be passed as extra args)"
        )
    flags: list[str] = []
    for key, value in config.items():
        if value is None:
            continue
        if key == "worker_accelerator":
            flags.append(f"--dataflow_service_options={accelerator_option(value)}")
            continue
        if key == "use_public_ips":
            flags.append("--use_public_ips" if value else "--no_use_public_ips")
            continue
        if key == "environment_config" and isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        flag = allowed[key]
        if isinstance(value, bool):
            if value:
                flags.append(flag)
        elif isinstance(value, dict):
            flags += [f"{flag}={k}={v}" for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            flags += [f"{flag}={v}" for v in value]
        else:
            flags.append(f"{flag}={value}")
    return flags


def _missing(field: str, runner: str, why: str = "") -> RunnerConfigError:
    return RunnerConfigError(f"{runner}: required field {field!r} is missing{': ' + why if why else ''}")


def _accelerators(options: PipelineOptions) -> list[str]:
    service = options.view_as(GoogleCloudOptions).dataflow_service_options or []
    return [s for s in service if s.startswith("worker_accelerator=")]


def _validate_dataflow(options: PipelineOptions) -> None:
    runner = "DataflowRunner"
    gcp = options.view_as(GoogleCloudOptions)
    for field in ("project", "region", "temp_location"):
        if not getattr(gcp, field):
            raise _missing(field, runner)
    for field in ("temp_location", "staging_location"):
        value = getattr(gcp, field)
        if value and not value.startswith("gs://"):
            raise RunnerConfigError(f"{runner}: {field} must be a gs:// URI, got {value!r}")
    workers = options.view_as(WorkerOptions)
    accel = _accelerators(options)
    if len(accel) > 1:
        raise RunnerConfigError(f"{runner}: more than one worker_accelerator service option: {accel}")
    if accel:
        if options.view_as(StandardOptions).resource_hints:
            raise RunnerConfigError(
                f"{runner}: per-step resource hints cannot be combined with the worker_accelerator "
                "service option (Dataflow rejects or ignores one of them); drop resource_hints"
            )
        if not workers.sdk_container_image:
            raise _missing(
                "sdk_container_image",
                runner,
                "GPU workers need a custom container with CUDA torch (infra/docker/Dockerfile.worker)",
            )
        if not workers.machine_type:
            raise _missing("machine_type", runner, "GPU workers need a machine type that takes the GPU")
        gpu = dict(p.split(":", 1) for p in accel[0][len("worker_accelerator=") :].split(";") if ":" in p)
        families = GPU_MACHINE_FAMILIES.get(gpu.get("type", ""))
        if families and not workers.machine_type.startswith(families):
            raise RunnerConfigError(
                f"{runner}: machine_type {workers.machine_type!r} cannot take a {gpu['type']} GPU "
                f"(needs one of {', '.join(f + '*' for f in families)})"
            )
    setup_file = options.view_as(SetupOptions).setup_file
    if setup_file and not os.path.isfile(setup_file):
        raise RunnerConfigError(f"{runner}: setup_file {setup_file!r} does not exist")


def _validate_portable(runner: str, options: PipelineOptions) -> None:
    portable = options.view_as(PortableOptions)
    env = (portable.environment_type or "").upper()
    if runner == "PortableRunner" and not portable.job_endpoint:
        raise _missing("job_endpoint", runner, "PortableRunner needs a running Beam job server (host:port)")
    if runner == "SparkRunner" and not portable.job_endpoint:
        spark = options.view_as(SparkRunnerOptions)
        if spark.spark_submit_uber_jar and not spark.spark_rest_url:
            raise _missing("spark_rest_url", runner, "spark_submit_uber_jar posts the jar to the Spark REST API")
    if not env:
        raise _missing(
            "environment_type", runner, f"one of {', '.join(ENVIRONMENT_TYPES)} (DOCKER with the worker image)"
        )
    if env not in ENVIRONMENT_TYPES:
        raise RunnerConfigError(f"{runner}: environment_type {env!r} is not one of {ENVIRONMENT_TYPES}")
    has_option = bool(portable.environment_options)
    if env in ("DOCKER", "PROCESS", "EXTERNAL") and not (portable.environment_config or has_option):
        what = {
            "DOCKER": "the SDK worker image, e.g. REGION-docker.pkg.dev/PROJECT/REPO/pdistill-worker:TAG",
            "PROCESS": 'JSON {"command": "/opt/apache/beam/boot"} (the boot binary on every node)',
            "EXTERNAL": "host:port of a Beam worker pool (python -m apache_beam.runners.worker.worker_pool_main)",
        }[env]
        raise _missing("environment_config", runner, what)
    if env == "PROCESS" and portable.environment_config:
        try:
            cfg = json.loads(portable.environment_config)
        except ValueError as e:
            raise RunnerConfigError(f"{runner}: environment_config for PROCESS must be JSON: {e}") from e
        if not isinstance(cfg, dict) or not cfg.get("command"):
            raise _missing("environment_config.command", runner, "PROCESS needs the boot command")
    if env == "LOOPBACK" and portable.environment_config:
        raise RunnerConfigError(f"{runner}: environment_config makes no sense with LOOPBACK")
    if runner == "FlinkRunner" and not portable.job_endpoint:
        flink = options.view_as(FlinkRunnerOptions)
        if not flink.flink_master or flink.flink_master == "[auto]":
            raise _missing("flink_master", runner, "host:port of the Flink JobManager (or give job_endpoint)")


def build_options(
    runner: str, runner_config: dict | None = None, extra_args: list[str] | None = None
) -> PipelineOptions:
    """PipelineOptions for `runner` from `runner_config` (Beam option names) and `extra_args` (flags).

    `extra_args` come after the config, so an explicit flag overrides a config value. For Dataflow
    and the portable runners `setup_file` defaults to this repository's setup.py when running from a
    source checkout (Beam builds and ships the package to the workers); pass `setup_file: ""` to
    turn that off when the worker image already has the project installed.
    """
    name = normalize_runner(runner)
    config = dict(runner_config or {})
    extra = list(extra_args or [])
    for arg in extra:
        if arg.startswith("--runner"):
            raise RunnerConfigError("give the runner as the `runner` argument, not as --runner in extra args")
    if name in ("DataflowRunner", "SparkRunner", "FlinkRunner", "PortableRunner"):
        if "setup_file" not in config:
            # From a source checkout Beam builds and ships the package; an installed copy (as in
            # the worker image, which also launches flex templates) has no setup.py beside it and
            # its workers already hold the package.
            if os.path.isfile(REPO_SETUP_FILE):
                config["setup_file"] = REPO_SETUP_FILE
        elif not config["setup_file"]:
            config.pop("setup_file")
    if name == "DataflowRunner" and config.get("worker_accelerator"):
        experiments = list(config.get("experiments") or [])
        if "use_runner_v2" not in experiments:  # GPUs on Dataflow need Runner v2
            experiments.append("use_runner_v2")
        config["experiments"] = experiments
    if name == "DirectRunner":
        mode = config.get("direct_running_mode", "in_memory")
        if mode not in ("in_memory", "multi_threading", "multi_processing"):
            raise RunnerConfigError(
                f"DirectRunner: direct_running_mode {mode!r} is not one of in_memory, multi_threading, multi_processing"
            )
    flags = [f"--runner={name}"] + _flags(name, config) + extra
    options = PipelineOptions(flags)
    if name == "DataflowRunner":
        _validate_dataflow(options)
    elif name in ("SparkRunner", "FlinkRunner", "PortableRunner"):
        _validate_portable(name, options)
    elif name == "DirectRunner":
        direct = options.view_as(DirectOptions)
        if direct.direct_num_workers < 0:
            raise RunnerConfigError("DirectRunner: direct_num_workers must be >= 0 (0 = one per CPU)")
    return options


def load_runner_config(uri: str) -> dict:
    """A runner config from a JSON or YAML file (local path or object-store URI)."""
    try:
        data = yaml.safe_load(storage.read_text(uri)) or {}  # YAML reads JSON too
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RunnerConfigError(f"{uri}: a runner config must be YAML or JSON ({file_problem(e)})") from None
    if not isinstance(data, dict):
        raise RunnerConfigError(f"{uri}: a runner config is a mapping of option names to values")
    return data


def describe(options: PipelineOptions) -> dict:
    """The options that differ from Beam's defaults, for printing before a job is submitted."""
    out = {"runner": options.view_as(StandardOptions).runner}
    out.update(options.get_all_options(drop_default=True, retain_unknown_options=True))
    return {k: v for k, v in sorted(out.items()) if v not in (None, [], {})}


__all__ = [
    "RunnerConfigError",
    "build_options",
    "describe",
    "load_runner_config",
    "accelerator_option",
    "normalize_runner",
    "REPO_SETUP_FILE",
    "SUPPORTED",
    "REFUSED",
]
