# Phase 2 (endpoint and API) and its modules: wiring and security defaults.
# Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

mock_provider "aws" {
  source = "./tests/mocks"
  # Mocked computed values (ARNs, URLs) are known at plan time, so every run can be a plan.
  override_during = plan
}

variables {
  region          = "us-east-1"
  kms_key_arn     = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  lambda_zip_path = "tests/fixtures/lambda.zip"
}

run "root_phase_two_wires_endpoint_into_api" {
  command = plan

  variables {
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
  }

  assert {
    condition     = output.serving_enabled && output.endpoint_name == "loom-endpoint" && output.lambda_function_name == "loom-api"
    error_message = "Phase 2 must create the endpoint loom-endpoint and the Lambda loom-api."
  }

  assert {
    condition     = output.api_url == "https://abc123.execute-api.us-east-1.amazonaws.com/"
    error_message = "api_url must be the invoke URL of the $default stage."
  }

  assert {
    condition     = endswith(output.inference_image_uri, ":0123abc")
    error_message = "The endpoint must run the inference image at the given tag."
  }
}

# ---------------------------------------------------------------------------------------------
# endpoint module
# ---------------------------------------------------------------------------------------------
run "endpoint_defaults" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    endpoint_name  = "loom-endpoint"
    bucket_name    = "loom-data-123456789012-us-east-1"
    repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
    image_uri      = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
    model_data_url = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
  }

  assert {
    condition     = aws_sagemaker_model.this.enable_network_isolation
    error_message = "The model must run with network isolation."
  }

  assert {
    condition     = aws_sagemaker_model.this.primary_container[0].environment == tomap({ MAX_BODY_MB = "20", MODEL_LOAD_TIMEOUT = "1380", MAX_PENDING_REQUESTS = "100", MAX_BATCH_PRODUCTS = "16", BATCH_WAIT_MS = "0" }) && aws_sagemaker_model.this.primary_container[0].model_data_url == var.model_data_url && aws_sagemaker_model.this.primary_container[0].image == var.image_uri
    error_message = "The model must run the given image and artifact with MAX_BODY_MB=20, the server's load timeout below the startup window and the batching defaults."
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.production_variants[0].instance_type == "ml.g5.2xlarge" && aws_sagemaker_endpoint_configuration.this.production_variants[0].model_name == aws_sagemaker_model.this.name
    error_message = "The endpoint configuration must serve the model on ml.g5.2xlarge by default."
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.kms_key_arn == null && length(aws_sagemaker_endpoint_configuration.this.data_capture_config) == 0
    error_message = "ml.g5 has hardware-encrypted NVMe storage (KmsKeyId is rejected); data capture is off by default."
  }

  assert {
    condition     = length(aws_sagemaker_endpoint.this) == 1 && aws_sagemaker_endpoint.this[0].endpoint_config_name == aws_sagemaker_endpoint_configuration.this.name && length(aws_sagemaker_endpoint.rollouts_outside_terraform) == 0
    error_message = "By default Terraform rolls the endpoint out: the endpoint must use the endpoint configuration."
  }

  assert {
    condition     = aws_appautoscaling_target.this[0].resource_id == "endpoint/loom-endpoint/variant/AllTraffic" && aws_appautoscaling_target.this[0].min_capacity == 1 && aws_appautoscaling_target.this[0].max_capacity == 2
    error_message = "Autoscaling must target the AllTraffic variant of loom-endpoint with capacity 1..2."
  }

  assert {
    condition     = aws_appautoscaling_policy.invocations[0].target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "SageMakerVariantInvocationsPerInstance"
    error_message = "Autoscaling must track SageMakerVariantInvocationsPerInstance."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.invocation_5xx.metric_name == "Invocation5XXErrors" && aws_cloudwatch_metric_alarm.model_latency.metric_name == "ModelLatency" && aws_cloudwatch_metric_alarm.model_latency.threshold == 5000000
    error_message = "Alarms must watch Invocation5XXErrors and ModelLatency (microseconds)."
  }

  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Resource if contains(flatten([s.Action]), "s3:GetObject")
      ])) == toset([
      "arn:aws:s3:::loom-data-123456789012-us-east-1/models/job-1/output/*",
      "arn:aws:s3:::loom-data-123456789012-us-east-1/batch/input/*",
    ])
    error_message = "The model role may read only its artifact prefix and batch input."
  }

  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Resource if contains(flatten([s.Action]), "s3:PutObject")
    ])) == toset(["arn:aws:s3:::loom-data-123456789012-us-east-1/batch/output/*"])
    error_message = "Without data capture the model role may write only batch output."
  }

  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Resource if s.Sid == "PullInferenceImage"
    ]) == var.repository_arn
    error_message = "The model role may pull only the inference image."
  }

  assert {
    condition     = output.endpoint_arn_expected == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
    error_message = "The endpoint ARN for IAM must name exactly this endpoint."
  }
}

run "endpoint_kms_and_data_capture" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    endpoint_name  = "loom-endpoint"
    bucket_name    = "loom-data-123456789012-us-east-1"
    repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
    image_uri      = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
    model_data_url = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    instance_type  = "ml.m5.xlarge"
    environment    = { MAX_BODY_MB = "8", LOG_LEVEL = "DEBUG" }
    data_capture   = { enabled = true, sampling_percentage = 25 }
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.kms_key_arn == var.kms_key_arn
    error_message = "Instance types without local storage must encrypt the endpoint volume with the KMS key."
  }

  assert {
    condition = (
      aws_sagemaker_endpoint_configuration.this.data_capture_config[0].destination_s3_uri == "s3://loom-data-123456789012-us-east-1/capture/loom-endpoint" &&
      aws_sagemaker_endpoint_configuration.this.data_capture_config[0].kms_key_id == var.kms_key_arn &&
      aws_sagemaker_endpoint_configuration.this.data_capture_config[0].initial_sampling_percentage == 25
    )
    error_message = "Data capture must write KMS-encrypted to capture/<endpoint>."
  }

  assert {
    condition     = contains(flatten([for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Resource]), "arn:aws:s3:::loom-data-123456789012-us-east-1/capture/loom-endpoint/*")
    error_message = "With data capture the model role may write capture/<endpoint>/."
  }

  assert {
    condition     = aws_sagemaker_model.this.primary_container[0].environment == tomap({ MAX_BODY_MB = "8", LOG_LEVEL = "DEBUG", MODEL_LOAD_TIMEOUT = "1380", MAX_PENDING_REQUESTS = "100", MAX_BATCH_PRODUCTS = "16", BATCH_WAIT_MS = "0" })
    error_message = "The environment variable must merge over the MAX_BODY_MB default."
  }
}

run "endpoint_rejects_artifact_outside_models_prefix" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    endpoint_name  = "loom-endpoint"
    bucket_name    = "loom-data-123456789012-us-east-1"
    repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
    image_uri      = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
    model_data_url = "s3://someone-elses-bucket/models/model.tar.gz"
  }

  expect_failures = [aws_sagemaker_model.this]
}

# ---------------------------------------------------------------------------------------------
# api module
# ---------------------------------------------------------------------------------------------
run "api_defaults" {
  command = plan

  module {
    source = "./modules/api"
  }

  variables {
    name_prefix   = "loom"
    endpoint_name = "loom-endpoint"
    endpoint_arn  = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
  }

  assert {
    condition = (
      aws_lambda_function.api.handler == "inference.api.handler.handler" &&
      aws_lambda_function.api.runtime == "python3.12" &&
      aws_lambda_function.api.timeout == 28 &&
      aws_lambda_function.api.memory_size == 512 &&
      aws_lambda_function.api.reserved_concurrent_executions == -1 &&
      aws_lambda_function.api.tracing_config[0].mode == "Active"
    )
    error_message = "Lambda: handler, python3.12, 28 s timeout, memory, no reserved concurrency (-1) and active tracing."
  }

  assert {
    condition = aws_lambda_function.api.environment[0].variables == tomap({
      ENDPOINT_NAME           = "loom-endpoint"
      BEDROCK_MODEL_ID        = "us.anthropic.claude-sonnet-5-5"
      DESCRIPTION_BACKEND     = "bedrock"
      POWERTOOLS_SERVICE_NAME = "loom-api"
      LOG_LEVEL               = "INFO"
    })
    error_message = "The Lambda environment must name the endpoint and the Bedrock model."
  }

  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : flatten([s.Action])
    ])) == toset(["sagemaker:InvokeEndpoint", "bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream", "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"])
    error_message = "The Lambda role may only invoke the endpoint and the model, write its logs and traces."
  }

  assert {
    condition = (
      one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThisEndpoint"]) == var.endpoint_arn &&
      one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-5-5" &&
      one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "WriteOwnLogs"]) == "${aws_cloudwatch_log_group.lambda.arn}:*"
    )
    error_message = "The Lambda role must name exactly this endpoint, this inference profile and its own log group."
  }

  assert {
    condition     = toset([for r in aws_apigatewayv2_route.this : r.route_key]) == toset(["POST /describe", "POST /attributes"]) && alltrue([for r in aws_apigatewayv2_route.this : r.authorization_type == "AWS_IAM" && r.target == "integrations/${aws_apigatewayv2_integration.lambda.id}"])
    error_message = "Both routes must exist, use IAM authorization and target the Lambda integration."
  }

  assert {
    condition     = length(aws_apigatewayv2_authorizer.jwt) == 0
    error_message = "No JWT authorizer under AWS_IAM."
  }

  assert {
    condition = (
      aws_apigatewayv2_integration.lambda.integration_type == "AWS_PROXY" &&
      aws_apigatewayv2_integration.lambda.payload_format_version == "2.0" &&
      aws_apigatewayv2_integration.lambda.timeout_milliseconds == 30000 &&
      aws_apigatewayv2_integration.lambda.integration_uri == aws_lambda_function.api.invoke_arn
    )
    error_message = "The integration must proxy to the Lambda with payload 2.0 and a 30 s timeout."
  }

  assert {
    condition = (
      aws_apigatewayv2_stage.default.default_route_settings[0].throttling_burst_limit == 5 &&
      aws_apigatewayv2_stage.default.default_route_settings[0].throttling_rate_limit == 0.17 &&
      aws_apigatewayv2_stage.default.access_log_settings[0].destination_arn == aws_cloudwatch_log_group.access.arn
    )
    error_message = "The stage must throttle within the 10 executions the function can count on (burst 5 + 0.17/s x 28 s <= 10) and write access logs."
  }

  assert {
    condition     = alltrue([for g in [aws_cloudwatch_log_group.access, aws_cloudwatch_log_group.lambda] : g.retention_in_days == 365 && g.kms_key_id == var.kms_key_arn])
    error_message = "Log groups need retention and KMS encryption."
  }

  assert {
    condition = toset([for p in aws_lambda_permission.api : p.source_arn]) == toset([
      "arn:aws:execute-api:us-east-1:123456789012:abc123/*/POST/describe",
      "arn:aws:execute-api:us-east-1:123456789012:abc123/*/POST/attributes",
    ])
    error_message = "API Gateway may invoke the Lambda only through the two routes."
  }
}

run "api_jwt_authorization" {
  command = plan

  module {
    source = "./modules/api"
  }

  variables {
    name_prefix   = "loom"
    endpoint_name = "loom-endpoint"
    endpoint_arn  = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
    authorization = "JWT"
    jwt_issuer    = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example"
    jwt_audience  = ["loom-web"]
  }

  assert {
    condition     = length(aws_apigatewayv2_authorizer.jwt) == 1 && alltrue([for r in aws_apigatewayv2_route.this : r.authorization_type == "JWT" && r.authorizer_id == aws_apigatewayv2_authorizer.jwt[0].id])
    error_message = "JWT authorization must create an authorizer and attach it to both routes."
  }
}

run "api_public_only_when_asked" {
  command = plan

  module {
    source = "./modules/api"
  }

  variables {
    name_prefix   = "loom"
    endpoint_name = "loom-endpoint"
    endpoint_arn  = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
    authorization = "NONE"
  }

  assert {
    condition     = alltrue([for r in aws_apigatewayv2_route.this : r.authorization_type == "NONE"])
    error_message = "authorization = NONE must be honoured when asked for explicitly."
  }
}

run "api_requires_the_lambda_zip" {
  command = plan

  module {
    source = "./modules/api"
  }

  variables {
    name_prefix     = "loom"
    endpoint_name   = "loom-endpoint"
    endpoint_arn    = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
    lambda_zip_path = "tests/fixtures/missing.zip"
  }

  expect_failures = [aws_lambda_function.api]
}
