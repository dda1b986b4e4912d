# The optional asynchronous endpoint of the endpoint module (modules/endpoint/async.tf).
# Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  region         = "us-east-1"
  kms_key_arn    = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  endpoint_name  = "loom-endpoint"
  bucket_name    = "loom-data-123456789012-us-east-1"
  repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
  image_uri      = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
  model_data_url = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
}

run "async_is_off_by_default" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  assert {
    condition     = length(aws_sagemaker_endpoint.async) == 0 && output.async_endpoint_name == null
    error_message = "No asynchronous endpoint unless async_inference.enabled."
  }
}

run "async_endpoint_scales_to_zero_and_writes_to_the_bucket" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    async_inference = {
      enabled           = true
      success_topic_arn = "arn:aws:sns:us-east-1:123456789012:loom-async-ok"
      error_topic_arn   = "arn:aws:sns:us-east-1:123456789012:loom-async-failed"
    }
  }

  assert {
    condition     = aws_sagemaker_endpoint.async[0].name == "loom-endpoint-async" && output.async_endpoint_name == "loom-endpoint-async"
    error_message = "The asynchronous endpoint is <endpoint_name>-async."
  }

  assert {
    condition = (aws_sagemaker_model.async[0].primary_container[0].environment["MAX_BODY_MB"] == "1024"
    && aws_sagemaker_model.async[0].primary_container[0].environment["REQUEST_TIMEOUT_S"] == "3600")
    error_message = "The async container must take 1 GB payloads and work up to an hour on them."
  }

  assert {
    condition = (aws_sagemaker_endpoint_configuration.async[0].async_inference_config[0].output_config[0].s3_output_path == "s3://loom-data-123456789012-us-east-1/async/output/loom-endpoint-async"
    && aws_sagemaker_endpoint_configuration.async[0].async_inference_config[0].output_config[0].s3_failure_path == "s3://loom-data-123456789012-us-east-1/async/failure/loom-endpoint-async")
    error_message = "Results and failures go to the project bucket."
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.async[0].async_inference_config[0].output_config[0].notification_config[0].error_topic == "arn:aws:sns:us-east-1:123456789012:loom-async-failed"
    error_message = "The SNS topics must be wired when given."
  }

  assert {
    condition     = aws_appautoscaling_target.async[0].min_capacity == 0 && aws_appautoscaling_target.async[0].max_capacity == 2
    error_message = "The asynchronous endpoint scales between zero and max_capacity."
  }

  assert {
    condition     = aws_appautoscaling_policy.async_backlog[0].target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].metric_name == "ApproximateBacklogSizePerInstance"
    error_message = "Scaling tracks ApproximateBacklogSizePerInstance."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.async_backlog_without_capacity[0].metric_name == "HasBacklogWithoutCapacity"
    error_message = "Leaving zero instances needs the HasBacklogWithoutCapacity alarm."
  }

  assert {
    condition     = strcontains(aws_iam_role_policy.async[0].policy, "sns:Publish") && strcontains(aws_iam_role_policy.async[0].policy, "/async/output/*")
    error_message = "The role may write results and publish to the topics, nothing more."
  }
}

run "async_payload_is_capped_at_1_gb" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    async_inference = { enabled = true, max_payload_mb = 2048 }
  }

  expect_failures = [var.async_inference]
}

# MaxConcurrentInvocationsPerInstance is an integer 1..1000 (botocore's SageMaker model, shape
# MaxConcurrentInvocationsPerInstance; API_AsyncInferenceClientConfig.html): 1001 is refused at plan time.
run "async_concurrency_per_instance_is_at_most_1000" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    async_inference = { enabled = true, max_concurrent_invocations_per_instance = 1001 }
  }

  expect_failures = [var.async_inference]
}

run "async_concurrency_per_instance_is_a_whole_number" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    async_inference = { enabled = true, max_concurrent_invocations_per_instance = 2.5 }
  }

  expect_failures = [var.async_inference]
}

run "async_concurrency_per_instance_1000_is_accepted" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    async_inference = { enabled = true, max_concurrent_invocations_per_instance = 1000 }
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.async[0].async_inference_config[0].client_config[0].max_concurrent_invocations_per_instance == 1000
    error_message = "1000 concurrent invocations per instance is SageMaker's maximum and must be accepted."
  }
}

# The asynchronous endpoint's containers log to /aws/sagemaker/Endpoints/<async endpoint name>: the model
# role may write there, and Terraform creates the group (KMS, retention) before SageMaker would.
run "async_endpoint_logs_to_its_own_group" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    async_inference = { enabled = true }
  }

  assert {
    condition = contains(flatten([for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Resource if s.Sid == "EndpointAndTransformLogs"]),
    "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/loom-endpoint-async:*")
    error_message = "The model role must be allowed to write the asynchronous endpoint's own log group."
  }

  assert {
    condition     = aws_cloudwatch_log_group.async[0].name == "/aws/sagemaker/Endpoints/loom-endpoint-async" && aws_cloudwatch_log_group.async[0].kms_key_id == var.kms_key_arn && aws_cloudwatch_log_group.async[0].retention_in_days == 365
    error_message = "Terraform creates the asynchronous endpoint's log group, KMS-encrypted and with retention."
  }

  # The server's MODEL_LOAD_TIMEOUT (1,380 s) must fit the start-up window, and a large artifact needs more
  # than the default download time: both windows as on the real-time variant (60-3600 s each,
  # https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html).
  assert {
    condition = (aws_sagemaker_endpoint_configuration.async[0].production_variants[0].model_data_download_timeout_in_seconds == 1200
      && aws_sagemaker_endpoint_configuration.async[0].production_variants[0].container_startup_health_check_timeout_in_seconds == 1500
    && tonumber(aws_sagemaker_model.async[0].primary_container[0].environment["MODEL_LOAD_TIMEOUT"]) < 1500)
    error_message = "The asynchronous variant needs the download and start-up windows the server's load timeout assumes."
  }

  assert {
    condition     = aws_sagemaker_model.async[0].primary_container[0].model_data_url == var.model_data_url && length(aws_sagemaker_model.async[0].primary_container[0].model_data_source) == 0
    error_message = "A model.tar.gz goes as ModelDataUrl (Gzip)."
  }
}

run "async_no_log_permission_without_the_endpoint" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  assert {
    condition     = !strcontains(aws_iam_role_policy.model.policy, "loom-endpoint-async") && length(aws_cloudwatch_log_group.async) == 0
    error_message = "Without async_inference the model role gets no asynchronous log group."
  }
}

# An uncompressed model folder: ModelDataSource.S3DataSource with CompressionType None, as the real-time
# model sends it (https://docs.aws.amazon.com/sagemaker/latest/dg/large-model-inference-uncompressed.html).
run "async_model_honours_model_data_compression" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    async_inference        = { enabled = true }
    model_data_compression = "None"
    model_data_url         = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model/"
  }

  assert {
    condition = (aws_sagemaker_model.async[0].primary_container[0].model_data_url == null
      && aws_sagemaker_model.async[0].primary_container[0].model_data_source[0].s3_data_source[0].compression_type == "None"
      && aws_sagemaker_model.async[0].primary_container[0].model_data_source[0].s3_data_source[0].s3_data_type == "S3Prefix"
    && aws_sagemaker_model.async[0].primary_container[0].model_data_source[0].s3_data_source[0].s3_uri == var.model_data_url)
    error_message = "The asynchronous model must send an uncompressed folder as S3DataSource with CompressionType None."
  }

  assert {
    condition     = aws_sagemaker_model.async[0].primary_container[0].model_data_source == aws_sagemaker_model.this.primary_container[0].model_data_source
    error_message = "The asynchronous and real-time models must describe the artifact the same way."
  }
}
