variable "project_id" {
  description = "GCP project that holds the buckets, service accounts and image repository."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 chars, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region for Dataflow jobs, the Artifact Registry repository and (by default) the buckets. Pick one with the GPUs you need (e.g. L4 in us-central1)."
  type        = string
  default     = "us-central1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must look like us-central1 or europe-west4."
  }
}

variable "bucket_location" {
  description = "Location of the buckets (a region, dual-region or multi-region); null = var.region, which keeps Dataflow and GPU traffic in one region."
  type        = string
  default     = null
  validation {
    condition     = var.bucket_location == null || can(regex("^[A-Za-z0-9-]+$", var.bucket_location))
    error_message = "bucket_location must be a GCS location such as us-central1, US or EUR4."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (buckets are named <project_id>-<name_prefix>-<role>)."
  type        = string
  default     = "pdistill"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-20 chars of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Labels put on buckets and the repository."
  type        = map(string)
  default     = { app = "pdistill" }
  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "label keys must start with a lowercase letter; keys and values use lowercase letters, digits, _ and - (max 63 chars)."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept (corpus, datasets, checkpoints) before lifecycle deletes it."
  type        = number
  default     = 30
  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && var.noncurrent_version_retention_days <= 3650
    error_message = "noncurrent_version_retention_days must be between 1 and 3650."
  }
}

variable "dataflow_temp_retention_days" {
  description = "Days after which objects under tmp/ and staging/ in the Dataflow bucket are deleted."
  type        = number
  default     = 7
  validation {
    condition     = var.dataflow_temp_retention_days >= 1 && var.dataflow_temp_retention_days <= 365
    error_message = "dataflow_temp_retention_days must be between 1 and 365."
  }
}

variable "access_log_retention_days" {
  description = "Days the bucket access logs are kept."
  type        = number
  default     = 90
  validation {
    condition     = var.access_log_retention_days >= 1
    error_message = "access_log_retention_days must be at least 1."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete non-empty buckets. Keep false outside throw-away projects."
  type        = bool
  default     = false
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key (projects/.../cryptoKeys/...) for customer-managed encryption of the buckets and the image repository; null = Google-managed keys. The GCS and Artifact Registry service agents need roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  type        = string
  default     = null
  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be a full key name: projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

variable "launcher_members" {
  description = "Principals (user:..., group:..., serviceAccount:...) allowed to launch Dataflow jobs as the worker service account and to build images (roles/dataflow.developer, iam.serviceAccountUser on the worker and trainer SAs, artifactregistry.writer on the repository)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.launcher_members : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))])
    error_message = "launcher_members entries must be IAM principals such as user:alice@example.com or group:ml@example.com."
  }
}

variable "teacher_publisher_members" {
  description = "Principals (user:..., group:..., serviceAccount:...) allowed to upload, replace or delete teacher models in the teachers bucket (roles/storage.objectAdmin there). The pipeline and trainer service accounts only read it."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for m in var.teacher_publisher_members : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", m))])
    error_message = "teacher_publisher_members entries must be IAM principals such as user:alice@example.com or group:ml@example.com."
  }
}

variable "gke_workload_identity" {
  description = "Optional GKE Workload Identity binding for infra/training/k8s-train-job.yaml: the Kubernetes namespace and service account allowed to act as the trainer service account."
  type = object({
    namespace       = string
    service_account = string
  })
  default = null
}

variable "enable_dataproc" {
  description = "Enable the Dataproc API and let the pipeline service account run Dataproc worker VMs (infra/spark/)."
  type        = bool
  default     = false
}

variable "enable_vertex_ai" {
  description = "Enable the Vertex AI API for infra/training/vertex-train-job.yaml."
  type        = bool
  default     = true
}

variable "image_retention_count" {
  description = "Most recent tagged image versions kept per image in the repository by its cleanup policy."
  type        = number
  default     = 20
  validation {
    condition     = var.image_retention_count >= 1
    error_message = "image_retention_count must be at least 1."
  }
}
