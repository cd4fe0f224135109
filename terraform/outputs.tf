# Read by infra/common.sh (`terraform -chdir=terraform output -raw NAME`); each can be overridden by
# the upper-case environment variable of the same name.

output "project_id" {
  description = "GCP project."
  value       = var.project_id
}

output "region" {
  description = "Region for Dataflow jobs and images."
  value       = var.region
}

output "corpus_bucket_url" {
  description = "gs:// URL of the corpus bucket (pipeline --input)."
  value       = google_storage_bucket.data["corpus"].url
}

output "datasets_bucket_url" {
  description = "gs:// URL of the distillation-dataset bucket (pipeline --output, trainer data.streams.N.uri)."
  value       = google_storage_bucket.data["datasets"].url
}

output "teachers_bucket_url" {
  description = "gs:// URL of the teacher-model bucket (pipeline --teacher, trainer model.tokenizer / live teacher); read-only for both service accounts."
  value       = google_storage_bucket.data["teachers"].url
}

output "checkpoints_bucket_url" {
  description = "gs:// URL of the student-checkpoint bucket (trainer run.save_folder)."
  value       = google_storage_bucket.data["checkpoints"].url
}

output "dataflow_bucket_url" {
  description = "gs:// URL of the Dataflow temp/staging/templates bucket."
  value       = google_storage_bucket.dataflow.url
}

output "dataflow_temp_location" {
  description = "Beam --temp_location."
  value       = "${google_storage_bucket.dataflow.url}/tmp"
}

output "dataflow_staging_location" {
  description = "Beam --staging_location."
  value       = "${google_storage_bucket.dataflow.url}/staging"
}

output "dataflow_template_path" {
  description = "Where build_template.sh writes the flex template spec and run_flex.sh reads it."
  value       = "${google_storage_bucket.dataflow.url}/templates/pdistill-logits.json"
}

output "dataflow_worker_service_account" {
  description = "Service account of Dataflow workers / the flex launcher (and Dataproc VMs)."
  value       = google_service_account.pipeline.email
}

output "trainer_service_account" {
  description = "Service account of training jobs (Vertex AI serviceAccount, GKE Workload Identity)."
  value       = google_service_account.trainer.email
}

output "artifact_repository_url" {
  description = "Docker repository prefix: <region>-docker.pkg.dev/<project>/<repository>."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "worker_image" {
  description = "Worker image name without tag (build_template.sh appends :<git commit>)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/pdistill-worker"
}

output "trainer_image" {
  description = "Trainer image name without tag."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/pdistill-trainer"
}
