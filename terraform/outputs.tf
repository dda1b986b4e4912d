output "account_id" {
  description = "AWS account the stack lives in."
  value       = local.account_id
}

output "region" {
  description = "AWS region the stack lives in."
  value       = local.region
}

output "kms_key_arn" {
  description = "Customer-managed KMS key (bucket, images, logs, capture); pass it to training jobs as the output/volume key."
  value       = module.kms.key_arn
}

output "bucket_name" {
  description = "Loom bucket: data/, models/, checkpoints/, batch/, capture/."
  value       = module.storage.bucket_name
}

output "training_repository_url" {
  description = "ECR repository URL of the training image."
  value       = module.registry.repository_urls["training"]
}

output "inference_repository_url" {
  description = "ECR repository URL of the inference image."
  value       = module.registry.repository_urls["inference"]
}

output "training_role_arn" {
  description = "Execution role for SageMaker training jobs (python -m training.launch --role-arn ...)."
  value       = module.training.role_arn
}

output "ci_role_arn" {
  description = "Role GitHub Actions assumes to push images (null without github_repository)."
  value       = try(module.ci[0].role_arn, null)
}

output "github_oidc_provider_arn" {
  description = "GitHub OIDC provider the CI role trusts: the one given in github_oidc_provider_arn, or the one created (null without github_repository)."
  value       = try(module.ci[0].oidc_provider_arn, null)
}

output "serving_enabled" {
  description = "Whether phase 2 (endpoint and API) is deployed."
  value       = local.serving_enabled
}

output "endpoint_name" {
  description = "SageMaker endpoint name (null in phase 1)."
  value       = try(module.endpoint[0].endpoint_name, null)
}

output "endpoint_rollback_alarm_names" {
  description = "Alarms that roll an endpoint rollout back (Terraform's and `loom rollout`'s; null in phase 1)."
  value       = try(module.endpoint[0].rollback_alarm_names, null)
}

output "model_name" {
  description = "SageMaker model name, also for batch transform jobs (null in phase 1)."
  value       = try(module.endpoint[0].model_name, null)
}

output "endpoint_role_arn" {
  description = "Execution role of the SageMaker model: endpoint and batch transform (null in phase 1)."
  value       = try(module.endpoint[0].role_arn, null)
}

output "inference_image_uri" {
  description = "Inference image the endpoint runs (null in phase 1)."
  value       = local.serving_enabled ? "${module.registry.repository_urls["inference"]}:${var.inference_image_tag}" : null
}

output "search_image_uri" {
  description = "Image the CLIP search endpoint runs: search.image_tag, or <inference_image_tag>-cpu (the CPU build) for a serverless endpoint (null without search)."
  value       = length(module.search) > 0 ? "${module.registry.repository_urls["inference"]}:${local.search_image_tag}" : null
}

output "lambda_function_name" {
  description = "API Lambda name (null in phase 1)."
  value       = try(module.api[0].function_name, null)
}

output "lambda_role_arn" {
  description = "Execution role of the API Lambda (null in phase 1)."
  value       = try(module.api[0].role_arn, null)
}

output "api_url" {
  description = "Base URL of the HTTP API: POST <api_url>/describe, /attributes and the routes in api_routes (null in phase 1)."
  value       = try(module.api[0].api_url, null)
}

output "async_endpoint_name" {
  description = "Name of the asynchronous endpoint (null unless async_inference.enabled): `loom async submit --endpoint`."
  value       = try(module.endpoint[0].async_endpoint_name, null)
}

output "api_routes" {
  description = "Every route of the HTTP API: the api module's and, with var.search, the search module's."
  value       = local.serving_enabled ? sort(concat(module.api[0].route_keys, try(module.search[0].route_keys, []))) : []
}

output "bedrock_guardrail_arn" {
  description = "ARN of the Bedrock guardrail applied to description calls; null without one or before serving."
  value       = try(module.api[0].guardrail_arn, null)
}
