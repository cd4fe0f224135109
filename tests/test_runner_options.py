"""Pipeline options for each runner, asserted as Beam option objects.

Dataflow and the portable Spark/Flink runners cannot be reached from CI (docs/design.md, "Runners"):
these tests check what would be submitted, never that a job ran.
"""

import json
import os

import pytest

pytest.importorskip("apache_beam")

from apache_beam.options.pipeline_options import (  # noqa: E402
    DebugOptions,
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PortableOptions,
    SetupOptions,
    SparkRunnerOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator  # noqa: E402

from pipelines.runner_options import (  # noqa: E402
    REPO_SETUP_FILE,
    RunnerConfigError,
    accelerator_option,
    build_options,
    describe,
    load_runner_config,
)

IMAGE = "us-central1-docker.pkg.dev/my-proj/pdistill/pdistill-worker:0.1.0"
ACCEL = "type:nvidia-l4;count:1;install-nvidia-driver"


def dataflow_config(**over):
    cfg = {
        "project": "my-proj",
        "region": "us-central1",
        "temp_location": "gs://my-proj-pdistill-dataflow/tmp",
        "staging_location": "gs://my-proj-pdistill-dataflow/staging",
        "sdk_container_image": IMAGE,
        "machine_type": "g2-standard-8",
        "worker_accelerator": ACCEL,
        "max_num_workers": 16,
        "disk_size_gb": 200,
        "service_account_email": "pdistill-dataflow@my-proj.iam.gserviceaccount.com",
        "network": "pdistill",
        "subnetwork": "regions/us-central1/subnetworks/pdistill",
        "use_public_ips": False,
    }
    cfg.update(over)
    return cfg


# ---------------------------------------------------------------- DirectRunner


@pytest.mark.parametrize("mode", ["in_memory", "multi_threading", "multi_processing"])
def test_direct_modes(mode):
    opts = build_options("DirectRunner", {"direct_running_mode": mode, "direct_num_workers": 2}, [])
    assert opts.view_as(StandardOptions).runner == "DirectRunner"
    d = opts.view_as(DirectOptions)
    assert d.direct_running_mode == mode
    assert d.direct_num_workers == 2
    # DirectRunner does not ship the package: no setup_file by default
    assert opts.view_as(SetupOptions).setup_file is None


def test_direct_alias_and_defaults():
    opts = build_options("direct", None, None)
    assert opts.view_as(StandardOptions).runner == "DirectRunner"
    assert opts.view_as(DirectOptions).direct_running_mode == "in_memory"


def test_direct_bad_mode():
    with pytest.raises(RunnerConfigError, match="direct_running_mode"):
        build_options("DirectRunner", {"direct_running_mode": "multi_gpu"}, [])


# ---------------------------------------------------------------- DataflowRunner


def test_dataflow_gpu_options_objects():
    opts = build_options("DataflowRunner", dataflow_config(), ["--job_name=pdistill-logits-test"])
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    gcp = opts.view_as(GoogleCloudOptions)
    assert gcp.project == "my-proj"
    assert gcp.region == "us-central1"
    assert gcp.temp_location == "gs://my-proj-pdistill-dataflow/tmp"
    assert gcp.staging_location == "gs://my-proj-pdistill-dataflow/staging"
    assert gcp.service_account_email == "pdistill-dataflow@my-proj.iam.gserviceaccount.com"
    assert gcp.job_name == "pdistill-logits-test"
    # Beam 2.71 defines dataflow_service_options on GoogleCloudOptions (not DebugOptions)
    assert gcp.dataflow_service_options == ["worker_accelerator=" + ACCEL]
    w = opts.view_as(WorkerOptions)
    assert w.sdk_container_image == IMAGE
    assert w.machine_type == "g2-standard-8"
    assert w.max_num_workers == 16
    assert w.disk_size_gb == 200
    assert w.network == "pdistill"
    assert w.subnetwork == "regions/us-central1/subnetworks/pdistill"
    assert w.use_public_ips is False
    assert opts.view_as(SetupOptions).setup_file == REPO_SETUP_FILE
    assert os.path.isfile(REPO_SETUP_FILE)
    assert "use_runner_v2" in opts.view_as(DebugOptions).experiments
    assert opts.view_as(StandardOptions).resource_hints == []


def test_dataflow_passes_beams_own_cloud_validation():
    """Beam's validator (the part that needs no network) finds nothing to complain about."""
    opts = build_options("DataflowRunner", dataflow_config(), [])
    v = PipelineOptionsValidator(opts, runner=None)
    gcp = opts.view_as(GoogleCloudOptions)
    assert v.validate_cloud_options(gcp) == []
    assert v.validate_repeatable_argument_passed_as_list(gcp, "dataflow_service_options") == []
    assert v.validate_gcs_path(gcp, "temp_location") == []
    assert v.validate_gcs_path(gcp, "staging_location") == []


def test_accelerator_dict_form_and_mps():
    assert accelerator_option({"type": "nvidia-l4", "count": 2}) == (
        "worker_accelerator=type:nvidia-l4;count:2;install-nvidia-driver"
    )
    opts = build_options(
        "dataflow",
        dataflow_config(
            worker_accelerator={"type": "nvidia-tesla-t4", "count": 1, "use_nvidia_mps": True},
            machine_type="n1-standard-8",
        ),
        [],
    )
    assert opts.view_as(GoogleCloudOptions).dataflow_service_options == [
        "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver;use_nvidia_mps"
    ]


@pytest.mark.parametrize("field", ["project", "region", "temp_location"])
def test_dataflow_missing_required_field_is_named(field):
    cfg = dataflow_config()
    del cfg[field]
    with pytest.raises(RunnerConfigError, match=field):
        build_options("DataflowRunner", cfg, [])


def test_dataflow_required_field_from_extra_args():
    cfg = dataflow_config()
    del cfg["project"]
    opts = build_options("DataflowRunner", cfg, ["--project=other-proj"])
    assert opts.view_as(GoogleCloudOptions).project == "other-proj"


def test_extra_args_override_config():
    opts = build_options("DataflowRunner", dataflow_config(), ["--max_num_workers=4"])
    assert opts.view_as(WorkerOptions).max_num_workers == 4


def test_dataflow_gpu_needs_container_and_matching_machine():
    cfg = dataflow_config()
    del cfg["sdk_container_image"]
    with pytest.raises(RunnerConfigError, match="sdk_container_image"):
        build_options("DataflowRunner", cfg, [])
    with pytest.raises(RunnerConfigError, match="machine_type"):
        build_options("DataflowRunner", dataflow_config(machine_type="n1-standard-8"), [])


def test_dataflow_no_resource_hints_with_accelerator():
    with pytest.raises(RunnerConfigError, match="resource hints"):
        build_options("DataflowRunner", dataflow_config(resource_hints=["min_ram=32GB"]), [])
    with pytest.raises(RunnerConfigError, match="resource hints"):
        build_options("DataflowRunner", dataflow_config(), ["--resource_hint=accelerator=type:nvidia-l4;count:1"])
    # without a GPU, resource hints are fine
    cfg = dataflow_config(resource_hints=["min_ram=32GB"], machine_type="n2-highmem-8")
    del cfg["worker_accelerator"]
    opts = build_options("DataflowRunner", cfg, [])
    assert opts.view_as(StandardOptions).resource_hints == ["min_ram=32GB"]
    assert not opts.view_as(GoogleCloudOptions).dataflow_service_options


def test_dataflow_rejects_non_gcs_temp_and_bad_accelerator():
    with pytest.raises(RunnerConfigError, match="temp_location"):
        build_options("DataflowRunner", dataflow_config(temp_location="/tmp/x"), [])
    with pytest.raises(RunnerConfigError, match="count"):
        build_options("DataflowRunner", dataflow_config(worker_accelerator="type:nvidia-l4"), [])


def test_setup_file_can_be_turned_off_for_prebuilt_images():
    opts = build_options("DataflowRunner", dataflow_config(setup_file=""), [])
    assert opts.view_as(SetupOptions).setup_file is None


def test_unknown_field_is_refused():
    with pytest.raises(RunnerConfigError, match="machinetype"):
        build_options("DataflowRunner", dataflow_config(machinetype="g2-standard-8"), [])


def test_experiments_kept():
    opts = build_options("DataflowRunner", dataflow_config(experiments=["no_use_multiple_sdk_containers"]), [])
    assert opts.view_as(DebugOptions).experiments == ["no_use_multiple_sdk_containers", "use_runner_v2"]


# ---------------------------------------------------------------- Spark / Flink / Portable


def test_spark_docker_environment():
    opts = build_options(
        "SparkRunner",
        {"spark_master_url": "spark://spark-master:7077", "environment_type": "DOCKER", "environment_config": IMAGE},
        [],
    )
    assert opts.view_as(StandardOptions).runner == "SparkRunner"
    assert opts.view_as(SparkRunnerOptions).spark_master_url == "spark://spark-master:7077"
    assert opts.view_as(SparkRunnerOptions).spark_version == "3"
    p = opts.view_as(PortableOptions)
    assert p.environment_type == "DOCKER"
    assert p.environment_config == IMAGE
    assert p.job_endpoint is None
    assert opts.view_as(SetupOptions).setup_file == REPO_SETUP_FILE
    assert PipelineOptionsValidator(opts, runner=None).validate_environment_options(p) == []


def test_spark_with_separate_job_server_and_process_env():
    opts = build_options(
        "spark",
        {
            "job_endpoint": "dataproc-m:8099",
            "environment_type": "PROCESS",
            "environment_config": {"command": "/opt/apache/beam/boot"},
        },
        [],
    )
    p = opts.view_as(PortableOptions)
    assert p.job_endpoint == "dataproc-m:8099"
    assert json.loads(p.environment_config) == {"command": "/opt/apache/beam/boot"}


def test_spark_uber_jar_needs_rest_url():
    with pytest.raises(RunnerConfigError, match="spark_rest_url"):
        build_options(
            "SparkRunner",
            {"spark_submit_uber_jar": True, "environment_type": "DOCKER", "environment_config": IMAGE},
            [],
        )


def test_flink_options():
    opts = build_options(
        "FlinkRunner",
        {
            "flink_master": "flink-jm:8081",
            "flink_version": "1.19",
            "parallelism": 8,
            "environment_type": "EXTERNAL",
            "environment_config": "localhost:50000",
        },
        [],
    )
    f = opts.view_as(FlinkRunnerOptions)
    assert (f.flink_master, f.flink_version, f.parallelism) == ("flink-jm:8081", "1.19", 8)
    p = opts.view_as(PortableOptions)
    assert (p.environment_type, p.environment_config) == ("EXTERNAL", "localhost:50000")
    with pytest.raises(RunnerConfigError, match="flink_master"):
        build_options("FlinkRunner", {"environment_type": "DOCKER", "environment_config": IMAGE}, [])


def test_portable_runner_needs_job_endpoint_and_environment():
    with pytest.raises(RunnerConfigError, match="job_endpoint"):
        build_options("PortableRunner", {"environment_type": "DOCKER", "environment_config": IMAGE}, [])
    with pytest.raises(RunnerConfigError, match="environment_type"):
        build_options("PortableRunner", {"job_endpoint": "localhost:8099"}, [])
    with pytest.raises(RunnerConfigError, match="environment_config"):
        build_options("SparkRunner", {"environment_type": "DOCKER"}, [])
    with pytest.raises(RunnerConfigError, match="environment_config.command"):
        build_options("SparkRunner", {"environment_type": "PROCESS", "environment_config": {"os": "linux"}}, [])
    opts = build_options("PortableRunner", {"job_endpoint": "localhost:8099", "environment_type": "LOOPBACK"}, [])
    assert opts.view_as(PortableOptions).job_endpoint == "localhost:8099"


# ---------------------------------------------------------------- refusals and describe


@pytest.mark.parametrize("name", ["DaskRunner", "dask", "daskrunner"])
def test_dask_refused_with_reason(name):
    with pytest.raises(RunnerConfigError, match="wrong results"):
        build_options(name, {}, [])


def test_unknown_runner_and_runner_flag_refused():
    with pytest.raises(RunnerConfigError, match="not supported"):
        build_options("SamzaRunner", {}, [])
    with pytest.raises(RunnerConfigError, match="--runner"):
        build_options("DirectRunner", {}, ["--runner=DataflowRunner"])


def test_describe_is_printable():
    d = describe(build_options("DataflowRunner", dataflow_config(), []))
    assert d["runner"] == "DataflowRunner"
    assert d["project"] == "my-proj"
    assert d["dataflow_service_options"] == ["worker_accelerator=" + ACCEL]
    assert d["sdk_container_image"] == IMAGE
    json.dumps(d)  # printable as JSON


def test_load_runner_config(tmp_path):
    y = tmp_path / "dataflow.yaml"
    y.write_text("project: my-proj\nregion: us-central1\ntemp_location: gs://b/tmp\n")
    assert load_runner_config(str(y)) == {"project": "my-proj", "region": "us-central1", "temp_location": "gs://b/tmp"}
    j = tmp_path / "direct.json"
    j.write_text(json.dumps({"direct_running_mode": "multi_processing"}))
    assert load_runner_config(str(j)) == {"direct_running_mode": "multi_processing"}
