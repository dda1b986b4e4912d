# What a fresh AWS account refuses although moto accepts it (issue 13). Each run names its rule's
# source. Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  account_id      = "123456789012"
  partition       = "aws"
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
    condition     = aws_lambda_function.api.environment[0].variables.BEDROCK_MODEL_ID == "us.anthropic.claude-sonnet-4-6"
    error_message = "The default model must be an active Claude model through the us. inference profile (Claude 3 Sonnet is end-of-life)."
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s if s.Sid == "InvokeThroughInferenceProfile"]) == {
      Sid      = "InvokeThroughInferenceProfile"
      Effect   = "Allow"
      Action   = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
      Resource = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6"
    }
    error_message = "The role must invoke (InvokeModel and streaming; Converse is authorised by them) the inference profile ARN."
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s if s.Sid == "InvokeFoundationModelOnlyThroughProfile"]) == {
      Sid       = "InvokeFoundationModelOnlyThroughProfile"
      Effect    = "Allow"
      Action    = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
      Resource  = ["arn:aws:bedrock:*::foundation-model/anthropic.claude-sonnet-4-6"]
      Condition = { StringEquals = { "bedrock:InferenceProfileArn" = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6" } }
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
      "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6",
      "arn:aws:bedrock:us-east-2::foundation-model/anthropic.claude-sonnet-4-6",
      "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-sonnet-4-6",
    ])
    error_message = "Given destination Regions, the foundation model must be allowed in exactly those."
  }
}

run "bedrock_global_profile_also_allows_the_regionless_model_arn" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    region           = "eu-west-1"
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

# ---------------------------------------------------------------------------------------------
# 2. Start-up window: download and health-check timeouts for an ~8 GB model, the server's load
# timeout below the platform's, and uncompressed model data.
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html
# ---------------------------------------------------------------------------------------------
run "endpoint_startup_window" {
  command = plan
  module {
    source = "./modules/endpoint"
  }

  assert {
    condition = (
      aws_sagemaker_endpoint_configuration.this.production_variants[0].model_data_download_timeout_in_seconds >= 1200 &&
      aws_sagemaker_endpoint_configuration.this.production_variants[0].container_startup_health_check_timeout_in_seconds >= 1200
    )
    error_message = "Both SageMaker start-up timeouts must be set to at least 1200 s."
  }

  assert {
    condition     = tonumber(aws_sagemaker_model.this.primary_container[0].environment.MODEL_LOAD_TIMEOUT) < aws_sagemaker_endpoint_configuration.this.production_variants[0].container_startup_health_check_timeout_in_seconds
    error_message = "The server's MODEL_LOAD_TIMEOUT must be below the platform's start-up health check window."
  }
}

run "endpoint_uncompressed_model_data" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    model_data_url         = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model/"
    model_data_compression = "None"
  }

  assert {
    condition = (
      aws_sagemaker_model.this.primary_container[0].model_data_url == null &&
      aws_sagemaker_model.this.primary_container[0].model_data_source[0].s3_data_source[0].compression_type == "None" &&
      aws_sagemaker_model.this.primary_container[0].model_data_source[0].s3_data_source[0].s3_data_type == "S3Prefix" &&
      aws_sagemaker_model.this.primary_container[0].model_data_source[0].s3_data_source[0].s3_uri == var.model_data_url
    )
    error_message = "Uncompressed model data must go through model_data_source (S3Prefix, compression None)."
  }

  assert {
    condition = (
      contains(flatten([for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Resource if contains(flatten([s.Action]), "s3:GetObject")]), "arn:aws:s3:::loom-data-123456789012-us-east-1/models/job-1/output/model/*") &&
      contains(flatten([for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Condition.StringLike["s3:prefix"] if s.Action == "s3:ListBucket"]), "models/job-1/output/model/*")
    )
    error_message = "The role must read and list the model folder."
  }
}

run "endpoint_load_timeout_must_stay_below_the_window" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    environment = { MODEL_LOAD_TIMEOUT = "1600" }
  }
  expect_failures = [aws_sagemaker_model.this]
}

run "root_folder_needs_uncompressed_mode" {
  command = plan
  variables {
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model/"
    inference_image_tag = "abc"
  }
  expect_failures = [var.model_data_url]
}

# ---------------------------------------------------------------------------------------------
# 4. Instance types with NVMe instance storage refuse KmsKeyId (API_CreateEndpointConfig.html);
# the *d/*gd/*id families and hyphenated families (ml.p6-b200) included.
# ---------------------------------------------------------------------------------------------
# The provider (5.100) checks instance types against its own list, which has no ml.m6id or
# hyphenated family yet; tests/test_sagemaker_jobs.py runs this module's regex on those.
run "endpoint_kms_refused_on_m6gd" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    instance_type = "ml.m6gd.xlarge"
  }
  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.kms_key_arn == null
    error_message = "ml.m6gd has NVMe instance storage (the gd family): no KmsKeyId."
  }
}

run "endpoint_kms_refused_on_g6e" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    instance_type = "ml.g6e.2xlarge"
  }
  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.kms_key_arn == null
    error_message = "ml.g6e has NVMe instance storage: no KmsKeyId."
  }
}

run "endpoint_kms_set_on_ebs_only_c7g" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    instance_type = "ml.c7g.xlarge"
  }
  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.kms_key_arn == var.kms_key_arn
    error_message = "EBS-only instance types must encrypt the volume with the KMS key."
  }
}

# ---------------------------------------------------------------------------------------------
# 6. Rollouts: blue/green with alarm-based auto-rollback; a capacity change creates no new
# configuration; an instance type change goes through autoscaling_enabled = false.
# https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html
# https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html
# ---------------------------------------------------------------------------------------------
run "endpoint_rollout_is_blue_green_with_rollback" {
  command = plan
  module {
    source = "./modules/endpoint"
  }

  assert {
    condition = (
      aws_sagemaker_endpoint.this.deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].type == "ALL_AT_ONCE" &&
      aws_sagemaker_endpoint.this.deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].wait_interval_in_seconds == 600 &&
      toset([for a in aws_sagemaker_endpoint.this.deployment_config[0].auto_rollback_configuration[0].alarms : a.alarm_name]) == toset(["loom-endpoint-invocation-5xx", "loom-endpoint-model-latency-p90"])
    )
    error_message = "Rollouts must be blue/green with a baking period and roll back on the 5xx and latency alarms."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.invocation_5xx.dimensions.EndpointName == "loom-endpoint"
    error_message = "The alarms watch the endpoint by name."
  }
}

run "rollout_timeout_must_cover_the_waits" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    rollout_bake_seconds    = 3600
    rollout_timeout_seconds = 3600
  }
  expect_failures = [aws_sagemaker_endpoint.this]
}

run "capacity_change_keeps_the_configuration" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    min_capacity = 3
    max_capacity = 4
  }
  assert {
    condition     = output.endpoint_config_name == run.endpoint_rollout_is_blue_green_with_rollback.endpoint_config_name
    error_message = "min_capacity must not be part of the configuration's name (no needless rollout)."
  }
}

run "rollout_instance_count_sets_the_new_fleet_size" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    rollout_instance_count = 3
  }
  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.production_variants[0].initial_instance_count == 3
    error_message = "A rollout starts with rollout_instance_count instances."
  }
}

run "instance_type_change_path_without_autoscaling" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    autoscaling_enabled = false
    instance_type       = "ml.g6.2xlarge"
  }
  assert {
    condition     = length(aws_appautoscaling_target.this) == 0 && length(aws_appautoscaling_policy.invocations) == 0 && output.autoscaling_resource_id == null
    error_message = "autoscaling_enabled = false must deregister the variant (SageMaker refuses instance type changes of autoscaled variants)."
  }
  assert {
    condition     = output.endpoint_config_name != run.endpoint_rollout_is_blue_green_with_rollback.endpoint_config_name
    error_message = "A new instance type is a new configuration."
  }
}

# ---------------------------------------------------------------------------------------------
# 7. SageMaker's own log groups, created with the KMS key and retention; the key policy lets
# CloudWatch Logs (partition-correct principal) use the key for them.
# ---------------------------------------------------------------------------------------------
run "endpoint_log_group_is_encrypted" {
  command = plan
  module {
    source = "./modules/endpoint"
  }
  variables {
    log_retention_days = 90
  }
  assert {
    condition = (
      aws_cloudwatch_log_group.endpoint.name == "/aws/sagemaker/Endpoints/loom-endpoint" &&
      aws_cloudwatch_log_group.endpoint.kms_key_id == var.kms_key_arn &&
      aws_cloudwatch_log_group.endpoint.retention_in_days == 90
    )
    error_message = "The endpoint's log group must exist with the KMS key and the retention."
  }
}

run "job_log_groups_are_encrypted" {
  command = plan
  module {
    source = "./modules/training"
  }
  variables {
    bucket_arn     = "arn:aws:s3:::loom-data-123456789012-us-east-1"
    repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/loom-training"
  }
  assert {
    condition = (
      output.job_log_group_names == tolist(["/aws/sagemaker/TrainingJobs", "/aws/sagemaker/TransformJobs"]) &&
      alltrue([for g in aws_cloudwatch_log_group.jobs : g.kms_key_id == var.kms_key_arn && g.retention_in_days == 365])
    )
    error_message = "The training and transform job log groups must exist with the KMS key and a retention."
  }
}

run "key_policy_lets_logs_encrypt_sagemaker_groups" {
  command = plan
  module {
    source = "./modules/kms"
  }
  assert {
    condition = anytrue([
      for s in jsondecode(aws_kms_key.this.policy).Statement :
      try(s.Principal.Service == "logs.us-east-1.amazonaws.com" && contains(s.Action, "kms:GenerateDataKey*") &&
      s.Condition.ArnLike["kms:EncryptionContext:aws:logs:arn"] == "arn:aws:logs:us-east-1:123456789012:log-group:*", false)
    ])
    error_message = "The key policy must let CloudWatch Logs (aws_service_principal) encrypt this account's log groups, SageMaker's included."
  }
}

run "logs_principal_override" {
  command = plan
  module {
    source = "./modules/kms"
  }
  variables {
    region                 = "cn-north-1"
    partition              = "aws-cn"
    logs_service_principal = "logs.cn-north-1.amazonaws.com.cn"
  }
  assert {
    condition     = length(data.aws_service_principal.logs) == 0 && anytrue([for s in jsondecode(aws_kms_key.this.policy).Statement : try(s.Principal.Service, "") == "logs.cn-north-1.amazonaws.com.cn"])
    error_message = "logs_service_principal must replace the data source."
  }
}

# ---------------------------------------------------------------------------------------------
# 8. An account holds one GitHub OIDC provider: reuse it by ARN (EntityAlreadyExists otherwise).
# https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_create_oidc.html
# ---------------------------------------------------------------------------------------------
run "root_reuses_an_existing_github_oidc_provider" {
  command = plan
  variables {
    github_repository        = "example-org/loom"
    github_oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    model_data_url           = null # phase 1
  }
  assert {
    condition     = output.github_oidc_provider_arn == var.github_oidc_provider_arn && output.ci_role_arn != null
    error_message = "With github_oidc_provider_arn the CI role must trust that provider."
  }
}
