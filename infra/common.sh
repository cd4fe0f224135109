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
