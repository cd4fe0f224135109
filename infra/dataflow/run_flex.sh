#!/usr/bin/env bash
# Launch the teacher pass from the Flex Template on GPU workers.
#
#   WORKER_IMAGE=REGION-docker.pkg.dev/PROJECT/REPO/pdistill-worker:TAG \
#   infra/dataflow/run_flex.sh --input 'gs://CORPUS/web/*.parquet' --teacher gs://MODELS/teacher \
#       --output gs://DATASETS/pd/web-v1 [--top_k 50 --seq_len 2048 ...]
#
# Arguments are template parameters (names as in infra/dataflow/metadata.json = the CLI's long
# flags with '_' for '-'). GPU and machine: GPU_TYPE (nvidia-l4), GPU_COUNT (1), MACHINE_TYPE
# (g2-standard-8: L4 GPUs attach to G2 machines only), MAX_WORKERS (8), DISK_SIZE_GB (200).
# Everything else comes from `terraform output` (or the matching upper-case env vars).
source "$(dirname "$0")/../common.sh"

dataflow_worker_settings
TEMPLATE_PATH="$(tf_out dataflow_template_path)"
SUBNETWORK="${SUBNETWORK:-}"
JOB_NAME="${JOB_NAME:-pdistill-logits-$(date -u +%Y%m%d-%H%M%S)}"

# "--name value" / "--name=value" -> name=value for --parameters (joined with the ~ delimiter,
# gcloud's ^~^ syntax, because values may hold commas: input lists, JSON).
params=()
while [[ $# -gt 0 ]]; do
  arg="${1#--}"; shift
  if [[ "$arg" == *=* ]]; then params+=("${arg//-/_}"); continue; fi
  name="${arg//-/_}"
  if [[ $# -gt 0 && "$1" != --* ]]; then params+=("$name=$1"); shift; else params+=("$name=true"); fi
done
# Beam pipeline options that the flex launcher passes on to Beam: worker container and disk.
params+=("sdk_container_image=$WORKER_IMAGE" "disk_size_gb=$DISK_SIZE_GB")
joined="$(IFS='~'; echo "${params[*]}")"

extra=()
[[ -n "$SUBNETWORK" ]] && extra+=(--subnetwork "$SUBNETWORK" --disable-public-ips)

set -x
gcloud dataflow flex-template run "$JOB_NAME" \
  --project "$PROJECT" \
  --region "$REGION" \
  --template-file-gcs-location "$TEMPLATE_PATH" \
  --temp-location "$TEMP_LOCATION" \
  --staging-location "$STAGING_LOCATION" \
  --service-account-email "$WORKER_SA" \
  --worker-machine-type "$MACHINE_TYPE" \
  --max-workers "$MAX_WORKERS" \
  --additional-experiments "use_runner_v2" \
  --additional-pipeline-options "dataflow_service_options=worker_accelerator=type:$GPU_TYPE;count:$GPU_COUNT;install-nvidia-driver" \
  --parameters "^~^$joined" \
  "${extra[@]}"
