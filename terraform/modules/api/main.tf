# The public face: an HTTP API (POST /describe, POST /attributes) in front of one Lambda that
# asks the SageMaker endpoint for attributes and Bedrock for a description.
# The Lambda zip is built outside Terraform (`make lambda-zip`).

locals {
  function_name      = "${var.name_prefix}-api"
  routes             = toset(concat(["POST /describe", "POST /attributes"], local.restyle_routes))
  authorization_type = var.authorization

  # Concurrency the function can count on: its reservation, or else 10 (AWS keeps at least 10 of an
  # account's concurrency unreserved, and new accounts often have 10 in total).
  #   https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html
  function_concurrency = coalesce(var.lambda_reserved_concurrency, 10)
  # Throttling that never admits more requests than that concurrency, even if every request ran for
  # the whole Lambda timeout: burst + rate x timeout <= concurrency (API Gateway's token bucket holds
  # `burst` tokens and refills `rate` per second). Set throttling_* to override.
  derived_burst_limit    = max(1, floor(local.function_concurrency / 2))
  derived_rate_limit     = max(0.01, floor((local.function_concurrency - local.derived_burst_limit) * 100 / var.lambda_timeout_seconds) / 100)
  throttling_burst_limit = coalesce(var.throttling_burst_limit, local.derived_burst_limit)
  throttling_rate_limit  = coalesce(var.throttling_rate_limit, local.derived_rate_limit)

  # Lambda's application log levels are TRACE, DEBUG, INFO, WARN, ERROR, FATAL.
  application_log_level = { DEBUG = "DEBUG", INFO = "INFO", WARNING = "WARN", ERROR = "ERROR" }[var.log_level]
}

# ---------------------------------------------------------------------------------------------
# Lambda
# ---------------------------------------------------------------------------------------------
resource "aws_cloudwatch_log_group" "lambda" {
  name              = "/aws/lambda/${local.function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_iam_role" "lambda" {
  name        = "${local.function_name}-lambda"
  description = "Lambda ${local.function_name}: invoke one endpoint and one Bedrock model"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "lambda" {
  name = "invoke-endpoint-and-model"
  role = aws_iam_role.lambda.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "InvokeThisEndpoint"
        Effect   = "Allow"
        Action   = "sagemaker:InvokeEndpoint"
        Resource = var.endpoint_arn
      },
      ], local.bedrock_statements, local.marketplace_statements, [
      {
        Sid      = "WriteOwnLogs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "${aws_cloudwatch_log_group.lambda.arn}:*"
      },
      {
        # X-Ray trace upload has no resource-level permissions: AWS requires "*".
        Sid      = "XRayTracing"
        Effect   = "Allow"
        Action   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
        Resource = "*"
      },
    ])
  })

  lifecycle {
    precondition {
      condition     = local.bedrock_callable_here
      error_message = "bedrock_model_id ${var.bedrock_model_id} is a ${coalesce(local.bedrock_geo, "-")}. inference profile, which cannot be called from ${local.region}: use the profile of this Region's geography (e.g. eu.… in eu-*, apac.… in ap-* and me-central-1, jp.… only in ap-northeast-1/3, au.… only in ap-southeast-2/4) or a global.… profile (commercial Regions)."
    }
  }
}

resource "aws_lambda_function" "api" {
  #checkov:skip=CKV_AWS_116:API Gateway invokes the function synchronously and returns its error to the client; a DLQ only applies to asynchronous invocations.
  #checkov:skip=CKV_AWS_117:The function only calls AWS APIs (SageMaker runtime, Bedrock) over TLS with IAM auth; a VPC would add NAT or interface endpoints without reducing exposure.
  #checkov:skip=CKV_AWS_272:The zip is built by make lambda-zip in CI from reviewed source; AWS Signer code signing is a per-organisation choice left to the deployer.
  #checkov:skip=CKV_AWS_173:The environment holds no secrets (endpoint name, model id, log level); a CMK would only add kms:Decrypt to the role. Lambda encrypts it at rest with an AWS-managed key.
  function_name    = local.function_name
  description      = "Loom API: photo to attributes (SageMaker) and description (Bedrock)"
  role             = aws_iam_role.lambda.arn
  handler          = "inference.api.handler.handler"
  runtime          = var.lambda_runtime
  filename         = var.lambda_zip_path
  source_code_hash = fileexists(var.lambda_zip_path) ? filebase64sha256(var.lambda_zip_path) : null
  timeout          = var.lambda_timeout_seconds
  memory_size      = var.lambda_memory_mb
  # -1 (the provider's "no reservation") unless a reservation is asked for: AWS refuses a reservation
  # that leaves fewer than 10 unreserved executions, which on a new account (quota 10) is any.
  reserved_concurrent_executions = coalesce(var.lambda_reserved_concurrency, -1)

  tracing_config {
    mode = "Active"
  }

  # JSON logs whose level Lambda filters (Powertools' Logger writes JSON too).
  #   https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-advanced.html
  logging_config {
    log_format            = "JSON"
    application_log_level = local.application_log_level
    system_log_level      = "WARN"
  }

  environment {
    # extra_environment (e.g. the search module's SEARCH_ENDPOINT_NAME) cannot override these; the RESTYLE_*
    # variables exist only with enable_restyle (restyle.tf), the BEDROCK_GUARDRAIL_* ones only with a guardrail
    # (guardrail.tf).
    variables = merge(var.extra_environment, local.restyle_environment, local.guardrail_environment, {
      ENDPOINT_NAME           = var.endpoint_name
      BEDROCK_MODEL_ID        = var.bedrock_model_id
      DESCRIPTION_BACKEND     = "bedrock"
      POWERTOOLS_SERVICE_NAME = "loom-api"
      LOG_LEVEL               = var.log_level
    })
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = fileexists(var.lambda_zip_path)
      error_message = "Lambda package ${var.lambda_zip_path} does not exist: run `make lambda-zip` first."
    }
  }

  depends_on = [aws_iam_role_policy.lambda, aws_iam_role_policy.guardrail, aws_cloudwatch_log_group.lambda]
}

# ---------------------------------------------------------------------------------------------
# HTTP API
# ---------------------------------------------------------------------------------------------
resource "aws_apigatewayv2_api" "this" {
  name          = "${var.name_prefix}-api"
  protocol_type = "HTTP"
  description   = "Loom: POST /describe and POST /attributes"
  # With a custom domain in front, turn the default https://<id>.execute-api... URL off so that
  # clients cannot bypass the domain's settings.
  disable_execute_api_endpoint = var.disable_execute_api_endpoint
  tags                         = var.tags
}

resource "aws_apigatewayv2_authorizer" "jwt" {
  count            = local.authorization_type == "JWT" ? 1 : 0
  api_id           = aws_apigatewayv2_api.this.id
  name             = "${var.name_prefix}-jwt"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    issuer   = var.jwt_issuer
    audience = var.jwt_audience
  }
}

resource "aws_apigatewayv2_integration" "lambda" {
  api_id                 = aws_apigatewayv2_api.this.id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_function.api.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "this" {
  for_each = local.routes

  api_id             = aws_apigatewayv2_api.this.id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.lambda.id}"
  authorization_type = local.authorization_type
  authorizer_id      = local.authorization_type == "JWT" ? aws_apigatewayv2_authorizer.jwt[0].id : null
}

resource "aws_cloudwatch_log_group" "access" {
  name              = "/aws/apigateway/${var.name_prefix}-api"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.this.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = local.throttling_burst_limit
    throttling_rate_limit  = local.throttling_rate_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.access.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      sourceIp           = "$context.identity.sourceIp"
      requestTime        = "$context.requestTime"
      routeKey           = "$context.routeKey"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      responseLatency    = "$context.responseLatency"
      integrationStatus  = "$context.integrationStatus"
      integrationLatency = "$context.integrationLatency"
      integrationError   = "$context.integrationErrorMessage"
      principal          = "$context.identity.userArn"
    })
  }

  tags = var.tags
}

resource "aws_lambda_permission" "api" {
  for_each = local.routes

  statement_id  = "AllowHttpApi-${replace(each.key, "/[^A-Za-z0-9]+/", "-")}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.api.function_name
  principal     = "apigateway.amazonaws.com"
  # execution_arn/<stage>/<METHOD>/<path>: only these routes may invoke the function.
  source_arn = "${aws_apigatewayv2_api.this.execution_arn}/*/${replace(each.key, " /", "/")}"
}

# Explicit throttling that can admit more requests than the function can run turns the excess into
# Lambda throttles (5xx for the caller) instead of API 429s: say so at plan time.
check "throttling_within_concurrency" {
  assert {
    condition     = local.throttling_burst_limit + local.throttling_rate_limit * var.lambda_timeout_seconds <= local.function_concurrency
    error_message = "API throttling (burst ${local.throttling_burst_limit}, rate ${local.throttling_rate_limit}/s) can admit more concurrent requests than the Lambda's ${local.function_concurrency} executions when requests run up to ${var.lambda_timeout_seconds} s."
  }
}
