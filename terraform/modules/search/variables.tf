variable "name_prefix" {
  description = "Prefix of every search resource name (endpoint, roles, domain or collection)."
  type        = string
  nullable    = false
  default     = "loom"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix must be 2-20 lower-case letters, digits and hyphens, starting with a letter (as the root module's)."
  }
}

variable "bucket_name" {
  description = "The Loom bucket; the CLIP artifact (model.tar.gz, with its index bundle in index/) lies under models/."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name."
  }
}

variable "kms_key_arn" {
  description = "The project KMS key: bucket objects, OpenSearch encryption at rest, endpoint volume (real-time)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "repository_arn" {
  description = "ARN of the inference image repository (the CLIP artifact runs in the same image)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecr:", var.repository_arn))
    error_message = "repository_arn must be an ECR repository ARN."
  }
}

variable "image_uri" {
  description = "Inference image, <repository_url>:<tag>."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/[a-z0-9._/-]+:[A-Za-z0-9._-]+$", var.image_uri))
    error_message = "image_uri must be an ECR image URI with a tag."
  }
}

variable "model_data_url" {
  description = "s3:// URL of the CLIP artifact's model.tar.gz (loom clip-artifact or loom tiny-clip, tarred) under models/."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^s3://[a-z0-9.-]+/models/.+\\.tar\\.gz$", var.model_data_url))
    error_message = "model_data_url must be s3://<bucket>/models/.../model.tar.gz."
  }
}

variable "endpoint_type" {
  description = "serverless (SageMaker Serverless Inference, as in the aws-samples CLIP search sample; pay per request, cold starts) or realtime (always-on instances)."
  type        = string
  nullable    = false
  default     = "serverless"

  validation {
    condition     = contains(["serverless", "realtime"], var.endpoint_type)
    error_message = "endpoint_type must be serverless or realtime."
  }
}

variable "serverless_memory_mb" {
  description = "Memory of each serverless inference worker: 1024 to 6144 in steps of 1024 (CLIP ViT-B/32 needs about 3 GB with a 100k index)."
  type        = number
  nullable    = false
  default     = 4096

  # ProductionVariantServerlessConfig.MemorySizeInMB: 1024-6144 in 1 GB steps.
  #   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariantServerlessConfig.html
  validation {
    condition     = contains([1024, 2048, 3072, 4096, 5120, 6144], var.serverless_memory_mb)
    error_message = "serverless_memory_mb must be 1024, 2048, 3072, 4096, 5120 or 6144."
  }
}

variable "serverless_max_concurrency" {
  description = "Maximum concurrent invocations of the serverless endpoint (1-200)."
  type        = number
  nullable    = false
  default     = 5

  # ProductionVariantServerlessConfig.MaxConcurrency: 1-200 (API_ProductionVariantServerlessConfig.html).
  validation {
    condition     = var.serverless_max_concurrency >= 1 && var.serverless_max_concurrency <= 200 && floor(var.serverless_max_concurrency) == var.serverless_max_concurrency
    error_message = "serverless_max_concurrency must be an integer from 1 to 200."
  }
}

variable "instance_type" {
  description = "Instance type of the real-time endpoint (endpoint_type = realtime)."
  type        = string
  nullable    = false
  default     = "ml.c6i.xlarge"

  validation {
    condition     = can(regex("^ml\\.[a-z0-9]+(-[a-z0-9]+)?\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like ml.c6i.xlarge."
  }
}

variable "container_startup_timeout_seconds" {
  description = "Real-time only: seconds SageMaker allows the container to pass its first /ping (60-3600, API_ProductionVariant.html); the server's MODEL_LOAD_TIMEOUT is 120 s less. Serverless Inference has a fixed 3-minute window (MODEL_LOAD_TIMEOUT 150 s)."
  type        = number
  nullable    = false
  default     = 600

  validation {
    condition     = var.container_startup_timeout_seconds >= 180 && var.container_startup_timeout_seconds <= 3600 && floor(var.container_startup_timeout_seconds) == var.container_startup_timeout_seconds
    error_message = "container_startup_timeout_seconds must be a whole number from 180 to 3600 (SageMaker allows 60-3600; the server needs 120 s of it to report a slow load)."
  }
}

variable "log_retention_days" {
  description = "Retention of the CLIP endpoint's log group /aws/sagemaker/Endpoints/<name_prefix>-clip (KMS-encrypted)."
  type        = number
  nullable    = false
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}

variable "instance_count" {
  description = "Instances of the real-time endpoint."
  type        = number
  nullable    = false
  default     = 1

  validation {
    condition     = var.instance_count >= 1 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a positive integer."
  }
}

variable "search_backend" {
  description = "embedded (the endpoint searches the index bundle in its artifact), opensearch_domain or opensearch_serverless."
  type        = string
  nullable    = false
  default     = "embedded"

  validation {
    condition     = contains(["embedded", "opensearch_domain", "opensearch_serverless"], var.search_backend)
    error_message = "search_backend must be embedded, opensearch_domain or opensearch_serverless."
  }
}

variable "opensearch_index" {
  description = "Name of the product index in OpenSearch (loom index push --name)."
  type        = string
  nullable    = false
  default     = "loom-products"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{0,254}$", var.opensearch_index))
    error_message = "opensearch_index must be a lower-case OpenSearch index name."
  }
}

variable "opensearch_domain" {
  description = "The managed domain (search_backend = opensearch_domain): engine version, data nodes, EBS gp3 size in GiB."
  type = object({
    engine_version = optional(string, "OpenSearch_2.19")
    instance_type  = optional(string, "r7g.large.search")
    instance_count = optional(number, 2)
    volume_size_gb = optional(number, 20)
  })
  nullable = false
  default  = {}

  validation {
    condition     = can(regex("^OpenSearch_[0-9]+\\.[0-9]+$", var.opensearch_domain.engine_version)) && var.opensearch_domain.instance_count >= 1 && var.opensearch_domain.volume_size_gb >= 10
    error_message = "opensearch_domain needs an OpenSearch_<major>.<minor> engine version (2.10+ for hybrid search), at least 1 node and 10 GiB."
  }
}

variable "ingest_role_arns" {
  description = "IAM roles allowed to write the OpenSearch index (the operator or pipeline running loom index push)."
  type        = list(string)
  nullable    = false
  default     = []

  validation {
    condition     = alltrue([for arn in var.ingest_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/", arn))])
    error_message = "ingest_role_arns must be IAM role ARNs."
  }
}

variable "api_id" {
  description = "Id of the HTTP API that gets the POST /search route (the api module's api_id)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.api_id))
    error_message = "api_id must be an API Gateway id (lower-case letters and digits)."
  }
}

variable "lambda_function_arn" {
  description = "ARN of the API Lambda that answers POST /search (the api module's function_arn)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]+$", var.lambda_function_arn))
    error_message = "lambda_function_arn must be a Lambda function ARN."
  }
}

variable "lambda_role_arn" {
  description = "The API Lambda's execution role: it gets exactly the search permissions (invoke the CLIP endpoint, query OpenSearch)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/", var.lambda_role_arn))
    error_message = "lambda_role_arn must be an IAM role ARN."
  }
}

variable "route_authorization_type" {
  description = "Authorization of POST /search: AWS_IAM (default), JWT (with route_authorizer_id) or NONE (public; say so deliberately)."
  type        = string
  nullable    = false
  default     = "AWS_IAM"

  validation {
    condition     = contains(["AWS_IAM", "JWT", "NONE"], var.route_authorization_type)
    error_message = "route_authorization_type must be AWS_IAM, JWT or NONE."
  }
}

variable "route_authorizer_id" {
  description = "Id of the HTTP API's JWT authorizer (route_authorization_type = JWT)."
  type        = string
  default     = null

  validation {
    condition     = var.route_authorizer_id == null || can(regex("^[a-z0-9]+$", var.route_authorizer_id))
    error_message = "route_authorizer_id must be an API Gateway authorizer id."
  }
}

variable "tags" {
  description = "Tags for every taggable resource."
  type        = map(string)
  nullable    = false
  default     = {}
}
