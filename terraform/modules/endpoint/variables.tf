variable "endpoint_name" {
  description = "Name of the SageMaker endpoint; also the prefix of its model, config, role and alarms."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-zA-Z0-9](-?[a-zA-Z0-9]){0,39}$", var.endpoint_name))
    error_message = "endpoint_name must be 1-40 letters, digits and single hyphens, starting and ending with a letter or digit."
  }
}

variable "bucket_name" {
  description = "The Loom bucket: holds the artifact (models/), batch/ and capture/."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name."
  }
}

variable "kms_key_arn" {
  description = "KMS key of the bucket, data capture and (where the instance type allows) the endpoint volume."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "repository_arn" {
  description = "ARN of the inference image repository (the only one the role may pull from)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecr:", var.repository_arn))
    error_message = "repository_arn must be an ECR repository ARN."
  }
}

variable "image_uri" {
  description = "Inference image, <repository_url>:<tag>; the container serves /ping and /invocations on 8080."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/[a-z0-9._/-]+(:[A-Za-z0-9_.-]+|@sha256:[a-f0-9]{64})$", var.image_uri))
    error_message = "image_uri must be an ECR image reference with a tag or digest."
  }
}

variable "model_data_url" {
  description = "S3 URI of model.tar.gz (SageMaker extracts it to /opt/ml/model), or of a folder of model files ending in / with model_data_compression = None."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+(\\.tar\\.gz|/)$", var.model_data_url))
    error_message = "model_data_url must be an s3:// URI of a .tar.gz object, or of a folder ending in / (model_data_compression = None)."
  }
}

variable "environment" {
  description = "Extra environment of the inference container, merged over the serving defaults { MAX_BODY_MB = \"20\", MODEL_LOAD_TIMEOUT, MAX_PENDING_REQUESTS = \"100\", MAX_BATCH_PRODUCTS = \"16\", BATCH_WAIT_MS = \"0\" }."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "instance_type" {
  description = "Instance type of the production variant."
  type        = string
  default     = "ml.g5.2xlarge"
  nullable    = false

  validation {
    condition     = can(regex("^ml\\.[a-z0-9]+(-[a-z0-9]+)?\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be a SageMaker instance type such as ml.g5.2xlarge."
  }
}

variable "variant_name" {
  description = "Name of the production variant."
  type        = string
  default     = "AllTraffic"
  nullable    = false

  validation {
    condition     = can(regex("^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", var.variant_name))
    error_message = "variant_name must be letters, digits and hyphens."
  }
}

variable "min_capacity" {
  description = "Minimum (and initial) number of instances."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.min_capacity >= 1 && floor(var.min_capacity) == var.min_capacity
    error_message = "min_capacity must be a whole number of at least 1."
  }
}

variable "max_capacity" {
  description = "Maximum number of instances autoscaling may reach."
  type        = number
  default     = 2
  nullable    = false

  validation {
    condition     = var.max_capacity >= var.min_capacity && floor(var.max_capacity) == var.max_capacity
    error_message = "max_capacity must be a whole number not below min_capacity."
  }
}

variable "target_invocations_per_instance" {
  description = "Target of SageMakerVariantInvocationsPerInstance (invocations per instance per minute)."
  type        = number
  default     = 60
  nullable    = false

  validation {
    condition     = var.target_invocations_per_instance > 0
    error_message = "target_invocations_per_instance must be positive."
  }
}

variable "scale_in_cooldown_seconds" {
  description = "Seconds between scale-in activities."
  type        = number
  default     = 600
  nullable    = false

  validation {
    condition     = var.scale_in_cooldown_seconds >= 0
    error_message = "scale_in_cooldown_seconds must not be negative."
  }
}

variable "scale_out_cooldown_seconds" {
  description = "Seconds between scale-out activities."
  type        = number
  default     = 120
  nullable    = false

  validation {
    condition     = var.scale_out_cooldown_seconds >= 0
    error_message = "scale_out_cooldown_seconds must not be negative."
  }
}

variable "data_capture" {
  description = "Capture requests and responses to s3://<bucket>/capture/<endpoint>/ (KMS-encrypted)."
  type = object({
    enabled             = bool
    sampling_percentage = optional(number, 10)
  })
  default  = { enabled = false }
  nullable = false

  validation {
    condition     = var.data_capture.sampling_percentage >= 1 && var.data_capture.sampling_percentage <= 100
    error_message = "data_capture.sampling_percentage must be between 1 and 100."
  }
}

variable "alarm_5xx_threshold" {
  description = "Invocation5XXErrors per minute that count as a breaching datapoint."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.alarm_5xx_threshold >= 1
    error_message = "alarm_5xx_threshold must be at least 1."
  }
}

variable "alarm_latency_p90_ms" {
  description = "p90 ModelLatency in milliseconds above which a minute counts as breaching."
  type        = number
  default     = 5000
  nullable    = false

  validation {
    condition     = var.alarm_latency_p90_ms > 0
    error_message = "alarm_latency_p90_ms must be positive."
  }
}

variable "alarm_actions" {
  description = "ARNs (e.g. SNS topics) notified when an alarm changes state."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for a in var.alarm_actions : startswith(a, "arn:")])
    error_message = "alarm_actions must be ARNs."
  }
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "async_inference" {
  description = "An optional asynchronous endpoint (same image and artifact): payload limit, invocation timeout, concurrency per instance, autoscaling 0..max_capacity on the backlog per instance, SNS topics."
  type = object({
    enabled                                 = bool
    max_payload_mb                          = optional(number, 1024)
    invocation_timeout_seconds              = optional(number, 3600)
    max_concurrent_invocations_per_instance = optional(number, 4)
    max_capacity                            = optional(number, 2)
    target_backlog_per_instance             = optional(number, 5)
    success_topic_arn                       = optional(string)
    error_topic_arn                         = optional(string)
  })
  default  = { enabled = false }
  nullable = false

  validation {
    condition = (var.async_inference.max_payload_mb >= 1 && var.async_inference.max_payload_mb <= 1024
      && var.async_inference.invocation_timeout_seconds >= 1 && var.async_inference.invocation_timeout_seconds <= 3600
    && var.async_inference.max_capacity >= 1)
    error_message = "async_inference: max_payload_mb 1..1024 (1 GB is SageMaker's limit), invocation_timeout_seconds 1..3600, max_capacity at least 1."
  }

  # AsyncInferenceClientConfig.MaxConcurrentInvocationsPerInstance: an integer 1..1000 (botocore's SageMaker
  # model, shape MaxConcurrentInvocationsPerInstance; API_AsyncInferenceClientConfig.html).
  validation {
    condition = (floor(var.async_inference.max_concurrent_invocations_per_instance) == var.async_inference.max_concurrent_invocations_per_instance
      && var.async_inference.max_concurrent_invocations_per_instance >= 1
    && var.async_inference.max_concurrent_invocations_per_instance <= 1000)
    error_message = "async_inference.max_concurrent_invocations_per_instance must be a whole number from 1 to 1000 (SageMaker's MaxConcurrentInvocationsPerInstance)."
  }
}

variable "model_data_compression" {
  description = "Gzip: model_data_url is a model.tar.gz. None: it is a folder (ending in /) of uncompressed model files that SageMaker copies without unpacking, faster for large models."
  type        = string
  default     = "Gzip"
  nullable    = false

  validation {
    condition     = contains(["Gzip", "None"], var.model_data_compression)
    error_message = "model_data_compression must be Gzip or None."
  }
}

variable "model_data_download_timeout_seconds" {
  description = "Seconds SageMaker allows to download the model data to each instance (60-3600)."
  type        = number
  default     = 1200
  nullable    = false

  validation {
    condition     = var.model_data_download_timeout_seconds >= 60 && var.model_data_download_timeout_seconds <= 3600 && floor(var.model_data_download_timeout_seconds) == var.model_data_download_timeout_seconds
    error_message = "model_data_download_timeout_seconds must be a whole number from 60 to 3600."
  }
}

variable "container_startup_timeout_seconds" {
  description = "Seconds SageMaker allows the container to pass its first /ping (load and warm the model; 300-3600). The server's MODEL_LOAD_TIMEOUT defaults to 120 s less."
  type        = number
  default     = 1500
  nullable    = false

  validation {
    condition     = var.container_startup_timeout_seconds >= 300 && var.container_startup_timeout_seconds <= 3600 && floor(var.container_startup_timeout_seconds) == var.container_startup_timeout_seconds
    error_message = "container_startup_timeout_seconds must be a whole number from 300 to 3600."
  }
}

variable "rollout_instance_count" {
  description = "Instances a new endpoint configuration (a rollout through Terraform) starts with; null uses min_capacity. The provider sends no RetainAllVariantProperties: set it to the current instance count to start the new fleet at that size (`loom rollout` keeps the count by itself)."
  type        = number
  default     = null

  validation {
    condition     = var.rollout_instance_count == null || try(var.rollout_instance_count >= 1 && floor(var.rollout_instance_count) == var.rollout_instance_count, false)
    error_message = "rollout_instance_count must be null or a whole number of at least 1."
  }
}

variable "rollout_bake_seconds" {
  description = "Blue/green baking period: seconds the new fleet serves all traffic, watched by the alarms, before the old fleet is released."
  type        = number
  default     = 600
  nullable    = false

  validation {
    condition     = var.rollout_bake_seconds >= 0 && var.rollout_bake_seconds <= 3600
    error_message = "rollout_bake_seconds must be between 0 and 3600."
  }
}

variable "rollout_termination_wait_seconds" {
  description = "Seconds the old fleet is kept after a rollout succeeds (a quick way back)."
  type        = number
  default     = 300
  nullable    = false

  validation {
    condition     = var.rollout_termination_wait_seconds >= 0 && var.rollout_termination_wait_seconds <= 3600
    error_message = "rollout_termination_wait_seconds must be between 0 and 3600."
  }
}

variable "rollout_timeout_seconds" {
  description = "Longest a rollout may take (new fleet start-up, baking and termination wait), 600-14400."
  type        = number
  default     = 7200
  nullable    = false

  validation {
    condition     = var.rollout_timeout_seconds >= 600 && var.rollout_timeout_seconds <= 14400
    error_message = "rollout_timeout_seconds must be between 600 and 14400."
  }

  # UpdateEndpoint refuses a maximum execution time that does not exceed the waits it contains.
  #   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_BlueGreenUpdatePolicy.html
  validation {
    condition     = var.rollout_timeout_seconds > var.rollout_bake_seconds + var.rollout_termination_wait_seconds
    error_message = "rollout_timeout_seconds (${var.rollout_timeout_seconds}) must exceed rollout_bake_seconds + rollout_termination_wait_seconds (${var.rollout_bake_seconds + var.rollout_termination_wait_seconds})."
  }
}

variable "rollouts_outside_terraform" {
  description = "true: `loom rollout` rolls new models, images and instance types out (keeping the autoscaled instance count), and Terraform ignores the endpoint's live configuration and deployment configuration. Terraform's model_data_url, image and instance_type then only describe the first deployment. Switch with `terraform state mv` (docs/deploy.md)."
  type        = bool
  default     = false
  nullable    = false
}

variable "autoscaling_enabled" {
  description = "Target-tracking autoscaling of the variant. To change instance_type through Terraform, set false for one apply first (SageMaker refuses an instance type change of an autoscaled variant), then true again; `loom rollout --instance-type` does this itself."
  type        = bool
  default     = true
  nullable    = false
}

variable "log_retention_days" {
  description = "Retention of the endpoint's log group /aws/sagemaker/Endpoints/<name>."
  type        = number
  default     = 365
  nullable    = false

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}
