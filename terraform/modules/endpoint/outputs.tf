output "endpoint_name" {
  description = "Name of the SageMaker endpoint."
  value       = local.endpoint.name
}

output "endpoint_arn" {
  description = "ARN of the SageMaker endpoint."
  value       = local.endpoint.arn
}

output "endpoint_arn_expected" {
  description = "The endpoint ARN as IAM policies name it, known at plan time."
  value       = local.endpoint_arn
}

output "model_name" {
  description = "Name of the SageMaker model (also usable for batch transform jobs)."
  value       = aws_sagemaker_model.this.name
}

output "endpoint_config_name" {
  description = "Name of Terraform's endpoint configuration (with rollouts_outside_terraform, the endpoint may serve a later one of `loom rollout`)."
  value       = aws_sagemaker_endpoint_configuration.this.name
}

output "rollback_alarm_names" {
  description = "CloudWatch alarms whose firing rolls a rollout back (`loom rollout --alarm` takes the same)."
  value       = local.rollback_alarm_names
}

output "rollouts_outside_terraform" {
  description = "Whether `loom rollout` (not Terraform) rolls the endpoint out."
  value       = var.rollouts_outside_terraform
}

output "role_arn" {
  description = "ARN of the model's execution role (endpoint and batch transform)."
  value       = aws_iam_role.model.arn
}

output "autoscaling_resource_id" {
  description = "Application Auto Scaling resource id of the production variant (null with autoscaling_enabled = false)."
  value       = try(aws_appautoscaling_target.this[0].resource_id, null)
}

output "artifact_prefix" {
  description = "S3 key prefix the execution role may read model artifacts from (models with rollouts_outside_terraform)."
  value       = local.model_read_prefix
}

output "log_group_name" {
  description = "KMS-encrypted log group of the endpoint's containers."
  value       = aws_cloudwatch_log_group.endpoint.name
}
