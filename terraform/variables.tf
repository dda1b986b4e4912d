# ---------------------------------------------------------------------------------------------
# Naming and foundation
# ---------------------------------------------------------------------------------------------
variable "region" {
  description = "AWS region; null takes it from the environment (AWS_REGION or the profile)."
  type        = string
  default     = null

  validation {
    condition     = var.region == null || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name; the ECR repositories are <name_prefix>-training and <name_prefix>-inference."
  type        = string
  default     = "loom"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix must be 2-20 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags for every resource (Project and ManagedBy are always set)."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "kms_deletion_window_days" {
  description = "Days a destroyed KMS key waits before AWS deletes it (7-30)."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
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
    error_message = "bucket_name must be 3-58 characters of lower-case letters, digits and hyphens; no dots: HTTPS to a virtual-hosted bucket with dots fails S3's certificate check."
  }
}

variable "access_logging_enabled" {
  description = "Send S3 server access logs of the bucket to a dedicated log bucket."
  type        = bool
  default     = true
  nullable    = false
}

variable "force_destroy" {
  description = "Let terraform destroy delete non-empty buckets and repositories. Keep false outside throw-away accounts."
  type        = bool
  default     = false
  nullable    = false
}

variable "ecr_keep_last_images" {
  description = "How many images per disposable tag prefix each ECR repository keeps. Images tagged otherwise (commit SHAs, releases) never expire."
  type        = number
  default     = 20
  nullable    = false

  validation {
    condition     = var.ecr_keep_last_images >= 1 && var.ecr_keep_last_images <= 1000 && floor(var.ecr_keep_last_images) == var.ecr_keep_last_images
    error_message = "ecr_keep_last_images must be a whole number between 1 and 1000."
  }
}

variable "ecr_disposable_tag_prefixes" {
  description = "Tag prefixes that mark throw-away images (e.g. ci-<sha> branch builds); they expire beyond ecr_keep_last_images. Never deploy an image that carries such a tag."
  type        = list(string)
  default     = ["ci-", "pr-"]
  nullable    = false

  validation {
    condition     = alltrue([for p in var.ecr_disposable_tag_prefixes : can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", p))])
    error_message = "ecr_disposable_tag_prefixes must be non-empty tag prefixes."
  }
}

variable "create_sagemaker_job_log_groups" {
  description = "Create SageMaker's /aws/sagemaker/TrainingJobs and /TransformJobs log groups with the KMS key and log_retention_days; false when the account already has them (or import them)."
  type        = bool
  default     = true
  nullable    = false
}

variable "logs_service_principal" {
  description = "CloudWatch Logs service principal in the KMS key policy; null derives it for the partition and Region (aws_service_principal). Override only where that data source is unavailable."
  type        = string
  default     = null

  validation {
    condition     = var.logs_service_principal == null || can(regex("^logs\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?$", coalesce(var.logs_service_principal, "-")))
    error_message = "logs_service_principal must look like logs.<region>.amazonaws.com."
  }
}

# ---------------------------------------------------------------------------------------------
# CI (GitHub Actions OIDC)
# ---------------------------------------------------------------------------------------------
variable "github_repository" {
  description = "GitHub repository (owner/name) whose Actions may push images; null creates no CI role."
  type        = string
  default     = null

  validation {
    condition     = var.github_repository == null || can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "github_branch" {
  description = "Branch whose workflow runs may assume the CI role."
  type        = string
  default     = "main"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.github_branch))
    error_message = "github_branch must be a single branch name (no wildcards)."
  }
}

variable "github_release_environment" {
  description = "GitHub environment (e.g. release) whose jobs may also assume the CI role: the images workflow's release-tag job runs in it. Protect it in GitHub first (required reviewers, deployment tags v*; docs/deploy.md): GitHub creates an unprotected environment on first use. null (default) trusts none."
  type        = string
  default     = null

  validation {
    condition     = var.github_release_environment == null || can(regex("^[A-Za-z0-9._-]{1,255}$", coalesce(var.github_release_environment, "-")))
    error_message = "github_release_environment must be a GitHub environment name (letters, digits, . _ -), without wildcards."
  }
}

variable "github_tag_pattern" {
  description = "Tags (IAM StringLike pattern) whose workflow runs may also assume the CI role: whoever may push such a tag gets ECR push rights, so set it only with protected tags. null (default) allows none; prefer github_release_environment."
  type        = string
  default     = null

  validation {
    condition     = var.github_tag_pattern == null || can(regex("^[A-Za-z0-9._/-][A-Za-z0-9._/*-]*$", var.github_tag_pattern))
    error_message = "github_tag_pattern must be a tag name or a pattern such as v*, not starting with *."
  }
}

variable "github_oidc_provider_arn" {
  description = "Existing GitHub OIDC provider ARN (one per account); null creates it."
  type        = string
  default     = null

  validation {
    condition     = var.github_oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\\.actions\\.githubusercontent\\.com$", var.github_oidc_provider_arn))
    error_message = "github_oidc_provider_arn must be the ARN of the token.actions.githubusercontent.com OIDC provider."
  }
}

# ---------------------------------------------------------------------------------------------
# Serving (phase 2): set model_data_url and inference_image_tag to create endpoint and API
# ---------------------------------------------------------------------------------------------
variable "model_data_url" {
  description = "S3 URI of the trained model.tar.gz under s3://<bucket>/models/ (or of an uncompressed model folder ending in / with model_data_compression = None); null (phase 1) creates no endpoint and no API."
  type        = string
  default     = null

  validation {
    condition     = var.model_data_url == null || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+\\.tar\\.gz$", var.model_data_url)) || (var.model_data_compression == "None" && can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+/$", coalesce(var.model_data_url, "-"))))
    error_message = "model_data_url must be an s3:// URI of a .tar.gz object, e.g. s3://<bucket>/models/<job>/output/model.tar.gz, or with model_data_compression = None of a folder ending in /."
  }
}

variable "model_data_compression" {
  description = "Gzip (default): model_data_url is a model.tar.gz. None: it is a folder of uncompressed model files, which SageMaker copies without unpacking (faster start-up for large models)."
  type        = string
  default     = "Gzip"
  nullable    = false

  validation {
    condition     = contains(["Gzip", "None"], var.model_data_compression)
    error_message = "model_data_compression must be Gzip or None."
  }
}

variable "model_data_download_timeout_seconds" {
  description = "Seconds SageMaker allows to download the model data to each endpoint instance (60-3600)."
  type        = number
  default     = 1200
  nullable    = false

  validation {
    condition     = var.model_data_download_timeout_seconds >= 60 && var.model_data_download_timeout_seconds <= 3600 && floor(var.model_data_download_timeout_seconds) == var.model_data_download_timeout_seconds
    error_message = "model_data_download_timeout_seconds must be a whole number from 60 to 3600."
  }
}

variable "container_startup_timeout_seconds" {
  description = "Seconds SageMaker allows the inference container to load and warm the model before its first healthy /ping (300-3600); the server's own MODEL_LOAD_TIMEOUT is set 120 s lower."
  type        = number
  default     = 1500
  nullable    = false

  validation {
    condition     = var.container_startup_timeout_seconds >= 300 && var.container_startup_timeout_seconds <= 3600 && floor(var.container_startup_timeout_seconds) == var.container_startup_timeout_seconds
    error_message = "container_startup_timeout_seconds must be a whole number from 300 to 3600."
  }
}

variable "autoscaling_enabled" {
  description = "Target-tracking autoscaling of the endpoint. To change instance_type through Terraform: apply with false, apply the new instance_type, apply with true (SageMaker refuses instance type changes of autoscaled variants); `loom rollout --instance-type` needs none of this."
  type        = bool
  default     = true
  nullable    = false
}

variable "rollout_instance_count" {
  description = "Instances a rollout through Terraform (a new model or image) starts with; null uses min_capacity (the provider sends no RetainAllVariantProperties). Give the current instance count to keep capacity, or roll out with `loom rollout` instead."
  type        = number
  default     = null

  validation {
    condition     = var.rollout_instance_count == null || try(var.rollout_instance_count >= 1 && floor(var.rollout_instance_count) == var.rollout_instance_count, false)
    error_message = "rollout_instance_count must be null or a whole number of at least 1."
  }
}

variable "rollouts_outside_terraform" {
  description = "true: `loom rollout` rolls models, images and instance types out (keeping the autoscaled instance count) and Terraform ignores the endpoint's live configuration; model_data_url, inference_image_tag and instance_type then describe the first deployment only. Switching moves one state entry (docs/deploy.md)."
  type        = bool
  default     = false
  nullable    = false
}

variable "rollout_bake_seconds" {
  description = "Blue/green baking period of a rollout: the new fleet serves all traffic while the 5xx and latency alarms may roll it back."
  type        = number
  default     = 600
  nullable    = false

  validation {
    condition     = var.rollout_bake_seconds >= 0 && var.rollout_bake_seconds <= 3600
    error_message = "rollout_bake_seconds must be between 0 and 3600."
  }
}

variable "inference_image_tag" {
  description = "Tag of the inference image in <name_prefix>-inference (CI pushes the commit SHA); required with model_data_url."
  type        = string
  default     = null

  validation {
    condition     = (var.inference_image_tag == null) == (var.model_data_url == null)
    error_message = "Set model_data_url and inference_image_tag together (phase 2), or neither (phase 1)."
  }

  validation {
    condition     = var.inference_image_tag == null || can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.inference_image_tag))
    error_message = "inference_image_tag must be a valid image tag (letters, digits, _ . -; at most 128)."
  }
}

variable "endpoint_name" {
  description = "Name of the SageMaker endpoint; null gives <name_prefix>-endpoint."
  type        = string
  default     = null

  validation {
    condition     = var.endpoint_name == null || can(regex("^[a-zA-Z0-9](-?[a-zA-Z0-9]){0,39}$", var.endpoint_name))
    error_message = "endpoint_name must be 1-40 letters, digits and single hyphens."
  }
}

variable "model_environment" {
  description = "Extra environment of the inference container, merged over { MAX_BODY_MB = \"20\" }."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "instance_type" {
  description = "SageMaker instance type of the endpoint."
  type        = string
  default     = "ml.g5.2xlarge"
  nullable    = false

  validation {
    condition     = can(regex("^ml\\.[a-z0-9]+(-[a-z0-9]+)?\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be a SageMaker instance type starting with ml., e.g. ml.g5.2xlarge or ml.p6-b200.48xlarge."
  }
}

variable "min_capacity" {
  description = "Minimum (and initial) number of endpoint instances."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.min_capacity >= 1 && floor(var.min_capacity) == var.min_capacity
    error_message = "min_capacity must be a whole number of at least 1."
  }
}

variable "max_capacity" {
  description = "Maximum number of endpoint instances autoscaling may reach."
  type        = number
  default     = 2
  nullable    = false

  validation {
    condition     = var.max_capacity >= var.min_capacity && var.max_capacity <= 100 && floor(var.max_capacity) == var.max_capacity
    error_message = "max_capacity must be a whole number between min_capacity and 100."
  }
}

variable "target_invocations_per_instance" {
  description = "Autoscaling target for SageMakerVariantInvocationsPerInstance (per instance per minute)."
  type        = number
  default     = 60
  nullable    = false

  validation {
    condition     = var.target_invocations_per_instance > 0
    error_message = "target_invocations_per_instance must be positive."
  }
}

variable "data_capture" {
  description = "Endpoint data capture to s3://<bucket>/capture/<endpoint>/: enabled and sampling percentage."
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
  description = "p90 model latency (ms) above which a minute counts as breaching."
  type        = number
  default     = 5000
  nullable    = false

  validation {
    condition     = var.alarm_latency_p90_ms > 0
    error_message = "alarm_latency_p90_ms must be positive."
  }
}

variable "alarm_actions" {
  description = "ARNs (e.g. SNS topics) notified by the endpoint alarms."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for a in var.alarm_actions : startswith(a, "arn:")])
    error_message = "alarm_actions must be ARNs."
  }
}

# ---------------------------------------------------------------------------------------------
# API (phase 2)
# ---------------------------------------------------------------------------------------------
variable "lambda_zip_path" {
  description = "Lambda package built by `make lambda-zip`, relative to the terraform/ directory or absolute."
  type        = string
  default     = "../build/lambda.zip"
  nullable    = false

  validation {
    condition     = endswith(var.lambda_zip_path, ".zip")
    error_message = "lambda_zip_path must name a .zip file."
  }
}

variable "lambda_runtime" {
  description = "Lambda runtime (Python 3.12 or newer)."
  type        = string
  default     = "python3.12"
  nullable    = false

  validation {
    condition     = can(regex("^python3\\.(1[2-9]|[2-9][0-9])$", var.lambda_runtime))
    error_message = "lambda_runtime must be python3.12 or newer."
  }
}

variable "lambda_timeout_seconds" {
  description = "Lambda timeout; below the 30 s API Gateway integration timeout."
  type        = number
  default     = 28
  nullable    = false

  validation {
    condition     = var.lambda_timeout_seconds >= 3 && var.lambda_timeout_seconds < 30
    error_message = "lambda_timeout_seconds must be between 3 and 29 (API Gateway gives up after 30 s)."
  }
}

variable "lambda_memory_mb" {
  description = "Lambda memory in MB."
  type        = number
  default     = 512
  nullable    = false

  validation {
    condition     = var.lambda_memory_mb >= 128 && var.lambda_memory_mb <= 10240
    error_message = "lambda_memory_mb must be between 128 and 10240."
  }
}

variable "lambda_reserved_concurrency" {
  description = "Reserved concurrency of the Lambda; null (default) reserves none. AWS refuses a reservation that leaves fewer than 10 unreserved executions, so a new account (quota 10) must raise its Lambda concurrency quota first."
  type        = number
  default     = null

  validation {
    condition     = var.lambda_reserved_concurrency == null || try(var.lambda_reserved_concurrency >= 1 && floor(var.lambda_reserved_concurrency) == var.lambda_reserved_concurrency, false)
    error_message = "lambda_reserved_concurrency must be null or a whole number of at least 1."
  }
}

variable "bedrock_model_id" {
  description = "Bedrock model that writes descriptions: a cross-Region inference profile id (default us.anthropic.claude-sonnet-5-5, Claude Sonnet 5.5, whose profiles are us. and global.; fallback us./eu./apac./jp./au./global.anthropic.claude-sonnet-4-6), its ARN, or a bare foundation model id for models that allow on-demand invocation. The Lambda may invoke only this model."
  type        = string
  default     = "us.anthropic.claude-sonnet-5-5"
  nullable    = false

  validation {
    condition = (
      can(regex("^((global|us-gov|us|eu|apac|jp|au|ca)\\.)?[a-z0-9-]+\\.[a-z0-9][a-z0-9._:-]*$", var.bedrock_model_id)) ||
      can(regex("^arn:aws[a-z-]*:bedrock:[a-z0-9-]+:[0-9]{12}:inference-profile/(global|us-gov|us|eu|apac|jp|au|ca)\\.[a-z0-9-]+\\.[a-z0-9][a-z0-9._:-]*$", var.bedrock_model_id))
    )
    error_message = "bedrock_model_id must be an inference profile id such as us.anthropic.claude-sonnet-5-5 (the default), its inference-profile ARN, or a foundation model id such as amazon.nova-lite-v1:0."
  }
}

variable "bedrock_destination_regions" {
  description = "Regions the inference profile routes to (aws bedrock get-inference-profile lists them); empty allows the foundation model in every Region, still only through the profile."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for r in var.bedrock_destination_regions : can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", r))])
    error_message = "bedrock_destination_regions must be Region names such as us-east-1."
  }
}

variable "bedrock_marketplace_product_ids" {
  description = "Marketplace product ids the Lambda role may subscribe to on the model's first invocation; empty (default): an admin invokes the model once instead (make preflight)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for p in var.bedrock_marketplace_product_ids : can(regex("^prod-[a-z0-9]+$", p))])
    error_message = "bedrock_marketplace_product_ids must be Marketplace product ids such as prod-abc123."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of the Lambda."
  type        = string
  default     = "INFO"
  nullable    = false

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "api_authorization" {
  description = "Route authorization: AWS_IAM (default), JWT (set jwt_issuer, jwt_audience) or NONE (a public API; only when you mean it)."
  type        = string
  default     = "AWS_IAM"
  nullable    = false

  validation {
    condition     = contains(["AWS_IAM", "JWT", "NONE"], var.api_authorization)
    error_message = "api_authorization must be AWS_IAM, JWT or NONE."
  }
}

variable "jwt_issuer" {
  description = "JWT issuer URL when api_authorization = JWT."
  type        = string
  default     = null

  validation {
    condition     = var.api_authorization != "JWT" || can(regex("^https://", var.jwt_issuer))
    error_message = "api_authorization = JWT needs jwt_issuer, an https:// URL."
  }
}

variable "jwt_audience" {
  description = "Accepted JWT audiences when api_authorization = JWT."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = var.api_authorization != "JWT" || length(var.jwt_audience) > 0
    error_message = "api_authorization = JWT needs at least one jwt_audience."
  }
}

variable "api_throttling_burst_limit" {
  description = "Burst limit of the API stage (requests); null derives it from the Lambda's concurrency."
  type        = number
  default     = null

  validation {
    condition     = var.api_throttling_burst_limit == null || try(var.api_throttling_burst_limit >= 1 && floor(var.api_throttling_burst_limit) == var.api_throttling_burst_limit, false)
    error_message = "api_throttling_burst_limit must be null or a whole number of at least 1."
  }
}

variable "api_throttling_rate_limit" {
  description = "Steady-state rate limit of the API stage (requests per second); null derives it so that burst + rate x Lambda timeout stays within the Lambda's concurrency."
  type        = number
  default     = null

  validation {
    condition     = var.api_throttling_rate_limit == null || try(var.api_throttling_rate_limit > 0, false)
    error_message = "api_throttling_rate_limit must be null or positive."
  }
}

variable "api_disable_execute_api_endpoint" {
  description = "Turn off the default execute-api URL when a custom domain fronts the API."
  type        = bool
  default     = false
  nullable    = false
}

variable "log_retention_days" {
  description = "Retention of every log group Loom creates (Lambda, API access, SageMaker endpoint and job groups; all KMS-encrypted)."
  type        = number
  default     = 365
  nullable    = false

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}

variable "async_inference" {
  description = "Optional asynchronous endpoint beside the real-time one (modules/endpoint/async.tf): { enabled = true } plus optional max_payload_mb, invocation_timeout_seconds, max_concurrent_invocations_per_instance, max_capacity, target_backlog_per_instance, success_topic_arn, error_topic_arn."
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
    condition = alltrue([for arn in compact([var.async_inference.success_topic_arn, var.async_inference.error_topic_arn]) :
    can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$", arn))])
    error_message = "async_inference.success_topic_arn and error_topic_arn must be SNS topic ARNs (the module checks the limits)."
  }
}

variable "search" {
  description = "Product search by text or photo, zero-shot tags and prompts from a photo (docs/search.md, modules/search: POST /search, /tags, /interrogate): null (default) creates nothing; otherwise the CLIP artifact (s3://<bucket>/models/.../model.tar.gz), the backend, the endpoint type and the image tag of the CLIP endpoint. endpoint_type serverless (default) runs a CPU build of the inference image under 10 GB: image_tag defaults to <inference_image_tag>-cpu, the CPU build CI and make images push beside each inference image (docs/search.md); realtime defaults to inference_image_tag. Needs the API (model_data_url set)."
  type = object({
    model_data_url   = string
    backend          = optional(string, "embedded")
    endpoint_type    = optional(string, "serverless")
    image_tag        = optional(string)
    ingest_role_arns = optional(list(string), [])
  })
  default = null

  validation {
    condition     = var.search == null || try(contains(["embedded", "opensearch_domain", "opensearch_serverless"], var.search.backend) && contains(["serverless", "realtime"], var.search.endpoint_type), false)
    error_message = "search.backend must be embedded, opensearch_domain or opensearch_serverless; search.endpoint_type serverless or realtime."
  }

  validation {
    condition     = try(var.search.image_tag == null || can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.search.image_tag)), true)
    error_message = "search.image_tag must be an image tag of the inference repository."
  }

  # Serverless Inference runs on CPUs only and takes container images of at most 10 GB (SageMaker guide,
  # "Deploy models with Amazon SageMaker Serverless Inference": feature exclusions and container limits,
  # https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html). The inference image of
  # containers/inference/Dockerfile is built on the CUDA PyTorch base (pytorch/pytorch:...-cuda...), made
  # for the GPU attribute endpoint: a serverless CLIP endpoint runs the CPU build (BASE_IMAGE=cpu-base),
  # by default <inference_image_tag>-cpu (main.tf local.search_image_tag), never the CUDA image's tag.
  validation {
    condition     = try(var.search.endpoint_type != "serverless" || var.search.image_tag == null || var.search.image_tag != var.inference_image_tag, true)
    error_message = "search.endpoint_type = serverless cannot run the CUDA inference image (inference_image_tag): Serverless Inference is CPU-only with a 10 GB image limit (docs/search.md). Leave search.image_tag unset for <inference_image_tag>-cpu, name another CPU build, or set search.endpoint_type = realtime."
  }

  # The derived <inference_image_tag>-cpu must be an image tag too (at most 128 characters).
  validation {
    condition     = try(var.search.endpoint_type != "serverless" || var.search.image_tag != null || length(var.inference_image_tag) <= 124, true)
    error_message = "inference_image_tag is too long to derive search's CPU image tag (<tag>-cpu, at most 128 characters): set search.image_tag."
  }
}

variable "enable_restyle" {
  description = "Add POST /restyle to the API (docs/api.md): a Stability image-to-image model on Bedrock redraws a product photo in a style. Off by default: no route and no IAM for it. Run `loom preflight --restyle-model-id ID --restyle-region REGION` first."
  type        = bool
  default     = false
  nullable    = false
}

variable "restyle_model_id" {
  description = "Stability foundation model id for POST /restyle (an ACTIVE image-to-image model: `loom preflight --restyle-model-id` checks its lifecycle)."
  type        = string
  default     = "stability.sd3-5-large-v1:0"
  nullable    = false

  validation {
    condition     = can(regex("^stability\\.[a-z0-9][a-z0-9._:-]*$", var.restyle_model_id))
    error_message = "restyle_model_id must be a Stability foundation model id such as stability.sd3-5-large-v1:0."
  }
}

variable "restyle_region" {
  description = "Region where the restyle model is offered and invoked; it may differ from the API's."
  type        = string
  default     = "us-west-2"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.restyle_region))
    error_message = "restyle_region must look like us-west-2."
  }
}

variable "create_bedrock_guardrail" {
  description = "Create an Amazon Bedrock guardrail for the description model (prompt-attack filter on input; hate, insults, misconduct, violence and profanity filters both ways; encrypted with the project key), publish a version and apply it to every description call. Off by default; exclusive with bedrock_guardrail_id."
  type        = bool
  default     = false
  nullable    = false
}

variable "bedrock_guardrail_id" {
  description = "An existing Bedrock guardrail (id, or ARN) to apply to every description call instead; needs bedrock_guardrail_version. null (default): no guardrail unless create_bedrock_guardrail."
  type        = string
  default     = null

  # Converse's GuardrailConfiguration guardrailIdentifier pattern (the Lambda checks the same).
  validation {
    condition     = var.bedrock_guardrail_id == null || can(regex("^([a-z0-9]+|arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+)$", var.bedrock_guardrail_id))
    error_message = "bedrock_guardrail_id must be a guardrail id (lower-case letters and digits) or a guardrail ARN."
  }
  validation {
    condition     = var.bedrock_guardrail_id == null || !var.create_bedrock_guardrail
    error_message = "Set either create_bedrock_guardrail or bedrock_guardrail_id, not both."
  }
}

variable "bedrock_guardrail_version" {
  description = "Version of bedrock_guardrail_id to apply: a version number or DRAFT. Needed with bedrock_guardrail_id, and only with it."
  type        = string
  default     = null

  validation {
    condition     = var.bedrock_guardrail_version == null || can(regex("^([1-9][0-9]{0,7}|DRAFT)$", var.bedrock_guardrail_version))
    error_message = "bedrock_guardrail_version must be a version number such as 1, or DRAFT."
  }
  validation {
    condition     = (var.bedrock_guardrail_version == null) == (var.bedrock_guardrail_id == null)
    error_message = "bedrock_guardrail_id and bedrock_guardrail_version go together: set both or neither."
  }
}
