variable "name_prefix" {
  description = "Prefix for resource names."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix must be 2-20 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "bucket_arn" {
  description = "ARN of the Loom bucket (data/, models/, checkpoints/)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9.-]+$", var.bucket_arn))
    error_message = "bucket_arn must be an S3 bucket ARN."
  }
}

variable "kms_key_arn" {
  description = "KMS key of the bucket (and of training volumes)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "repository_arn" {
  description = "ARN of the training image repository."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecr:", var.repository_arn))
    error_message = "repository_arn must be an ECR repository ARN."
  }
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "create_job_log_groups" {
  description = "Create /aws/sagemaker/TrainingJobs and /aws/sagemaker/TransformJobs with the KMS key and retention (false when the account already has them)."
  type        = bool
  default     = true
  nullable    = false
}

variable "log_retention_days" {
  description = "Retention of the SageMaker job log groups."
  type        = number
  default     = 365
  nullable    = false

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}
