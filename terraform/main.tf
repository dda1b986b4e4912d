# Loom on AWS. Two phases, same configuration, no file edits:
#   1. foundation (model_data_url unset): KMS key, bucket, ECR repositories, training role, CI role
#   2. serving   (model_data_url and inference_image_tag set): SageMaker endpoint, Lambda, HTTP API
# See docs/deploy.md and the tf-foundation / tf-serving make targets.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name

  serving_enabled = var.model_data_url != null
  endpoint_name   = coalesce(var.endpoint_name, "${var.name_prefix}-endpoint")
  tags            = merge({ Project = "loom", ManagedBy = "terraform" }, var.tags)

  # The CLIP search endpoint's image tag: search.image_tag, or by default the CPU build that CI and
  # scripts/build_and_push.sh push beside the inference image (<inference_image_tag>-cpu, from
  # containers/inference/Dockerfile with BASE_IMAGE=cpu-base) for Serverless Inference, which runs on CPUs
  # only and takes images of at most 10 GB; the inference image itself for a real-time endpoint.
  search_image_tag = try(coalesce(var.search.image_tag, var.search.endpoint_type == "serverless" ? "${var.inference_image_tag}-cpu" : var.inference_image_tag), null)
}

module "kms" {
  source = "./modules/kms"

  name_prefix             = var.name_prefix
  deletion_window_in_days = var.kms_deletion_window_days
  logs_service_principal  = var.logs_service_principal
  tags                    = local.tags
}

module "storage" {
  source = "./modules/storage"

  name_prefix            = var.name_prefix
  bucket_name            = var.bucket_name
  kms_key_arn            = module.kms.key_arn
  access_logging_enabled = var.access_logging_enabled
  force_destroy          = var.force_destroy
  tags                   = local.tags
}

module "registry" {
  source = "./modules/registry"

  name_prefix             = var.name_prefix
  kms_key_arn             = module.kms.key_arn
  keep_last_images        = var.ecr_keep_last_images
  disposable_tag_prefixes = var.ecr_disposable_tag_prefixes
  force_delete            = var.force_destroy
  tags                    = local.tags
}

module "training" {
  source = "./modules/training"

  name_prefix           = var.name_prefix
  bucket_arn            = module.storage.bucket_arn
  kms_key_arn           = module.kms.key_arn
  repository_arn        = module.registry.repository_arns["training"]
  create_job_log_groups = var.create_sagemaker_job_log_groups
  log_retention_days    = var.log_retention_days
  tags                  = local.tags
}

module "ci" {
  source = "./modules/ci"
  count  = var.github_repository == null ? 0 : 1

  name_prefix        = var.name_prefix
  github_repository  = var.github_repository
  github_branch      = var.github_branch
  github_tag_pattern = var.github_tag_pattern

  github_release_environment = var.github_release_environment
  oidc_provider_arn          = var.github_oidc_provider_arn
  repository_arns            = values(module.registry.repository_arns)
  tags                       = local.tags
}

module "endpoint" {
  source = "./modules/endpoint"
  count  = local.serving_enabled ? 1 : 0

  endpoint_name                       = local.endpoint_name
  bucket_name                         = module.storage.bucket_name
  kms_key_arn                         = module.kms.key_arn
  repository_arn                      = module.registry.repository_arns["inference"]
  image_uri                           = "${module.registry.repository_urls["inference"]}:${var.inference_image_tag}"
  model_data_url                      = var.model_data_url
  environment                         = var.model_environment
  instance_type                       = var.instance_type
  min_capacity                        = var.min_capacity
  max_capacity                        = var.max_capacity
  target_invocations_per_instance     = var.target_invocations_per_instance
  data_capture                        = var.data_capture
  alarm_5xx_threshold                 = var.alarm_5xx_threshold
  alarm_latency_p90_ms                = var.alarm_latency_p90_ms
  alarm_actions                       = var.alarm_actions
  model_data_compression              = var.model_data_compression
  model_data_download_timeout_seconds = var.model_data_download_timeout_seconds
  container_startup_timeout_seconds   = var.container_startup_timeout_seconds
  autoscaling_enabled                 = var.autoscaling_enabled
  rollout_instance_count              = var.rollout_instance_count
  rollout_bake_seconds                = var.rollout_bake_seconds
  rollouts_outside_terraform          = var.rollouts_outside_terraform
  log_retention_days                  = var.log_retention_days
  async_inference                     = var.async_inference
  tags                                = local.tags
}

module "api" {
  source = "./modules/api"
  count  = local.serving_enabled ? 1 : 0

  name_prefix                     = var.name_prefix
  kms_key_arn                     = module.kms.key_arn
  endpoint_name                   = module.endpoint[0].endpoint_name
  endpoint_arn                    = module.endpoint[0].endpoint_arn_expected
  bedrock_model_id                = var.bedrock_model_id
  bedrock_destination_regions     = var.bedrock_destination_regions
  bedrock_marketplace_product_ids = var.bedrock_marketplace_product_ids
  create_guardrail                = var.create_bedrock_guardrail
  guardrail_id                    = var.bedrock_guardrail_id
  guardrail_version               = var.bedrock_guardrail_version
  disable_execute_api_endpoint    = var.api_disable_execute_api_endpoint
  alarm_actions                   = var.alarm_actions
  log_level                       = var.log_level
  lambda_zip_path                 = var.lambda_zip_path
  lambda_runtime                  = var.lambda_runtime
  lambda_timeout_seconds          = var.lambda_timeout_seconds
  lambda_memory_mb                = var.lambda_memory_mb
  lambda_reserved_concurrency     = var.lambda_reserved_concurrency
  authorization                   = var.api_authorization
  jwt_issuer                      = var.jwt_issuer
  jwt_audience                    = var.jwt_audience
  throttling_burst_limit          = var.api_throttling_burst_limit
  throttling_rate_limit           = var.api_throttling_rate_limit
  log_retention_days              = var.log_retention_days
  extra_environment               = try(module.search[0].lambda_environment, {})
  enable_restyle                  = var.enable_restyle
  restyle_model_id                = var.restyle_model_id
  restyle_region                  = var.restyle_region
  restyle_bucket_name             = module.storage.bucket_name
  tags                            = local.tags
}

# Product search (docs/search.md): the CLIP endpoint, its backend and POST /search, /tags, /interrogate on
# the API above.
module "search" {
  source = "./modules/search"
  count  = local.serving_enabled && var.search != null ? 1 : 0

  name_prefix              = var.name_prefix
  bucket_name              = module.storage.bucket_name
  kms_key_arn              = module.kms.key_arn
  repository_arn           = module.registry.repository_arns["inference"]
  image_uri                = "${module.registry.repository_urls["inference"]}:${local.search_image_tag}"
  model_data_url           = var.search.model_data_url
  endpoint_type            = var.search.endpoint_type
  search_backend           = var.search.backend
  ingest_role_arns         = var.search.ingest_role_arns
  api_id                   = module.api[0].api_id
  lambda_function_arn      = module.api[0].function_arn
  lambda_role_arn          = module.api[0].role_arn
  route_authorization_type = var.api_authorization
  route_authorizer_id      = module.api[0].authorizer_id
  log_retention_days       = var.log_retention_days
  tags                     = local.tags
}
