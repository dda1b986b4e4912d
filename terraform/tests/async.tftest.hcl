# The optional asynchronous endpoint of the endpoint module (modules/endpoint/async.tf).
# Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  account_id     = "123456789012"
  partition      = "aws"
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
