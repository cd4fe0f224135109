"""What `pipelines.runner_options` accepts: runner names, each runner's config keys (Beam's own
option names, mapped to their flags), and the Dataflow GPU / machine-family pairs it checks.
No Beam import: `pipelines.config` checks the runner name with `normalize_runner` at load time."""

from __future__ import annotations

from schemas.errors import ConfigError


class RunnerConfigError(ConfigError):
    """A runner config that cannot produce a working job (the message names the field)."""


# Runner names as users type them -> Beam's runner name.
ALIASES = {
    "direct": "DirectRunner",
    "directrunner": "DirectRunner",
    "dataflow": "DataflowRunner",
    "dataflowrunner": "DataflowRunner",
    "spark": "SparkRunner",
    "sparkrunner": "SparkRunner",
    "flink": "FlinkRunner",
    "flinkrunner": "FlinkRunner",
    "portable": "PortableRunner",
    "portablerunner": "PortableRunner",
}
SUPPORTED = ("DirectRunner", "DataflowRunner", "SparkRunner", "FlinkRunner", "PortableRunner")

REFUSED = {
    "daskrunner": (
        "DaskRunner is not supported: on Beam 2.71 with a local dask.distributed cluster it returned "
        "wrong results (an empty CombineGlobally-with-side-input output, no GroupByKey output) and no "
        "metrics (NotImplementedError); see docs/design.md, 'Runners'. Use DirectRunner locally, or "
        "DataflowRunner / SparkRunner / FlinkRunner in production."
    ),
}

# Config keys accepted per runner: key -> Beam flag. Values: bool -> bare flag when True;
# list -> the flag repeated; dict (labels) -> repeated k=v; anything else -> str(value).
_COMMON = {
    "job_name": "--job_name",
    "experiments": "--experiments",
    "save_main_session": "--save_main_session",
    "requirements_file": "--requirements_file",
    "extra_packages": "--extra_packages",
    "sdk_location": "--sdk_location",
    "pickle_library": "--pickle_library",
}
_DIRECT = {
    "direct_running_mode": "--direct_running_mode",
    "direct_num_workers": "--direct_num_workers",
}
_DATAFLOW = {
    "project": "--project",
    "region": "--region",
    "temp_location": "--temp_location",
    "staging_location": "--staging_location",
    "sdk_container_image": "--sdk_container_image",
    "machine_type": "--machine_type",
    "dataflow_service_options": "--dataflow_service_options",
    "setup_file": "--setup_file",
    "num_workers": "--num_workers",
    "max_num_workers": "--max_num_workers",
    "autoscaling_algorithm": "--autoscaling_algorithm",
    "disk_size_gb": "--disk_size_gb",
    "service_account_email": "--service_account_email",
    "network": "--network",
    "subnetwork": "--subnetwork",
    "use_public_ips": None,  # handled specially: --use_public_ips / --no_use_public_ips
    "labels": "--labels",
    "dataflow_kms_key": "--dataflow_kms_key",
    "number_of_worker_harness_threads": "--number_of_worker_harness_threads",
    "worker_zone": "--worker_zone",
    "flexrs_goal": "--flexrs_goal",
    "resource_hints": "--resource_hints",
    "worker_accelerator": None,  # handled specially: becomes a dataflow_service_options entry
}
_PORTABLE = {
    "job_endpoint": "--job_endpoint",
    "artifact_endpoint": "--artifact_endpoint",
    "job_server_timeout": "--job_server_timeout",
    "environment_type": "--environment_type",
    "environment_config": "--environment_config",
    "environment_options": "--environment_options",
    "sdk_worker_parallelism": "--sdk_worker_parallelism",
    "setup_file": "--setup_file",
    "resource_hints": "--resource_hints",
}
_SPARK = dict(
    _PORTABLE,
    spark_master_url="--spark_master_url",
    spark_job_server_jar="--spark_job_server_jar",
    spark_submit_uber_jar="--spark_submit_uber_jar",
    spark_rest_url="--spark_rest_url",
    spark_version="--spark_version",
)
_FLINK = dict(
    _PORTABLE,
    flink_master="--flink_master",
    flink_version="--flink_version",
    flink_job_server_jar="--flink_job_server_jar",
    flink_submit_uber_jar="--flink_submit_uber_jar",
    parallelism="--parallelism",
    max_parallelism="--max_parallelism",
)
KEYS = {
    "DirectRunner": dict(_COMMON, **_DIRECT),
    "DataflowRunner": dict(_COMMON, **_DATAFLOW),
    "SparkRunner": dict(_COMMON, **_SPARK),
    "FlinkRunner": dict(_COMMON, **_FLINK),
    "PortableRunner": dict(_COMMON, **_PORTABLE),
}

# Which Compute Engine machine families each Dataflow GPU type attaches to (GCP GPU docs).
GPU_MACHINE_FAMILIES = {
    "nvidia-l4": ("g2-",),
    "nvidia-tesla-a100": ("a2-highgpu-", "a2-megagpu-"),
    "nvidia-a100-80gb": ("a2-ultragpu-",),
    "nvidia-h100-80gb": ("a3-",),
    "nvidia-tesla-t4": ("n1-",),
    "nvidia-tesla-v100": ("n1-",),
    "nvidia-tesla-p100": ("n1-",),
    "nvidia-tesla-p4": ("n1-",),
}
ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")


def normalize_runner(runner: str) -> str:
    """Beam's name for a runner as users type it; DaskRunner and unknown names are refused."""
    key = (runner or "").strip()
    low = key.lower()
    if low in REFUSED or low == "dask":
        raise RunnerConfigError(REFUSED["daskrunner"])
    if low in ALIASES:
        return ALIASES[low]
    raise RunnerConfigError(f"runner {runner!r} is not supported; choose one of {', '.join(SUPPORTED)}")
