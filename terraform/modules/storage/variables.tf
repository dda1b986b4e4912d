variable "name_prefix" {
  description = "Prefix for resource names."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix must be 2-20 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the data/model bucket; null derives <name_prefix>-data-<account>-<region>."
  type        = string
  default     = null

  # No dots: the Lambda presigns /restyle URLs virtual-hosted style (https://<bucket>.s3.<region>.amazonaws.com),
  # and S3's wildcard TLS certificate does not match a bucket name with dots ("Virtual hosting of buckets",
  # https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html; bucket naming rules,
  # https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html: "for best compatibility,
  # we recommend that you avoid using dots"). The default, <name_prefix>-data-<account>-<region>, has none.
  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9-]{1,56}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-58 characters of lower-case letters, digits and hyphens (room is left for the -logs bucket); no dots: HTTPS to a virtual-hosted bucket with dots fails S3's certificate check."
  }
}

variable "kms_key_arn" {
  description = "KMS key for default SSE-KMS encryption of the data bucket."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "access_logging_enabled" {
  description = "Create an access-log bucket and send S3 server access logs of the data bucket to it."
  type        = bool
  default     = true
  nullable    = false
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete non-empty buckets (all objects and versions are lost)."
  type        = bool
  default     = false
  nullable    = false
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which overwritten/deleted object versions are removed."
  type        = number
  default     = 90
  nullable    = false

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "checkpoint_expiration_days" {
  description = "Days after which training checkpoints under checkpoints/ expire."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.checkpoint_expiration_days >= 1
    error_message = "checkpoint_expiration_days must be at least 1."
  }
}

variable "batch_output_expiration_days" {
  description = "Days after which batch transform results under batch/output/ expire."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.batch_output_expiration_days >= 1
    error_message = "batch_output_expiration_days must be at least 1."
  }
}

variable "capture_expiration_days" {
  description = "Days after which endpoint data capture under capture/ expires."
  type        = number
  default     = 90
  nullable    = false

  validation {
    condition     = var.capture_expiration_days >= 1
    error_message = "capture_expiration_days must be at least 1."
  }
}

variable "access_log_expiration_days" {
  description = "Days after which S3 server access logs expire."
  type        = number
  default     = 365
  nullable    = false

  validation {
    condition     = var.access_log_expiration_days >= 1
    error_message = "access_log_expiration_days must be at least 1."
  }
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
  nullable    = false
}
