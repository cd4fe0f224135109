# Two service accounts with bucket-level roles only (no project-wide storage roles):
#   pipeline (Dataflow workers and the flex-template launcher; also Dataproc VMs): reads the corpus
#     and teacher models, writes datasets and its temp/staging bucket, pulls images;
#   trainer (GKE / Vertex AI training): reads datasets and teacher models (tokenizer, live-teacher
#     mode), reads and writes student checkpoints, pulls images.
# Teacher models have their own bucket: no service account that runs jobs can write or delete them
# (only teacher_publisher_members can).

resource "google_service_account" "pipeline" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-dataflow"
  display_name = "pdistill Dataflow workers (teacher pass)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "trainer" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-trainer"
  display_name = "pdistill student training (GKE / Vertex AI)"
  depends_on   = [google_project_service.apis]
}

# -- project-level roles: only the ones that have no narrower resource (worker, logs, metrics) --
resource "google_project_iam_member" "pipeline_dataflow_worker" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = google_service_account.pipeline.member
}

resource "google_project_iam_member" "pipeline_dataproc_worker" {
  count   = var.enable_dataproc ? 1 : 0
  project = var.project_id
  role    = "roles/dataproc.worker"
  member  = google_service_account.pipeline.member
}

resource "google_project_iam_member" "trainer_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.trainer.member
}

resource "google_project_iam_member" "trainer_metric_writer" {
  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.trainer.member
}

# -- bucket-level roles --
locals {
  bucket_bindings = {
    pipeline_corpus_read      = { bucket = google_storage_bucket.data["corpus"].name, role = "roles/storage.objectViewer", member = google_service_account.pipeline.member }
    pipeline_datasets_write   = { bucket = google_storage_bucket.data["datasets"].name, role = "roles/storage.objectAdmin", member = google_service_account.pipeline.member }
    pipeline_teacher_read     = { bucket = google_storage_bucket.data["teachers"].name, role = "roles/storage.objectViewer", member = google_service_account.pipeline.member }
    pipeline_dataflow_temp    = { bucket = google_storage_bucket.dataflow.name, role = "roles/storage.objectAdmin", member = google_service_account.pipeline.member }
    trainer_datasets_read     = { bucket = google_storage_bucket.data["datasets"].name, role = "roles/storage.objectViewer", member = google_service_account.trainer.member }
    trainer_teacher_read      = { bucket = google_storage_bucket.data["teachers"].name, role = "roles/storage.objectViewer", member = google_service_account.trainer.member }
    trainer_checkpoints_write = { bucket = google_storage_bucket.data["checkpoints"].name, role = "roles/storage.objectAdmin", member = google_service_account.trainer.member }
  }
}

resource "google_storage_bucket_iam_member" "bindings" {
  for_each = local.bucket_bindings
  bucket   = each.value.bucket
  role     = each.value.role
  member   = each.value.member
}

# -- who may upload or replace teacher models (people / CI; never the job accounts) --
resource "google_storage_bucket_iam_member" "teacher_publishers" {
  for_each = toset(var.teacher_publisher_members)
  bucket   = google_storage_bucket.data["teachers"].name
  role     = "roles/storage.objectAdmin"
  member   = each.value
}

# -- image pulls --
resource "google_artifact_registry_repository_iam_member" "readers" {
  for_each   = { pipeline = google_service_account.pipeline.member, trainer = google_service_account.trainer.member }
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = each.value
}

# -- who may launch jobs as these accounts and push images --
resource "google_project_iam_member" "launcher_dataflow_developer" {
  #checkov:skip=CKV_GCP_49:Creating Dataflow jobs needs roles/dataflow.developer and Dataflow has no IAM resource narrower than the project; which service account a job may run as is limited by the per-account serviceAccountUser grants below (launcher_act_as), never project-wide.
  for_each = toset(var.launcher_members)
  project  = var.project_id
  role     = "roles/dataflow.developer"
  member   = each.value
}

resource "google_service_account_iam_member" "launcher_act_as" {
  for_each = {
    for pair in setproduct(var.launcher_members, ["pipeline", "trainer"]) : "${pair[1]}/${pair[0]}" => { member = pair[0], sa = pair[1] }
  }
  service_account_id = each.value.sa == "pipeline" ? google_service_account.pipeline.name : google_service_account.trainer.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value.member
}

resource "google_artifact_registry_repository_iam_member" "launcher_writers" {
  for_each   = toset(var.launcher_members)
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = each.value
}

resource "google_storage_bucket_iam_member" "launcher_templates" {
  for_each = toset(var.launcher_members)
  bucket   = google_storage_bucket.dataflow.name
  role     = "roles/storage.objectAdmin" # write flex template specs, stage the classic submission
  member   = each.value
}

# -- GKE Workload Identity: the training Job's Kubernetes SA acts as the trainer SA --
resource "google_service_account_iam_member" "trainer_workload_identity" {
  count              = var.gke_workload_identity == null ? 0 : 1
  service_account_id = google_service_account.trainer.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.gke_workload_identity.namespace}/${var.gke_workload_identity.service_account}]"
}
