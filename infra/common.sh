# Shared by the launch scripts: settings from the environment, else from `terraform output`.
#   source "$(dirname "$0")/../common.sh"
#   tf_out dataflow_temp_location        # $DATAFLOW_TEMP_LOCATION if set, else the terraform output
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TF_DIR="${TF_DIR:-$REPO_ROOT/terraform}"

# tf_out NAME: the env var NAME in upper case wins; otherwise `terraform output -raw NAME`.
tf_out() {
  local name="$1" env_name
  env_name="$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')"
  if [[ -n "${!env_name:-}" ]]; then
    printf '%s' "${!env_name}"
    return
  fi
  if ! command -v terraform >/dev/null 2>&1; then
    echo "error: set $env_name or install terraform and apply $TF_DIR" >&2
    return 1
  fi
  terraform -chdir="$TF_DIR" output -raw "$name"
}

# Image tag: the git commit when in a checkout, else a timestamp (override with IMAGE_TAG).
image_tag() {
  if [[ -n "${IMAGE_TAG:-}" ]]; then printf '%s' "$IMAGE_TAG"; return; fi
  git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S
}

# dataflow_worker_settings: what both Dataflow launchers need, from terraform output or env:
# PROJECT, REGION, TEMP_LOCATION, STAGING_LOCATION, WORKER_SA, and the worker shape with its
# defaults (L4 GPUs attach to G2 machines only): WORKER_IMAGE (required), GPU_TYPE, GPU_COUNT,
# MACHINE_TYPE, MAX_WORKERS, DISK_SIZE_GB.
dataflow_worker_settings() {
  PROJECT="$(tf_out project_id)"
  REGION="$(tf_out region)"
  TEMP_LOCATION="$(tf_out dataflow_temp_location)"
  STAGING_LOCATION="$(tf_out dataflow_staging_location)"
  WORKER_SA="$(tf_out dataflow_worker_service_account)"
  WORKER_IMAGE="${WORKER_IMAGE:?set WORKER_IMAGE to the image printed by build_template.sh}"
  GPU_TYPE="${GPU_TYPE:-nvidia-l4}"
  GPU_COUNT="${GPU_COUNT:-1}"
  MACHINE_TYPE="${MACHINE_TYPE:-g2-standard-8}"
  MAX_WORKERS="${MAX_WORKERS:-8}"
  DISK_SIZE_GB="${DISK_SIZE_GB:-200}"
}
