# What a fresh AWS account refuses although moto accepts it (issue 13), API side: Bedrock model
# and IAM, Lambda concurrency and throttling, alarms and logs. Each run names its rule's source. Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  region          = "us-east-1"
  kms_key_arn     = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  lambda_zip_path = "tests/fixtures/lambda.zip"
  name_prefix     = "loom"
  endpoint_name   = "loom-endpoint"
  endpoint_arn    = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
  bucket_name     = "loom-data-123456789012-us-east-1"
  repository_arn  = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
  image_uri       = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
  model_data_url  = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
}

# ---------------------------------------------------------------------------------------------
# 1. Bedrock: an active Claude model through a cross-Region inference profile. IAM needs the
# profile ARN and the foundation model in every destination Region; the condition keeps the
# model reachable only through the profile.
# https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-prereq.html
# ---------------------------------------------------------------------------------------------
run "bedrock_default_is_a_claude_inference_profile" {
  command = plan
  module {
    source = "./modules/api"
  }

  assert {
    condition     = aws_lambda_function.api.environment[0].variables.BEDROCK_MODEL_ID == "us.anthropic.claude-sonnet-5-5"
    error_message = "The default model must be an active Claude model through the us. inference profile (Claude 3 Sonnet is end-of-life)."
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s if s.Sid == "InvokeThroughInferenceProfile"]) == {
      Sid      = "InvokeThroughInferenceProfile"
      Effect   = "Allow"
      Action   = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
      Resource = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-5-5"
    }
    error_message = "The role must invoke (InvokeModel and streaming; Converse is authorised by them) the inference profile ARN."
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s if s.Sid == "InvokeFoundationModelOnlyThroughProfile"]) == {
      Sid       = "InvokeFoundationModelOnlyThroughProfile"
      Effect    = "Allow"
      Action    = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
      Resource  = ["arn:aws:bedrock:*::foundation-model/anthropic.claude-sonnet-5-5"]
      Condition = { StringEquals = { "bedrock:InferenceProfileArn" = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-5-5" } }
    }
    error_message = "The role must invoke the foundation model in every destination Region, only through the profile."
  }

  assert {
    condition     = length([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s if can(regex("^aws-marketplace:", s.Action))]) == 0
    error_message = "No Marketplace permission by default: an admin's first invocation subscribes the account."
  }
}

run "bedrock_destination_regions_are_listed_when_given" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    bedrock_destination_regions = ["us-east-1", "us-east-2", "us-west-2"]
  }

  assert {
    condition = toset(one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeFoundationModelOnlyThroughProfile"])) == toset([
      "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-5-5",
      "arn:aws:bedrock:us-east-2::foundation-model/anthropic.claude-sonnet-5-5",
      "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-sonnet-5-5",
    ])
    error_message = "Given destination Regions, the foundation model must be allowed in exactly those."
  }
}

run "bedrock_global_profile_also_allows_the_regionless_model_arn" {
  command = plan
  module {
    source = "./modules/api"
  }
  # The module reads its Region from the provider (aws_region).
  override_data {
    target = data.aws_region.current
    values = { name = "eu-west-1" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "global.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition = toset(one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeFoundationModelOnlyThroughProfile"])) == toset([
      "arn:aws:bedrock:*::foundation-model/anthropic.claude-sonnet-4-6",
      "arn:aws:bedrock:::foundation-model/anthropic.claude-sonnet-4-6",
    ])
    error_message = "A global profile routes to any commercial Region and needs the Region-less foundation-model ARN too."
  }
}

run "bedrock_profile_arn_is_accepted" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    bedrock_model_id = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == var.bedrock_model_id
    error_message = "A profile ARN must be granted as given."
  }
}

run "bedrock_bare_model_id_gets_model_permissions_only" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    bedrock_model_id = "amazon.nova-lite-v1:0"
  }

  assert {
    condition = [for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if startswith(s.Sid, "Invoke") && s.Sid != "InvokeThisEndpoint"] == [
      ["arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0"]
    ]
    error_message = "A bare model id gets exactly its foundation-model ARN in this Region, no profile statement."
  }
}

run "bedrock_geographic_profile_must_match_the_region" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    bedrock_model_id = "eu.anthropic.claude-sonnet-4-6"
  }
  expect_failures = [aws_iam_role_policy.lambda]
}

run "bedrock_model_id_rejects_a_foundation_model_arn" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    bedrock_model_id = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6"
  }
  expect_failures = [var.bedrock_model_id]
}

run "bedrock_marketplace_subscription_is_opt_in_and_scoped" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    bedrock_marketplace_product_ids = ["prod-abc123"]
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Condition if s.Sid == "SubscribeToTheDescriptionModelOnly"]) == {
      "ForAnyValue:StringEquals" = { "aws-marketplace:ProductId" = ["prod-abc123"] }
    }
    error_message = "aws-marketplace:Subscribe must be limited to the given product ids."
  }
}

# ---------------------------------------------------------------------------------------------
# 3. Reserved concurrency is opt-in: AWS keeps 10 executions unreserved, so a new account (quota
# 10) refuses any reservation. https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html
# API throttling is derived so that burst + rate x timeout <= the concurrency.
# ---------------------------------------------------------------------------------------------
run "reservation_scales_the_derived_throttling" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    lambda_reserved_concurrency = 50
  }

  assert {
    condition     = aws_lambda_function.api.reserved_concurrent_executions == 50
    error_message = "An explicit reservation must be applied."
  }

  assert {
    condition = (
      aws_apigatewayv2_stage.default.default_route_settings[0].throttling_burst_limit == 25 &&
      aws_apigatewayv2_stage.default.default_route_settings[0].throttling_rate_limit == 0.89 &&
      25 + 0.89 * 28 <= 50
    )
    error_message = "With 50 executions: burst 25 and rate 0.89/s (25 + 0.89 x 28 s <= 50)."
  }
}

run "explicit_throttling_wins" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    lambda_reserved_concurrency = 100
    throttling_burst_limit      = 40
    throttling_rate_limit       = 2
  }

  assert {
    condition     = output.throttling == { burst_limit = 40, rate_limit = 2 }
    error_message = "Explicit throttling values must be used as given."
  }
}

run "throttling_above_the_concurrency_is_reported" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    throttling_burst_limit = 20
    throttling_rate_limit  = 10
  }
  expect_failures = [check.throttling_within_concurrency]
}

run "reserved_concurrency_zero_is_refused" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    lambda_reserved_concurrency = 0
  }
  expect_failures = [var.lambda_reserved_concurrency]
}

# ---------------------------------------------------------------------------------------------
# Hardening on the API: alarms, JSON logs with level control, optional execute-api endpoint.
# ---------------------------------------------------------------------------------------------
run "api_alarms_logging_and_endpoint_switch" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    log_level                    = "WARNING"
    disable_execute_api_endpoint = true
    alarm_actions                = ["arn:aws:sns:us-east-1:123456789012:loom-alerts"]
  }

  assert {
    condition = (
      aws_lambda_function.api.logging_config[0].log_format == "JSON" &&
      aws_lambda_function.api.logging_config[0].application_log_level == "WARN" &&
      aws_lambda_function.api.logging_config[0].system_log_level == "WARN"
    )
    error_message = "The Lambda must log JSON with the level from log_level (WARNING -> WARN)."
  }

  assert {
    condition     = aws_apigatewayv2_api.this.disable_execute_api_endpoint
    error_message = "disable_execute_api_endpoint must turn the default endpoint off."
  }

  assert {
    condition = (
      toset([for a in aws_cloudwatch_metric_alarm.this : "${a.namespace} ${a.metric_name}"]) == toset(["AWS/Lambda Errors", "AWS/Lambda Throttles", "AWS/Lambda Duration", "AWS/ApiGateway 5xx", "AWS/ApiGateway Latency"]) &&
      aws_cloudwatch_metric_alarm.this["loom-api-lambda-duration"].threshold == 22400 &&
      aws_cloudwatch_metric_alarm.this["loom-api-lambda-duration"].extended_statistic == "p99" &&
      alltrue([for a in aws_cloudwatch_metric_alarm.this : a.alarm_actions == toset(var.alarm_actions)])
    )
    error_message = "Alarms: Lambda errors, throttles, p99 duration at 80 % of the 28 s timeout; API 5xx and latency; all notify alarm_actions."
  }

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.this["loom-api-lambda-errors"].dimensions == tomap({ FunctionName = "loom-api" }) &&
      aws_cloudwatch_metric_alarm.this["loom-api-5xx"].dimensions == tomap({ ApiId = "abc123", Stage = "$default" }) &&
      aws_cloudwatch_metric_alarm.this["loom-api-latency-p90"].extended_statistic == "p90"
    )
    error_message = "Lambda alarms watch this function, API alarms this API's $default stage."
  }
}

