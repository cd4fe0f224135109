# pdistill on GCP: APIs, buckets, service accounts with bucket-level IAM, and the image repository.
# See README.md for init/plan/apply and how the outputs feed infra/ launch scripts.

locals {
  bucket_location = coalesce(var.bucket_location, var.region)
  base            = "${var.project_id}-${var.name_prefix}"
  apis = concat(
    [
      "artifactregistry.googleapis.com",
      "cloudbuild.googleapis.com",
      "compute.googleapis.com",
      "dataflow.googleapis.com",
      "iam.googleapis.com",
      "logging.googleapis.com",
      "monitoring.googleapis.com",
      "storage.googleapis.com",
    ],
    var.enable_dataproc ? ["dataproc.googleapis.com"] : [],
    var.enable_vertex_ai ? ["aiplatform.googleapis.com"] : [],
    var.gke_workload_identity != null ? ["container.googleapis.com"] : [],
  )
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false # other workloads in the project may rely on them
}
