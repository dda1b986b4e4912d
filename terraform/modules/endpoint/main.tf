# The serving side of SageMaker: execution role, model (inference image + model.tar.gz, network
# isolated), endpoint configuration, endpoint, target-tracking autoscaling and alarms.
#
# Batch transform jobs (started by training code with boto3) run this same Model, and SageMaker
# runs them as the Model's execution role; so this role may also read batch/input/ and write
# batch/output/. A separate batch role would need a second Model duplicating image and artifact.

locals {
  artifact_bucket = split("/", trimprefix(var.model_data_url, "s3://"))[0]
  artifact_key    = join("/", slice(split("/", trimprefix(var.model_data_url, "s3://")), 1, length(split("/", trimprefix(var.model_data_url, "s3://")))))
  # The "folder" holding model.tar.gz: the role can read only below it.
  artifact_prefix = join("/", slice(split("/", local.artifact_key), 0, length(split("/", local.artifact_key)) - 1))

  bucket_arn      = "arn:${var.partition}:s3:::${var.bucket_name}"
  capture_prefix  = "capture/${var.endpoint_name}"
  endpoint_arn    = "arn:${var.partition}:sagemaker:${var.region}:${var.account_id}:endpoint/${lower(var.endpoint_name)}"
  log_group_arns  = [for g in ["/aws/sagemaker/Endpoints/${var.endpoint_name}", "/aws/sagemaker/TransformJobs"] : "arn:${var.partition}:logs:${var.region}:${var.account_id}:log-group:${g}"]
  environment     = merge({ MAX_BODY_MB = "20" }, var.environment)
  resource_id     = "endpoint/${var.endpoint_name}/variant/${var.variant_name}"
  model_name      = "${var.endpoint_name}-${substr(sha1(jsonencode([var.image_uri, var.model_data_url, local.environment])), 0, 8)}"
  endpoint_config = "${var.endpoint_name}-${substr(sha1(jsonencode([local.model_name, var.instance_type, var.min_capacity, var.kms_key_arn, var.data_capture])), 0, 8)}"

  # Instances with NVMe instance storage encrypt it in hardware, and CreateEndpointConfig fails
  # when KmsKeyId is given for them. Set the key for every other instance type.
  local_storage_instance   = can(regex("^ml\\.(c5d|m5d|r5d|g4dn|g5|g6|g6e|p3dn|p4d|p4de|p5|p5e|p5en|trn1)\\.", var.instance_type))
  endpoint_volume_kms_key  = local.local_storage_instance ? null : var.kms_key_arn
  data_capture_enabled     = var.data_capture.enabled
  batch_input_prefix_arn   = "${local.bucket_arn}/batch/input/*"
  batch_output_prefix_arn  = "${local.bucket_arn}/batch/output/*"
  artifact_object_arn_glob = "${local.bucket_arn}/${local.artifact_prefix}/*"
}

# ---------------------------------------------------------------------------------------------
# Execution role: read only the artifact's prefix, pull only the inference image
# ---------------------------------------------------------------------------------------------
resource "aws_iam_role" "model" {
  name        = "${var.endpoint_name}-sagemaker-model"
  description = "SageMaker model ${var.endpoint_name}: endpoint and batch transform"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "sagemaker.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = var.account_id } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "model" {
  name = "model-and-batch"
  role = aws_iam_role.model.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Sid      = "ReadModelArtifact"
          Effect   = "Allow"
          Action   = "s3:GetObject"
          Resource = local.artifact_object_arn_glob
        },
        {
          Sid      = "ReadBatchInput"
          Effect   = "Allow"
          Action   = "s3:GetObject"
          Resource = local.batch_input_prefix_arn
        },
        {
          Sid       = "ListBatchInput"
          Effect    = "Allow"
          Action    = "s3:ListBucket"
          Resource  = local.bucket_arn
          Condition = { StringLike = { "s3:prefix" = ["batch/input/*"] } }
        },
        {
          Sid      = "WriteBatchOutput"
          Effect   = "Allow"
          Action   = ["s3:PutObject", "s3:AbortMultipartUpload"]
          Resource = local.batch_output_prefix_arn
        },
        {
          Sid      = "UseBucketKey"
          Effect   = "Allow"
          Action   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
          Resource = var.kms_key_arn
        },
        {
          Sid      = "PullInferenceImage"
          Effect   = "Allow"
          Action   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
          Resource = var.repository_arn
        },
        {
          # GetAuthorizationToken has no resource-level permissions: AWS requires "*".
          Sid      = "EcrLogin"
          Effect   = "Allow"
          Action   = "ecr:GetAuthorizationToken"
          Resource = "*"
        },
        {
          Sid      = "EndpointAndTransformLogs"
          Effect   = "Allow"
          Action   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
          Resource = concat(local.log_group_arns, [for a in local.log_group_arns : "${a}:*"])
        },
        {
          # PutMetricData has no resource-level permissions; the namespace condition scopes it.
          Sid       = "EndpointMetrics"
          Effect    = "Allow"
          Action    = "cloudwatch:PutMetricData"
          Resource  = "*"
          Condition = { StringLike = { "cloudwatch:namespace" = ["/aws/sagemaker/Endpoints", "/aws/sagemaker/TransformJobs"] } }
        },
      ],
      local.data_capture_enabled ? [{
        Sid      = "WriteDataCapture"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:AbortMultipartUpload"]
        Resource = "${local.bucket_arn}/${local.capture_prefix}/*"
      }] : [],
    )
  })
}

# ---------------------------------------------------------------------------------------------
# Model, endpoint configuration, endpoint
# ---------------------------------------------------------------------------------------------
resource "aws_sagemaker_model" "this" {
  name                     = local.model_name
  execution_role_arn       = aws_iam_role.model.arn
  enable_network_isolation = true

  primary_container {
    image          = var.image_uri
    model_data_url = var.model_data_url
    environment    = local.environment
  }

  tags = var.tags

  lifecycle {
    # The name carries a hash of image, artifact and environment: a new one is created first,
    # then the endpoint moves to it, then the old one goes.
    create_before_destroy = true

    precondition {
      condition     = local.artifact_bucket == var.bucket_name && startswith(local.artifact_key, "models/") && endswith(local.artifact_key, ".tar.gz")
      error_message = "model_data_url must point at a .tar.gz under s3://${var.bucket_name}/models/ (the training output prefix); got ${var.model_data_url}."
    }
  }

  depends_on = [aws_iam_role_policy.model]
}

resource "aws_sagemaker_endpoint_configuration" "this" {
  # kms_key_arn is set for every instance type that accepts it: ml.g5 (the default) and other
  # NVMe instance-storage types reject KmsKeyId; their local storage is hardware-encrypted.
  name        = local.endpoint_config
  kms_key_arn = local.endpoint_volume_kms_key

  production_variants {
    variant_name           = var.variant_name
    model_name             = aws_sagemaker_model.this.name
    instance_type          = var.instance_type
    initial_instance_count = var.min_capacity
  }

  dynamic "data_capture_config" {
    for_each = local.data_capture_enabled ? [var.data_capture] : []
    content {
      enable_capture              = true
      initial_sampling_percentage = data_capture_config.value.sampling_percentage
      destination_s3_uri          = "s3://${var.bucket_name}/${local.capture_prefix}"
      kms_key_id                  = var.kms_key_arn

      capture_options {
        capture_mode = "Input"
      }
      capture_options {
        capture_mode = "Output"
      }

      capture_content_type_header {
        json_content_types = ["application/json"]
      }
    }
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_sagemaker_endpoint" "this" {
  name                 = var.endpoint_name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.this.name
  tags                 = var.tags
}

# ---------------------------------------------------------------------------------------------
# Autoscaling on invocations per instance
# ---------------------------------------------------------------------------------------------
resource "aws_appautoscaling_target" "this" {
  service_namespace  = "sagemaker"
  resource_id        = local.resource_id
  scalable_dimension = "sagemaker:variant:DesiredInstanceCount"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity

  depends_on = [aws_sagemaker_endpoint.this]
}

resource "aws_appautoscaling_policy" "invocations" {
  name               = "${var.endpoint_name}-invocations-per-instance"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.target_invocations_per_instance
    scale_in_cooldown  = var.scale_in_cooldown_seconds
    scale_out_cooldown = var.scale_out_cooldown_seconds

    predefined_metric_specification {
      predefined_metric_type = "SageMakerVariantInvocationsPerInstance"
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Alarms
# ---------------------------------------------------------------------------------------------
resource "aws_cloudwatch_metric_alarm" "invocation_5xx" {
  alarm_name          = "${var.endpoint_name}-invocation-5xx"
  alarm_description   = "The model container of ${var.endpoint_name} answered with 5xx errors."
  namespace           = "AWS/SageMaker"
  metric_name         = "Invocation5XXErrors"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.alarm_5xx_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  dimensions = {
    EndpointName = aws_sagemaker_endpoint.this.name
    VariantName  = var.variant_name
  }
  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "model_latency" {
  alarm_name          = "${var.endpoint_name}-model-latency-p90"
  alarm_description   = "p90 model latency of ${var.endpoint_name} is above ${var.alarm_latency_p90_ms} ms."
  namespace           = "AWS/SageMaker"
  metric_name         = "ModelLatency"
  extended_statistic  = "p90"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.alarm_latency_p90_ms * 1000 # ModelLatency is in microseconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  dimensions = {
    EndpointName = aws_sagemaker_endpoint.this.name
    VariantName  = var.variant_name
  }
  tags = var.tags
}
