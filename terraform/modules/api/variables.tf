variable "name_prefix" {
  description = "Prefix for resource names (the function is <name_prefix>-api)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix must be 2-20 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "kms_key_arn" {
  description = "KMS key encrypting the Lambda and access log groups."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "endpoint_name" {
  description = "SageMaker endpoint the Lambda calls (ENDPOINT_NAME)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", var.endpoint_name))
    error_message = "endpoint_name must be a valid SageMaker endpoint name."
  }
}

variable "endpoint_arn" {
  description = "ARN of that endpoint: the only one the Lambda may invoke."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:[0-9]{12}:endpoint/[a-z0-9-]+$", var.endpoint_arn))
    error_message = "endpoint_arn must be a SageMaker endpoint ARN."
  }
}

variable "bedrock_model_id" {
  description = "Bedrock model that writes descriptions (BEDROCK_MODEL_ID): a cross-Region inference profile id (us./eu./apac./jp./au./ca./us-gov./global.), a system inference-profile ARN, or a bare foundation model id for models that allow on-demand invocation. The only model the Lambda may invoke."
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
  description = "Regions the inference profile routes to, for the foundation-model statement; empty allows every Region (still only through the profile, by the bedrock:InferenceProfileArn condition)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for r in var.bedrock_destination_regions : can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", r))])
    error_message = "bedrock_destination_regions must be Region names such as us-east-1."
  }
}

variable "bedrock_marketplace_product_ids" {
  description = "AWS Marketplace product ids of the model that the Lambda role may subscribe to on first invocation; empty (default) grants no Marketplace permission: an admin invokes the model once (loom preflight)."
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

variable "lambda_zip_path" {
  description = "Path of the Lambda package built by `make lambda-zip`."
  type        = string
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
  description = "Lambda timeout; a bit below the 30 s API Gateway integration timeout."
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
  description = "Reserved concurrent executions; null (default) reserves none. AWS refuses a reservation that leaves fewer than 10 unreserved executions in the account, so on a new account (quota 10) any reservation fails."
  type        = number
  default     = null

  validation {
    condition     = var.lambda_reserved_concurrency == null || try(var.lambda_reserved_concurrency >= 1 && floor(var.lambda_reserved_concurrency) == var.lambda_reserved_concurrency, false)
    error_message = "lambda_reserved_concurrency must be null or a whole number of at least 1 (0 would disable the function)."
  }
}

variable "authorization" {
  description = "Route authorization: AWS_IAM (SigV4), JWT (needs jwt_issuer and jwt_audience) or NONE (public; only when explicitly chosen)."
  type        = string
  default     = "AWS_IAM"
  nullable    = false

  validation {
    condition     = contains(["AWS_IAM", "JWT", "NONE"], var.authorization)
    error_message = "authorization must be AWS_IAM, JWT or NONE."
  }
}

variable "jwt_issuer" {
  description = "JWT issuer URL (authorization = JWT)."
  type        = string
  default     = null

  validation {
    condition     = var.authorization != "JWT" || can(regex("^https://", var.jwt_issuer))
    error_message = "authorization = JWT needs jwt_issuer, an https:// URL."
  }
}

variable "jwt_audience" {
  description = "Accepted JWT audiences (authorization = JWT)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = var.authorization != "JWT" || length(var.jwt_audience) > 0
    error_message = "authorization = JWT needs at least one jwt_audience."
  }
}

variable "throttling_burst_limit" {
  description = "Stage-wide burst limit (requests); null derives it from the Lambda's concurrency (half of it)."
  type        = number
  default     = null

  validation {
    condition     = var.throttling_burst_limit == null || try(var.throttling_burst_limit >= 1 && floor(var.throttling_burst_limit) == var.throttling_burst_limit, false)
    error_message = "throttling_burst_limit must be null or a whole number of at least 1."
  }
}

variable "throttling_rate_limit" {
  description = "Stage-wide steady-state rate limit (requests per second); null derives it so that burst + rate x timeout stays within the Lambda's concurrency."
  type        = number
  default     = null

  validation {
    condition     = var.throttling_rate_limit == null || try(var.throttling_rate_limit > 0, false)
    error_message = "throttling_rate_limit must be null or positive."
  }
}

variable "disable_execute_api_endpoint" {
  description = "Turn off the default execute-api URL (when a custom domain fronts the API); api_url then names an endpoint that answers 403."
  type        = bool
  default     = false
  nullable    = false
}

variable "alarm_actions" {
  description = "ARNs (e.g. SNS topics) notified by the Lambda and API alarms."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for a in var.alarm_actions : startswith(a, "arn:")])
    error_message = "alarm_actions must be ARNs."
  }
}

variable "alarm_api_5xx_threshold" {
  description = "API 5xx responses per minute that count as a breaching datapoint."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.alarm_api_5xx_threshold >= 1
    error_message = "alarm_api_5xx_threshold must be at least 1."
  }
}

variable "alarm_api_latency_p90_ms" {
  description = "p90 API latency (ms) above which a minute counts as breaching."
  type        = number
  default     = 20000
  nullable    = false

  validation {
    condition     = var.alarm_api_latency_p90_ms > 0
    error_message = "alarm_api_latency_p90_ms must be positive."
  }
}

variable "log_retention_days" {
  description = "Retention of the Lambda and access log groups."
  type        = number
  default     = 365
  nullable    = false

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "extra_environment" {
  description = "More environment variables for the API Lambda, from other modules (the search module's SEARCH_ENDPOINT_NAME, SEARCH_BACKEND, OPENSEARCH_*). The API's own variables win over these."
  type        = map(string)
  default     = {}
  nullable    = false

  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : can(regex("^[A-Z][A-Z0-9_]*$", k))])
    error_message = "extra_environment names must be upper-case environment variable names."
  }
}

variable "enable_restyle" {
  description = "Add POST /restyle: a Stability image-to-image model on Bedrock redraws the photo in a style. Off by default: no route, no IAM statement, no RESTYLE_* variables."
  type        = bool
  default     = false
  nullable    = false
}

variable "restyle_model_id" {
  description = "Bedrock foundation model id of the restyle model (RESTYLE_MODEL_ID), invoked on demand in restyle_region; the only image model the Lambda may invoke. `loom preflight --restyle-model-id` checks that it is ACTIVE (for SDXL 1.0, stability.stable-diffusion-xl-v1, too)."
  type        = string
  default     = "stability.sd3-5-large-v1:0"
  nullable    = false

  validation {
    condition     = can(regex("^stability\\.[a-z0-9][a-z0-9._:-]*$", var.restyle_model_id))
    error_message = "restyle_model_id must be a Stability foundation model id such as stability.sd3-5-large-v1:0 (the Lambda sends the Stability image-to-image request body)."
  }
}

variable "restyle_region" {
  description = "Region where the restyle model is offered and invoked (RESTYLE_REGION); it may differ from the API's."
  type        = string
  default     = "us-west-2"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.restyle_region))
    error_message = "restyle_region must look like us-west-2."
  }
}

variable "restyle_bucket_name" {
  description = "The project bucket; restyled images too large to return inline go under restyle/ (RESTYLE_BUCKET). Needed with enable_restyle."
  type        = string
  default     = null

  validation {
    condition     = var.restyle_bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.restyle_bucket_name))
    error_message = "restyle_bucket_name must be a valid S3 bucket name."
  }
}

variable "create_guardrail" {
  description = "Create an Amazon Bedrock guardrail (prompt-attack filter on input; hate, insults, misconduct, violence and profanity filters both ways; encrypted with kms_key_arn) and a version of it, and apply it to every description call (BEDROCK_GUARDRAIL_ID / BEDROCK_GUARDRAIL_VERSION). Off by default; exclusive with guardrail_id."
  type        = bool
  default     = false
  nullable    = false
}

variable "guardrail_id" {
  description = "An existing Bedrock guardrail to apply to every description call instead (BEDROCK_GUARDRAIL_ID): its id, or its ARN; needs guardrail_version. null (default): none, unless create_guardrail."
  type        = string
  default     = null

  # The pattern of Converse's GuardrailConfiguration guardrailIdentifier (inference/api/service.py checks the same).
  #   https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_GuardrailConfiguration.html
  validation {
    condition     = var.guardrail_id == null || can(regex("^([a-z0-9]+|arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+)$", var.guardrail_id))
    error_message = "guardrail_id must be a guardrail id (lower-case letters and digits) or a guardrail ARN."
  }
  validation {
    condition     = var.guardrail_id == null || !var.create_guardrail
    error_message = "Set either create_guardrail or guardrail_id, not both."
  }
}

variable "guardrail_version" {
  description = "Version of the existing guardrail_id to apply (BEDROCK_GUARDRAIL_VERSION): a version number or DRAFT. Needed with guardrail_id, and only with it."
  type        = string
  default     = null

  validation {
    condition     = var.guardrail_version == null || can(regex("^([1-9][0-9]{0,7}|DRAFT)$", var.guardrail_version))
    error_message = "guardrail_version must be a version number such as 1, or DRAFT."
  }
  validation {
    condition     = (var.guardrail_version == null) == (var.guardrail_id == null)
    error_message = "guardrail_id and guardrail_version go together: set both or neither."
  }
}
