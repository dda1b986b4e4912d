# What a fresh AWS account refuses although moto accepts it (issue 13), SageMaker side and
# foundation: start-up window, instance storage, rollouts, log groups, key policy, OIDC reuse.
# Each run names its rule's source. Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

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
# 4. Instance types with NVMe instance storage get no KmsKeyId: it does not encrypt their local storage,
# which is hardware-encrypted (API_CreateEndpointConfig.html, KmsKeyId);
# the *d/*gd/*id families and hyphenated families (ml.p6-b200) included.
# ---------------------------------------------------------------------------------------------
# The provider (5.100) checks instance types against its own list, which has no ml.m6id or
# hyphenated family yet; tests/operations/test_sagemaker_jobs.py runs this module's regex on those.
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
      aws_sagemaker_endpoint.this[0].deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].type == "ALL_AT_ONCE" &&
      aws_sagemaker_endpoint.this[0].deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].wait_interval_in_seconds == 600 &&
      toset([for a in aws_sagemaker_endpoint.this[0].deployment_config[0].auto_rollback_configuration[0].alarms : a.alarm_name]) == toset(["loom-endpoint-invocation-5xx", "loom-endpoint-model-latency-p90"])
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
  expect_failures = [var.rollout_timeout_seconds, check.rollout_fits_the_provider_wait]
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
  # The module reads Region and partition from the provider (aws_region, aws_partition).
  override_data {
    target = data.aws_region.current
    values = { name = "cn-north-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws-cn", dns_suffix = "amazonaws.com.cn" }
  }
  variables {
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
