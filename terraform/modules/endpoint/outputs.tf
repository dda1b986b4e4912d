output "endpoint_name" {
  description = "Name of the SageMaker endpoint."
  value       = aws_sagemaker_endpoint.this.name
}

output "endpoint_arn" {
  description = "ARN of the SageMaker endpoint."
  value       = aws_sagemaker_endpoint.this.arn
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
  description = "Name of the current endpoint configuration."
  value       = aws_sagemaker_endpoint_configuration.this.name
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
  description = "S3 key prefix the execution role may read the model artifact from."
  value       = local.artifact_prefix
}

output "log_group_name" {
  description = "KMS-encrypted log group of the endpoint's containers."
  value       = aws_cloudwatch_log_group.endpoint.name
}
