output "api_url" {
  description = "Base URL of the HTTP API ($default stage); POST <url>/describe or <url>/attributes."
  value       = aws_apigatewayv2_stage.default.invoke_url
}

output "api_id" {
  description = "Id of the HTTP API."
  value       = aws_apigatewayv2_api.this.id
}

output "function_name" {
  description = "Name of the API Lambda."
  value       = aws_lambda_function.api.function_name
}

output "function_arn" {
  description = "ARN of the API Lambda."
  value       = aws_lambda_function.api.arn
}

output "role_arn" {
  description = "ARN of the Lambda's execution role."
  value       = aws_iam_role.lambda.arn
}

output "bedrock_model_arn" {
  description = "Foundation-model ARN the Lambda may invoke."
  value       = local.bedrock_model_arn
}

output "access_log_group_name" {
  description = "Log group holding the API access logs."
  value       = aws_cloudwatch_log_group.access.name
}
