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

output "bedrock_invoke_arns" {
  description = "Bedrock resources the Lambda may invoke: the inference profile (if any) and the foundation model ARNs."
  value       = compact(concat([local.bedrock_profile_arn], local.bedrock_model_arns))
}

output "throttling" {
  description = "Burst and rate limits of the API stage (derived from the Lambda's concurrency unless set)."
  value       = { burst_limit = local.throttling_burst_limit, rate_limit = local.throttling_rate_limit }
}

output "access_log_group_name" {
  description = "Log group holding the API access logs."
  value       = aws_cloudwatch_log_group.access.name
}

output "lambda_environment" {
  description = "The API Lambda's environment variables (no secrets: names, ids and levels)."
  value       = aws_lambda_function.api.environment[0].variables
}

output "route_keys" {
  description = "The routes this module puts on the HTTP API (POST /restyle only with enable_restyle)."
  value       = sort(tolist(local.routes))
}

output "authorizer_id" {
  description = "Id of the JWT authorizer (null unless authorization = JWT): routes other modules add to this API use it."
  value       = try(aws_apigatewayv2_authorizer.jwt[0].id, null)
}

output "guardrail_arn" {
  description = "ARN of the Bedrock guardrail applied to description calls (created here or given); null without one."
  value       = local.guardrail_arn
}
