# Buckets: uniform bucket-level access, public access prevented, versioning with lifecycle rules
# that delete replaced versions, access logs to a dedicated bucket.

locals {
  data_buckets = {
    # role => settings
    corpus = {
      purpose = "pre-training corpus (Parquet / JSONL) read by the teacher pass"
    }
    datasets = {
      purpose = "distillation datasets (MDS parts, index.json, manifest.json) written by the pipeline"
    }
    teachers = {
      purpose = "teacher checkpoints and tokenizers: read by the pipeline and the trainer, written only by teacher_publisher_members"
    }
    checkpoints = {
      purpose = "student checkpoints written by Composer (save_folder); no teacher models here"
    }
  }
}

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This bucket is the access-log sink of the other buckets; logging it into itself would loop.
  name                        = "${local.base}-access-logs"
  project                     = var.project_id
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = var.labels

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      age = var.access_log_retention_days
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# GCS writes usage/storage logs as this group.
resource "google_storage_bucket_iam_member" "access_logs_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}

resource "google_storage_bucket" "data" {
  for_each = local.data_buckets

  name                        = "${local.base}-${each.key}"
  project                     = var.project_id
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = merge(var.labels, { role = each.key })

  versioning {
    enabled = true # an overwritten or deleted object stays recoverable for noncurrent_version_retention_days
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      num_newer_versions = 3
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    # a killed upload must not linger (part uploads are retried whole)
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = each.key
  }

  depends_on = [google_project_service.apis]
}

# Dataflow temp/staging files and flex template specs. Soft delete is off: Beam warns about it for
# temp and staging locations (every temp file would be billed for the soft-delete window).
resource "google_storage_bucket" "dataflow" {
  name                        = "${local.base}-dataflow"
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = merge(var.labels, { role = "dataflow" })

  versioning {
    enabled = true # protects templates/; temp churn is removed by the rules below
  }

  soft_delete_policy {
    retention_duration_seconds = 0
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      age            = var.dataflow_temp_retention_days
      matches_prefix = ["tmp/", "staging/"]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket        = google_storage_bucket.access_logs.name
    log_object_prefix = "dataflow"
  }

  depends_on = [google_project_service.apis]
}
