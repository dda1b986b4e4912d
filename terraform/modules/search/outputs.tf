output "endpoint_name" {
  description = "Name of the CLIP endpoint (the API Lambda's SEARCH_ENDPOINT_NAME)."
  value       = aws_sagemaker_endpoint.clip.name
}

output "endpoint_arn" {
  description = "ARN of the CLIP endpoint."
  value       = local.endpoint_arn
}

output "model_name" {
  description = "SageMaker model of the CLIP artifact (Batch Transform embeds catalogs with it)."
  value       = aws_sagemaker_model.clip.name
}

output "model_role_arn" {
  description = "Execution role of the CLIP model."
  value       = aws_iam_role.model.arn
}

output "opensearch_endpoint" {
  description = "https:// endpoint of the domain or collection (null with the embedded backend)."
  value = (local.domain ? "https://${aws_opensearch_domain.search[0].endpoint}"
  : local.collection ? aws_opensearchserverless_collection.search[0].collection_endpoint : null)
}

output "lambda_environment" {
  description = "Environment variables the API Lambda needs for POST /search (merge them into its environment)."
  value = merge(
    {
      SEARCH_ENDPOINT_NAME = aws_sagemaker_endpoint.clip.name
      SEARCH_BACKEND       = var.search_backend
      # Largest request body (bytes) the CLIP endpoint accepts: 4000000 on Serverless Inference ("4 MB",
      # serverless-endpoints.html), 6291456 on a real-time endpoint (InvokeEndpoint's 6 MB; botocore's
      # sagemaker-runtime service model: BodyBlob max 6291456). The Lambda refuses more with a 413.
      SEARCH_MAX_REQUEST_BYTES = tostring(local.max_request_bytes)
    },
    var.search_backend == "embedded" ? {} : {
      OPENSEARCH_ENDPOINT = (local.domain ? "https://${aws_opensearch_domain.search[0].endpoint}"
      : aws_opensearchserverless_collection.search[0].collection_endpoint)
      OPENSEARCH_INDEX = var.opensearch_index
    },
  )
}

output "endpoint_type" {
  description = "serverless or realtime: which limits apply to the CLIP endpoint (docs/search.md)."
  value       = var.endpoint_type
}

output "log_group_name" {
  description = "KMS-encrypted log group of the CLIP endpoint's containers."
  value       = aws_cloudwatch_log_group.clip.name
}

output "route_key" {
  description = "The route this module adds to the HTTP API."
  value       = aws_apigatewayv2_route.clip["POST /search"].route_key
}

output "route_keys" {
  description = "Every route this module adds to the HTTP API."
  value       = sort([for r in aws_apigatewayv2_route.clip : r.route_key])
}

output "route_authorization" {
  description = "Route => authorization type and authorizer id of every route this module adds (the API's JWT authorizer with authorization JWT)."
  value       = { for k, r in aws_apigatewayv2_route.clip : k => { type = r.authorization_type, authorizer_id = r.authorizer_id } }
}
