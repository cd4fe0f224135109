#!/usr/bin/env bash
# Build and push the GPU worker image (also the flex-template launcher) with Cloud Build, then
# write the Dataflow Flex Template spec to Cloud Storage.
#
#   infra/dataflow/build_template.sh            # settings from `terraform output` (terraform/)
#   IMAGE_TAG=v1 ARTIFACT_REPOSITORY_URL=... DATAFLOW_TEMPLATE_PATH=gs://... infra/dataflow/build_template.sh
#
# Needs: gcloud (authenticated, with roles/cloudbuild.builds.editor, artifactregistry.writer on the
# repository and storage.objectAdmin on the Dataflow bucket). Local alternative to Cloud Build:
# LOCAL_DOCKER=1 builds with `docker buildx` and pushes (needs `gcloud auth configure-docker`).
source "$(dirname "$0")/../common.sh"

PROJECT="$(tf_out project_id)"
REGION="$(tf_out region)"
REPO_URL="$(tf_out artifact_repository_url)"       # REGION-docker.pkg.dev/PROJECT/REPO
TEMPLATE_PATH="$(tf_out dataflow_template_path)"   # gs://.../templates/pdistill-logits.json
TAG="$(image_tag)"
IMAGE="$REPO_URL/pdistill-worker:$TAG"

cd "$REPO_ROOT"
test -f constraints.txt || { echo "error: constraints.txt is missing (the image pins come from it)" >&2; exit 1; }

echo "building $IMAGE"
if [[ "${LOCAL_DOCKER:-0}" == "1" ]]; then
  docker buildx build --platform linux/amd64 -f infra/docker/Dockerfile.worker -t "$IMAGE" --push .
else
  # Cloud Build has no flag for a non-default Dockerfile: pass a one-step build config.
  cfg="$(mktemp)"; trap 'rm -f "$cfg"' EXIT
  cat >"$cfg" <<YAML
steps:
- name: gcr.io/cloud-builders/docker
  env: ["DOCKER_BUILDKIT=1"]
  args: ["build", "-f", "infra/docker/Dockerfile.worker", "-t", "$IMAGE", "."]
images: ["$IMAGE"]
options:
  machineType: E2_HIGHCPU_8
  diskSizeGb: 200
timeout: 3600s
YAML
  gcloud builds submit --project "$PROJECT" --region "$REGION" --config "$cfg" .
fi

echo "writing flex template spec $TEMPLATE_PATH"
gcloud dataflow flex-template build "$TEMPLATE_PATH" \
  --project "$PROJECT" \
  --image "$IMAGE" \
  --sdk-language PYTHON \
  --metadata-file infra/dataflow/metadata.json

echo "worker image:  $IMAGE"
echo "template spec: $TEMPLATE_PATH"
echo "next: WORKER_IMAGE=$IMAGE infra/dataflow/run_flex.sh --input gs://... --teacher gs://... --output gs://..."
