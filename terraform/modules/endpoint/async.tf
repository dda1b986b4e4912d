# Optional: a SageMaker Asynchronous Inference endpoint serving the same image and artifact.
#
# Requests are JSON Lines shards in s3://BUCKET/async/input/ (up to 1 GB each), processed for up to
# an hour, answered in s3://BUCKET/async/output/ (failures in async/failure/), with optional SNS
# notices. It scales to zero: target tracking on ApproximateBacklogSizePerInstance, and a step
# policy on HasBacklogWithoutCapacity to leave zero when a request arrives.
# https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference.html
# https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html

locals {
  async_enabled     = var.async_inference.enabled
  async_name        = "${var.endpoint_name}-async"
  async_output_path = "s3://${var.bucket_name}/async/output/${local.async_name}"
  async_failure     = "s3://${var.bucket_name}/async/failure/${local.async_name}"
  async_topics      = compact([var.async_inference.success_topic_arn, var.async_inference.error_topic_arn])
  # The container takes the whole payload and works on it for up to the invocation timeout.
  async_environment = merge(local.environment, {
    MAX_BODY_MB       = tostring(var.async_inference.max_payload_mb)
    REQUEST_TIMEOUT_S = tostring(var.async_inference.invocation_timeout_seconds)
  })
  async_model_name  = "${local.async_name}-${substr(sha1(jsonencode([var.image_uri, var.model_data_url, var.model_data_compression, local.async_environment])), 0, 8)}"
  async_config_name = "${local.async_name}-${substr(sha1(jsonencode([local.async_model_name, var.instance_type, var.async_inference, var.model_data_download_timeout_seconds, var.container_startup_timeout_seconds])), 0, 8)}"
  async_resource_id = "endpoint/${local.async_name}/variant/${var.variant_name}"
}

resource "aws_iam_role_policy" "async" {
  count = local.async_enabled ? 1 : 0
  name  = "async-inference"
  role  = aws_iam_role.model.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid      = "ReadAsyncInput"
          Effect   = "Allow"
          Action   = "s3:GetObject"
          Resource = "${local.bucket_arn}/async/input/*"
        },
        {
          Sid      = "WriteAsyncResults"
          Effect   = "Allow"
          Action   = ["s3:PutObject", "s3:AbortMultipartUpload"]
          Resource = ["${local.bucket_arn}/async/output/*", "${local.bucket_arn}/async/failure/*"]
        },
      ],
      length(local.async_topics) > 0 ? [{
        Sid      = "NotifyAsyncResults"
        Effect   = "Allow"
        Action   = "sns:Publish"
        Resource = local.async_topics
      }] : [],
    )
  })
}

resource "aws_sagemaker_model" "async" {
  count                    = local.async_enabled ? 1 : 0
  name                     = local.async_model_name
  execution_role_arn       = aws_iam_role.model.arn
  enable_network_isolation = true

  # The same artifact as the real-time model, in the same form: a model.tar.gz (Gzip), or an
  # uncompressed folder sent as ModelDataSource.S3DataSource with CompressionType None.
  primary_container {
    image          = var.image_uri
    model_data_url = local.compressed_artifact ? var.model_data_url : null
    environment    = local.async_environment

    dynamic "model_data_source" {
      for_each = local.compressed_artifact ? [] : [var.model_data_url]
      content {
        s3_data_source {
          s3_uri           = model_data_source.value
          s3_data_type     = "S3Prefix"
          compression_type = "None"
        }
      }
    }
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [aws_iam_role_policy.model, aws_iam_role_policy.async]
}

resource "aws_sagemaker_endpoint_configuration" "async" {
  count       = local.async_enabled ? 1 : 0
  name        = local.async_config_name
  kms_key_arn = local.endpoint_volume_kms_key

  production_variants {
    variant_name           = var.variant_name
    model_name             = aws_sagemaker_model.async[0].name
    instance_type          = var.instance_type
    initial_instance_count = 1 # CreateEndpoint needs one; autoscaling then takes it to zero when idle
    # The same windows as the real-time variant: the server's MODEL_LOAD_TIMEOUT (container start-up
    # less 120 s, 1,380 s by default) must fit SageMaker's start-up health check, and an 8 GB artifact
    # needs more than the default download time. Both 60-3600 s (API_ProductionVariant.html).
    model_data_download_timeout_in_seconds            = var.model_data_download_timeout_seconds
    container_startup_health_check_timeout_in_seconds = var.container_startup_timeout_seconds
  }

  async_inference_config {
    client_config {
      max_concurrent_invocations_per_instance = var.async_inference.max_concurrent_invocations_per_instance
    }

    output_config {
      s3_output_path  = local.async_output_path
      s3_failure_path = local.async_failure
      kms_key_id      = var.kms_key_arn

      dynamic "notification_config" {
        for_each = length(local.async_topics) > 0 ? [1] : []
        content {
          success_topic                 = var.async_inference.success_topic_arn
          error_topic                   = var.async_inference.error_topic_arn
          include_inference_response_in = var.async_inference.success_topic_arn == null ? null : ["SUCCESS_NOTIFICATION_TOPIC"]
        }
      }
    }
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

# SageMaker would create the asynchronous endpoint's group itself, unencrypted and kept forever.
resource "aws_cloudwatch_log_group" "async" {
  count             = local.async_enabled ? 1 : 0
  name              = "/aws/sagemaker/Endpoints/${local.async_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_sagemaker_endpoint" "async" {
  count                = local.async_enabled ? 1 : 0
  name                 = local.async_name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.async[0].name
  tags                 = var.tags
  depends_on           = [aws_cloudwatch_log_group.async]
}

resource "aws_appautoscaling_target" "async" {
  count              = local.async_enabled ? 1 : 0
  service_namespace  = "sagemaker"
  resource_id        = local.async_resource_id
  scalable_dimension = "sagemaker:variant:DesiredInstanceCount"
  min_capacity       = 0
  max_capacity       = var.async_inference.max_capacity

  depends_on = [aws_sagemaker_endpoint.async]
}

# Keep about `target_backlog_per_instance` queued requests per instance; scales in to zero when idle.
resource "aws_appautoscaling_policy" "async_backlog" {
  count              = local.async_enabled ? 1 : 0
  name               = "${local.async_name}-backlog-per-instance"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.async[0].service_namespace
  resource_id        = aws_appautoscaling_target.async[0].resource_id
  scalable_dimension = aws_appautoscaling_target.async[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.async_inference.target_backlog_per_instance
    scale_in_cooldown  = var.scale_in_cooldown_seconds
    scale_out_cooldown = var.scale_out_cooldown_seconds

    customized_metric_specification {
      metric_name = "ApproximateBacklogSizePerInstance"
      namespace   = "AWS/SageMaker"
      statistic   = "Average"
      dimensions {
        name  = "EndpointName"
        value = local.async_name
      }
    }
  }
}

# Target tracking cannot leave zero instances (the per-instance metric is undefined there): one
# instance is added when requests wait and none is running.
resource "aws_appautoscaling_policy" "async_from_zero" {
  count              = local.async_enabled ? 1 : 0
  name               = "${local.async_name}-from-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.async[0].service_namespace
  resource_id        = aws_appautoscaling_target.async[0].resource_id
  scalable_dimension = aws_appautoscaling_target.async[0].scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = var.scale_out_cooldown_seconds
    metric_aggregation_type = "Average"

    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = 1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "async_backlog_without_capacity" {
  count               = local.async_enabled ? 1 : 0
  alarm_name          = "${local.async_name}-backlog-without-capacity"
  alarm_description   = "Requests wait for ${local.async_name} and no instance runs: scale out from zero."
  namespace           = "AWS/SageMaker"
  metric_name         = "HasBacklogWithoutCapacity"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = [aws_appautoscaling_policy.async_from_zero[0].arn]
  dimensions = {
    EndpointName = local.async_name
  }
  tags = var.tags
}

output "async_endpoint_name" {
  description = "Name of the asynchronous endpoint (null when async_inference.enabled is false)."
  value       = local.async_enabled ? aws_sagemaker_endpoint.async[0].name : null
}

output "async_output_path" {
  description = "S3 prefix of the asynchronous endpoint's results (failures under async/failure/)."
  value       = local.async_enabled ? local.async_output_path : null
}
