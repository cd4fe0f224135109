#!/usr/bin/env bash
# Classic submission: run `pdistill logits` here (a workstation or CI runner with gcloud ADC) and
# let it submit to Dataflow with GPU workers. Needs the project installed (`make install`) and the
# worker image pushed (infra/dataflow/build_template.sh).
#
#   WORKER_IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/pdistill-worker:TAG \
#   infra/dataflow/run_direct.sh --input 'gs://CORPUS/web/*.parquet' --teacher gs://MODELS/teacher \
#       --output gs://DATASETS/pd/web-v1 --top-k 50
#
# Arguments are `pdistill logits` options. The Dataflow settings below become a runner config for
# pipelines/runner_options.py, which validates them (required fields, GPU vs machine type, no
# resource hints with worker_accelerator) before anything is submitted.
source "$(dirname "$0")/../common.sh"

dataflow_worker_settings
PDISTILL="${PDISTILL:-$REPO_ROOT/.venv/bin/pdistill}"
command -v "$PDISTILL" >/dev/null 2>&1 || PDISTILL=pdistill

runner_config="$(mktemp --suffix=.json)"; trap 'rm -f "$runner_config"' EXIT
cat >"$runner_config" <<JSON
{
  "project": "$PROJECT",
  "region": "$REGION",
  "temp_location": "$TEMP_LOCATION",
  "staging_location": "$STAGING_LOCATION",
  "service_account_email": "$WORKER_SA",
  "sdk_container_image": "$WORKER_IMAGE",
  "machine_type": "$MACHINE_TYPE",
  "worker_accelerator": "type:$GPU_TYPE;count:$GPU_COUNT;install-nvidia-driver",
  "max_num_workers": $MAX_WORKERS,
  "disk_size_gb": $DISK_SIZE_GB,
  "experiments": ["use_runner_v2"],
  "setup_file": ""
}
JSON
# setup_file "" : the worker image already holds this exact project (same commit as the image tag).

set -x
"$PDISTILL" logits --runner DataflowRunner --runner-config "$runner_config" --no-progress \
  --job_name "${JOB_NAME:-pdistill-logits-$(date -u +%Y%m%d-%H%M%S)}" "$@"
