"""Checks of infra/ and terraform/ that run without a cloud (issue 6).

Nothing here claims a cloud run: Terraform is parsed (python-hcl2), formatted (`terraform fmt`, when
installed) and scanned (`checkov`, when installed); the Flex Template metadata is compared with the
`pdistill logits` parser; Dockerfile pins with setup.py / constraints.txt; launch scripts are
run against stand-in `composer` / `torchrun` executables; the runner configs that the submission
scripts write are turned into Beam option objects and asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF = os.path.join(ROOT, "terraform")
INFRA = os.path.join(ROOT, "infra")
DOCKER = os.path.join(INFRA, "docker")


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


# ================================================================ Terraform


@pytest.fixture(scope="module")
def tf():
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed (test extra)")
    merged: dict[str, list] = {}
    for name in sorted(os.listdir(TF)):
        if name.endswith(".tf"):
            with open(os.path.join(TF, name), encoding="utf-8") as f:
                doc = hcl2.load(f)  # raises on a syntax error
            for key, blocks in doc.items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def _unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def resources(tf, rtype):
    out = {}
    for block in tf.get("resource", []):
        for t, named in block.items():
            if _unquote(t) == rtype:
                for name, body in named.items():
                    out[_unquote(name)] = body
    return out


def _blocks(tf, key):
    out = {}
    for block in tf.get(key, []):
        for name, body in block.items():
            out[_unquote(name)] = body
    return out


def test_terraform_parses_and_variables_are_documented(tf):
    variables = _blocks(tf, "variable")
    assert {"project_id", "region", "name_prefix", "bucket_location", "labels"} <= set(variables)
    for name, body in variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"
        if "bool" not in str(body["type"]) and "object" not in str(body["type"]):
            assert body.get("validation"), f"variable {name} has no validation block"


def test_terraform_outputs_cover_the_launch_scripts(tf):
    outputs = _blocks(tf, "output")
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"
    used = set()
    for dirpath, _, files in os.walk(INFRA):
        for f in files:
            if f.endswith(".sh"):
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    used |= set(re.findall(r"tf_out ([a-z_]+)", fh.read()))
    assert used, "launch scripts read no terraform outputs"
    assert used <= set(outputs), f"scripts read outputs that terraform does not define: {used - set(outputs)}"


def test_buckets_are_private_versioned_and_have_lifecycle(tf):
    buckets = resources(tf, "google_storage_bucket")
    assert {"data", "dataflow", "access_logs"} <= set(buckets)
    text = read("terraform", "storage.tf")
    for role in ("corpus", "datasets", "checkpoints"):
        assert re.search(rf"^\s*{role}\s*=\s*\{{", text, re.M), f"no {role} bucket"
    for name, b in buckets.items():
        assert b["uniform_bucket_level_access"] is True, name
        assert _unquote(b["public_access_prevention"]) == "enforced", name
        assert b["versioning"][0]["enabled"] is True, name
        assert b.get("lifecycle_rule"), f"bucket {name} has no lifecycle rule"
        if name != "access_logs":
            assert b.get("logging"), f"bucket {name} has no access logging"


def test_iam_is_least_privilege(tf):
    project_roles = {_unquote(r["role"]) for r in resources(tf, "google_project_iam_member").values()}
    assert "roles/dataflow.worker" in project_roles
    for role in project_roles:
        assert not role.startswith("roles/storage."), f"project-wide storage role {role}: use bucket-level IAM"
        assert role not in ("roles/owner", "roles/editor", "roles/viewer"), f"basic role {role}"
    worker = resources(tf, "google_project_iam_member")["pipeline_dataflow_worker"]
    assert "google_service_account.pipeline" in worker["member"]
    bindings = read("terraform", "iam.tf")
    # bucket-level grants for both accounts
    assert "google_storage_bucket_iam_member" in bindings
    assert re.search(r"pipeline_datasets_write\s*=\s*\{[^}]*roles/storage.objectAdmin", bindings)
    assert re.search(r"trainer_datasets_read\s*=\s*\{[^}]*roles/storage.objectViewer", bindings)
    assert re.search(r"trainer_checkpoints_write\s*=\s*\{[^}]*roles/storage.objectAdmin", bindings)
    sas = resources(tf, "google_service_account")
    assert {"pipeline", "trainer"} <= set(sas)


def _bucket_grants(tf):
    """(bucket role key, IAM role, member) for every bucket-level grant in iam.tf's bindings map."""
    text = read("terraform", "iam.tf")
    block = re.search(r"bucket_bindings\s*=\s*\{(.*?)\n  \}", text, re.S).group(1)
    grants = []
    for line in block.splitlines():
        m = re.search(
            r'bucket\s*=\s*google_storage_bucket\.(\w+)(?:\["(\w+)"\])?\.name,\s*role\s*=\s*"([^"]+)",'
            r"\s*member\s*=\s*(\S+?)\s*\}",
            line,
        )
        if m:
            grants.append((m.group(2) or m.group(1), m.group(3), m.group(4)))
    return grants


def test_teacher_models_are_read_only_for_the_trainer(tf):
    """Teacher checkpoints live in their own bucket; the trainer (which writes student checkpoints)
    can only read them, so a training job can never overwrite or delete a teacher."""
    assert re.search(r"^\s*teachers\s*=\s*\{", read("terraform", "storage.tf"), re.M), "no teachers bucket"
    grants = _bucket_grants(tf)
    assert grants, "no bucket bindings parsed from iam.tf"
    on = lambda bucket, who: {r for b, r, m in grants if b == bucket and f"google_service_account.{who}" in m}  # noqa: E731
    assert on("teachers", "trainer") == {"roles/storage.objectViewer"}
    assert on("teachers", "pipeline") == {"roles/storage.objectViewer"}
    assert on("checkpoints", "trainer") == {"roles/storage.objectAdmin"}
    assert on("checkpoints", "pipeline") == set()  # the pipeline reads teachers, not student checkpoints
    writers = resources(tf, "google_storage_bucket_iam_member")
    assert "teacher_publishers" in writers and "teachers" in writers["teacher_publishers"]["bucket"]
    assert "teachers_bucket_url" in _blocks(tf, "output")


def test_required_apis_and_registry(tf):
    main = read("terraform", "main.tf")
    for api in ("dataflow", "compute", "storage", "artifactregistry", "iam", "cloudbuild"):
        assert f'"{api}.googleapis.com"' in main
    assert resources(tf, "google_project_service")
    repo = resources(tf, "google_artifact_registry_repository")["images"]
    assert _unquote(repo["format"]) == "DOCKER"


def test_justified_checkov_skips_only():
    """Every `#checkov:skip=` carries an ID and a reason of some substance."""
    for name in os.listdir(TF):
        if name.endswith(".tf"):
            for line in read("terraform", name).splitlines():
                if "checkov:skip" in line:
                    m = re.search(r"#checkov:skip=(CKV2?_[A-Z]+_\d+):(.+)$", line)
                    assert m and len(m.group(2).strip()) > 30, f"{name}: unjustified skip: {line.strip()}"


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    if not terraform:
        pytest.skip("terraform CLI not installed: `terraform fmt -check` not run")
    r = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", TF], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _checkov():
    for cand in (
        os.environ.get("CHECKOV"),
        os.path.join(ROOT, ".venv-checkov", "bin", "checkov"),
        shutil.which("checkov"),
    ):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def test_checkov_passes():
    checkov = _checkov()
    if not checkov:
        pytest.skip(
            "checkov not installed: it cannot share .venv (its boto3/botocore pins break aiobotocore/s3fs); "
            "install it in .venv-checkov or set CHECKOV=/path/to/checkov"
        )
    r = subprocess.run(
        [checkov, "-d", TF, "--framework", "terraform", "--skip-download", "--quiet", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        report = json.loads(r.stdout)
    except ValueError:
        pytest.fail(f"checkov gave no JSON (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    reports = report if isinstance(report, list) else [report]
    failed = [c for rep in reports for c in rep.get("results", {}).get("failed_checks", [])]
    assert not failed, "\n".join(
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in failed
    )
    assert r.returncode == 0, r.stderr[-3000:]


# ================================================================ Dockerfiles vs setup.py / constraints.txt


def _pin(text, package):
    found = set(re.findall(rf'"{re.escape(package)}(?:\[[a-z,]+\])?==([0-9][^"]*)"', text))
    assert len(found) == 1, f"setup.py pins {package} {found or 'nowhere'}"
    return found.pop()


def _constraint(package):
    path = os.path.join(ROOT, "constraints.txt")
    if not os.path.isfile(path):
        return None
    for line in read("constraints.txt").splitlines():
        m = re.match(rf"^{re.escape(package)}==(\S+)", line.strip(), re.I)
        if m:
            return m.group(1)
    return None


def _args(dockerfile):
    """ARG defaults (the first default wins, as in a Dockerfile's global scope)."""
    out = {}
    for m in re.finditer(r"^ARG\s+([A-Z_]+)=(\S+)", read("infra", "docker", dockerfile), re.M):
        out.setdefault(m.group(1), m.group(2))
    return out


def _setup_pins():
    text = read("setup.py")
    py = re.search(r'python_requires=">=(\d+\.\d+),<(\d+\.\d+)"', text)
    assert py, "setup.py python_requires is not of the form >=X.Y,<X.Z"
    return {
        "PYTHON_VERSION": py.group(1),
        "BEAM_VERSION": _pin(text, "apache-beam"),
        "TORCH_VERSION": _pin(text, "torch"),
        "TORCHVISION_VERSION": _pin(text, "torchvision"),
        "COMPOSER_VERSION": _pin(text, "mosaicml"),
    }


@pytest.mark.parametrize("dockerfile", ["Dockerfile.worker", "Dockerfile.trainer"])
def test_dockerfile_pins_match_setup_and_constraints(dockerfile):
    pins = _setup_pins()
    args = _args(dockerfile)
    expected = ["PYTHON_VERSION", "TORCH_VERSION"] + (
        ["BEAM_VERSION"] if dockerfile == "Dockerfile.worker" else ["TORCHVISION_VERSION", "COMPOSER_VERSION"]
    )
    packages = {
        "BEAM_VERSION": "apache-beam",
        "TORCH_VERSION": "torch",
        "TORCHVISION_VERSION": "torchvision",
        "COMPOSER_VERSION": "mosaicml",
    }
    for key in expected:
        assert key in args, f"{dockerfile}: no ARG {key}"
        assert args[key] == pins[key], f"{dockerfile}: {key}={args[key]} but setup.py says {pins[key]}"
        if key in packages:
            c = _constraint(packages[key])
            if c is not None:
                assert args[key] == c, f"{dockerfile}: {key}={args[key]} but constraints.txt says {c}"
    text = read("infra", "docker", dockerfile)
    if dockerfile == "Dockerfile.worker":
        assert re.search(r"^FROM apache/beam_python\$\{PYTHON_VERSION\}_sdk:\$\{BEAM_VERSION\}\s*$", text, re.M)
        assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
        assert ".[pipeline]" in text
    else:
        assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-", text, re.M)
        assert ".[trainer]" in text
    assert "-c constraints.txt" in text


@pytest.mark.parametrize("dockerfile", ["Dockerfile.worker", "Dockerfile.trainer"])
def test_dockerfile_copy_sources_exist_and_are_not_ignored(dockerfile):
    text = read("infra", "docker", dockerfile)
    ignore = read("infra", "docker", dockerfile + ".dockerignore")
    allowed = [line[1:].rstrip("*").rstrip("/") for line in ignore.splitlines() if line.startswith("!")]
    for line in text.splitlines():
        m = re.match(r"^COPY\s+(?!--from)(.+)\s+\S+$", line)
        if not m:
            continue
        for src in m.group(1).split():
            if src == "constraints.txt" and not os.path.exists(os.path.join(ROOT, src)):
                pytest.fail("constraints.txt is missing: the images install with -c constraints.txt")
            assert os.path.exists(os.path.join(ROOT, src)), f"{dockerfile}: COPY {src}: no such file"
            assert any(src == a or src.startswith(a + "/") for a in allowed), (
                f"{dockerfile}: {src} excluded by .dockerignore"
            )


# ================================================================ Flex Template vs `pdistill logits`


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cli_parser():
    cli = pytest.importorskip("pipelines.cli")
    make = getattr(cli, "build_parser", None) or getattr(cli, "parser", None)
    assert callable(make), "pipelines.cli has neither build_parser() nor parser()"
    return make()


@pytest.fixture(scope="module")
def launcher():
    return _load(os.path.join(INFRA, "dataflow", "flex_launcher.py"), "flex_launcher")


@pytest.fixture(scope="module")
def metadata():
    return json.loads(read("infra", "dataflow", "metadata.json"))


def test_flex_parameters_match_cli_options(cli_parser, launcher, metadata):
    params = [p["name"] for p in metadata["parameters"]]
    assert len(params) == len(set(params)), "duplicate parameter names"
    for p in params:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p), f"flex parameter name {p!r}"
    cli = set(launcher.cli_flags(cli_parser)) - {"help"}
    expected = cli - set(launcher.LOCAL_ONLY)
    missing, extra = expected - set(params), set(params) - expected
    assert not missing, (
        f"CLI options with no flex template parameter: {sorted(missing)} (add them to metadata.json or LOCAL_ONLY)"
    )
    assert not extra, f"flex template parameters the CLI does not have: {sorted(extra)}"
    assert set(launcher.LOCAL_ONLY) <= cli | {"json"}, "LOCAL_ONLY names an option the CLI no longer has"


def _matches(param, value):
    return all(re.fullmatch(rx, value) for rx in param.get("regexes", []))


def test_flex_parameter_types_follow_the_cli(cli_parser, launcher, metadata):
    actions = launcher.cli_flags(cli_parser)
    for p in metadata["parameters"]:
        a = actions[p["name"]]
        assert p.get("label") and len(p.get("helpText", "")) > 20, f"{p['name']}: label/helpText missing"
        assert p.get("paramType"), f"{p['name']}: no paramType"
        required = p["name"] in ("input", "teacher", "output")
        assert p.get("isOptional", False) is (not required), f"{p['name']}: isOptional should be {not required}"
        if a.type is int:
            assert _matches(p, "2048") and not _matches(p, "abc") and not _matches(p, "1.5"), f"{p['name']}: int regex"
        elif a.type is float:
            assert _matches(p, "0.95") and _matches(p, "1") and not _matches(p, "x"), f"{p['name']}: float regex"
        elif a.type is json.loads:
            assert _matches(p, '{"a": 1}') and not _matches(p, "a=1"), f"{p['name']}: JSON regex"
        elif isinstance(a, argparse.BooleanOptionalAction):
            assert _matches(p, "true") and _matches(p, "false") and not _matches(p, "maybe"), f"{p['name']}: bool regex"


def test_flex_enums_match_the_code(metadata):
    config = pytest.importorskip("pipelines.config")
    from schemas.codec import CODECS

    enums = {
        p["name"]: [o["value"] for o in p["enumOptions"]] for p in metadata["parameters"] if p["paramType"] == "ENUM"
    }
    assert enums["format"] == list(config.FORMATS)
    assert enums["selection"] == list(config.SELECTIONS)
    assert sorted(enums["codec"]) == sorted(CODECS)
    assert enums["dtype"] == ["auto", "float32", "bfloat16", "float16"]
    defaults = config.PipelineConfig.model_fields
    for p in metadata["parameters"]:
        if "defaultValue" in p:
            assert p["defaultValue"] == defaults[p["name"]].default, f"{p['name']}: default differs from PipelineConfig"


def test_flex_launcher_translates_parameters_for_the_cli(cli_parser, launcher):
    argv = [
        "--input=gs://corpus/a/*.parquet,gs://corpus/b/*.jsonl",
        "--teacher=gs://m/t",
        "--output=gs://d/out",
        "--text_column=body",
        "--seq_len=512",
        "--top_p=0.9",
        "--top_k=50",
        "--add_bos=true",
        '--codec_params={"step": 0.05}',
        "--tokenizer=",  # empty optional parameter
        "--runner=DataflowRunner",
        "--project=my-proj",
        "--region=us-central1",
        "--temp_location=gs://b/tmp",
        "--sdk_container_image=img:1",
        "--job_name",
        "j1",
    ]
    out = launcher.translate(argv, cli_parser)
    args, extra = cli_parser.parse_known_args(out)
    assert args.runner == "DataflowRunner" and args.progress is False
    assert args.inputs == ["gs://corpus/a/*.parquet,gs://corpus/b/*.jsonl"]
    assert (args.teacher, args.output, args.text_column) == ("gs://m/t", "gs://d/out", "body")
    assert (args.seq_len, args.top_p, args.top_k, args.add_bos) == (512, 0.9, 50, True)
    assert args.codec_params == {"step": 0.05}
    assert args.tokenizer is None
    assert extra == [
        "--project=my-proj",
        "--region=us-central1",
        "--temp_location=gs://b/tmp",
        "--sdk_container_image=img:1",
        "--job_name",
        "j1",
    ]
    assert launcher.translate(["--add_bos=false"], cli_parser)[-1] == "--no-add-bos"


# ================================================================ runner configs written by the scripts


def _heredoc_configs(script):
    text = read(*script.split("/"))
    return re.findall(r"<<JSON\n(.*?)\nJSON\n", text, re.S)


def _fill(template, values):
    return re.sub(r"\$([A-Z_]+)", lambda m: str(values[m.group(1)]), template)


VALUES = {
    "PROJECT": "my-proj",
    "REGION": "us-central1",
    "TEMP_LOCATION": "gs://my-proj-pdistill-dataflow/tmp",
    "STAGING_LOCATION": "gs://my-proj-pdistill-dataflow/staging",
    "WORKER_SA": "pdistill-dataflow@my-proj.iam.gserviceaccount.com",
    "WORKER_IMAGE": "us-central1-docker.pkg.dev/my-proj/pdistill/pdistill-worker:abc",
    "MACHINE_TYPE": "g2-standard-8",
    "GPU_TYPE": "nvidia-l4",
    "GPU_COUNT": 1,
    "MAX_WORKERS": 8,
    "DISK_SIZE_GB": 200,
    "SPARK_MASTER_URL": "spark://spark-master:7077",
    "JOB_ENDPOINT": "spark-master:8099",
}


def test_run_direct_config_builds_dataflow_gpu_options():
    pytest.importorskip("apache_beam")
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        GoogleCloudOptions,
        SetupOptions,
        StandardOptions,
        WorkerOptions,
    )

    from pipelines.runner_options import build_options

    (cfg,) = _heredoc_configs("infra/dataflow/run_direct.sh")
    opts = build_options("DataflowRunner", json.loads(_fill(cfg, VALUES)), ["--job_name=pdistill-logits-x"])
    gcp = opts.view_as(GoogleCloudOptions)
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    assert (gcp.project, gcp.region, gcp.temp_location) == ("my-proj", "us-central1", VALUES["TEMP_LOCATION"])
    assert gcp.service_account_email == VALUES["WORKER_SA"]
    assert gcp.dataflow_service_options == ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    w = opts.view_as(WorkerOptions)
    assert (w.sdk_container_image, w.machine_type, w.max_num_workers, w.disk_size_gb) == (
        VALUES["WORKER_IMAGE"],
        "g2-standard-8",
        8,
        200,
    )
    assert "use_runner_v2" in opts.view_as(DebugOptions).experiments
    assert opts.view_as(SetupOptions).setup_file is None  # the image holds the project
    assert opts.view_as(StandardOptions).resource_hints == []


def test_spark_configs_build_portable_options():
    pytest.importorskip("apache_beam")
    import yaml
    from apache_beam.options.pipeline_options import PortableOptions, SparkRunnerOptions, StandardOptions

    from pipelines.runner_options import build_options

    yarn, standalone = _heredoc_configs("infra/spark/submit_spark.sh")
    o = build_options("SparkRunner", json.loads(_fill(yarn, VALUES)), ["--output_executable_path=/tmp/job.jar"])
    assert o.view_as(SparkRunnerOptions).spark_master_url == "yarn"
    assert o.view_as(PortableOptions).output_executable_path == "/tmp/job.jar"
    assert (o.view_as(PortableOptions).environment_type, o.view_as(PortableOptions).environment_config) == (
        "DOCKER",
        VALUES["WORKER_IMAGE"],
    )
    o = build_options("SparkRunner", json.loads(_fill(standalone, VALUES)), [])
    assert o.view_as(StandardOptions).runner == "SparkRunner"
    assert o.view_as(PortableOptions).job_endpoint == "spark-master:8099"
    assert o.view_as(SparkRunnerOptions).spark_master_url == "spark://spark-master:7077"
    cfg = yaml.safe_load(read("infra", "spark", "spark-runner.yaml"))
    o = build_options("SparkRunner", cfg, [])
    p = o.view_as(PortableOptions)
    assert (p.job_endpoint, p.environment_type) == ("spark-master:8099", "DOCKER")
    assert p.environment_config.endswith("pdistill-worker:TAG")


# ================================================================ training launch files


def _fake_bin(tmp_path, name):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    exe.write_text('#!/usr/bin/env bash\necho "NODE_RANK=${NODE_RANK:-unset}"\nprintf "%s\\n" "$@"\n')
    exe.chmod(0o755)
    return str(bindir)


def _run_launcher(tmp_path, script, fake, env):
    bindir = _fake_bin(tmp_path, fake)
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "NODE_RANK", "CLUSTER_SPEC", "MASTER_ADDR", "NNODES")
    }
    base["PATH"] = bindir + os.pathsep + base["PATH"]
    r = subprocess.run(
        ["bash", os.path.join(INFRA, "training", script), "pd_best.yaml", "run.autoresume=true"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r


def test_composer_launcher_multi_node_env(tmp_path):
    r = _run_launcher(
        tmp_path,
        "launch_composer.sh",
        "composer",
        {"MASTER_ADDR": "10.0.0.2", "NNODES": "2", "NODE_RANK": "1", "NPROC_PER_NODE": "4"},
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    for flag, value in (
        ("--nproc", "4"),
        ("--world_size", "8"),
        ("--base_rank", "4"),
        ("--node_rank", "1"),
        ("--master_addr", "10.0.0.2"),
        ("--master_port", "29500"),
        ("-m", "trainer"),
    ):
        assert out[out.index(flag) + 1] == value, (flag, r.stdout)
    assert out[-3:-1] == ["pd_best.yaml", "run.autoresume=true"]


def test_torchrun_launcher_exports_node_rank(tmp_path):
    r = _run_launcher(
        tmp_path,
        "launch_torchrun.sh",
        "torchrun",
        {"MASTER_ADDR": "10.0.0.2", "NNODES": "3", "JOB_COMPLETION_INDEX": "2", "NPROC_PER_NODE": "2"},
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    assert "NODE_RANK=2" in out  # Composer reads NODE_RANK; torchrun does not set it
    for flag, value in (
        ("--nnodes", "3"),
        ("--nproc-per-node", "2"),
        ("--node-rank", "2"),
        ("--master-addr", "10.0.0.2"),
    ):
        assert out[out.index(flag) + 1] == value, (flag, r.stdout)


def test_launchers_map_vertex_env_and_refuse_bad_world(tmp_path):
    r = _run_launcher(
        tmp_path,
        "launch_composer.sh",
        "composer",
        {"CLUSTER_SPEC": "{}", "WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "10.1.0.5", "NPROC_PER_NODE": "2"},
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    assert out[out.index("--world_size") + 1] == "4" and out[out.index("--node_rank") + 1] == "1"
    r = _run_launcher(
        tmp_path,
        "launch_composer.sh",
        "composer",
        {"MASTER_ADDR": "10.0.0.2", "NNODES": "2", "NPROC_PER_NODE": "2", "WORLD_SIZE": "3"},
    )
    assert r.returncode == 2 and "WORLD_SIZE" in r.stderr
    r = _run_launcher(tmp_path, "launch_torchrun.sh", "torchrun", {"NNODES": "2", "NPROC_PER_NODE": "1"})
    assert r.returncode == 2 and "MASTER_ADDR" in r.stderr


def test_k8s_job_resumes_after_preemption():
    yaml = pytest.importorskip("yaml")
    docs = {d["kind"]: d for d in yaml.safe_load_all(read("infra", "training", "k8s-train-job.yaml"))}
    job, svc = docs["Job"], docs["Service"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert spec["backoffLimit"] > 0 and pod["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert any(r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in rules)
    assert svc["spec"]["clusterIP"] == "None" and pod["subdomain"] == svc["metadata"]["name"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{svc['metadata']['name']}"
    assert int(env["NNODES"]) == spec["completions"]
    assert "run.autoresume=true" in c["args"]
    assert any(a.startswith("run.save_folder=gs://") for a in c["args"])
    assert any(a.startswith("run.run_name=") for a in c["args"])
    assert c["command"][0] == "/opt/pdistill/bin/launch_composer.sh"
    assert any(v["mountPath"] == "/dev/shm" for v in c["volumeMounts"])


def test_vertex_job_resumes_after_preemption():
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load(read("infra", "training", "vertex-train-job.yaml"))
    assert spec["scheduling"]["restartJobOnWorkerRestart"] is True
    for pool in spec["workerPoolSpecs"]:
        args = pool["containerSpec"]["args"]
        assert "run.autoresume=true" in args
        assert any(a.startswith("run.save_folder=gs://") for a in args)
        assert any(a.startswith("run.run_name=") for a in args)
        assert pool["machineSpec"]["acceleratorCount"] >= 1


def test_shell_scripts_parse():
    scripts = [os.path.join(d, f) for d, _, fs in os.walk(INFRA) for f in fs if f.endswith(".sh")]
    assert len(scripts) >= 7
    for s in scripts:
        r = subprocess.run(["bash", "-n", s], capture_output=True, text=True)
        assert r.returncode == 0, f"{s}: {r.stderr}"
        if not s.endswith(("common.sh", "node_env.sh")):  # sourced, not run
            assert os.access(s, os.X_OK), f"{s} is not executable"
