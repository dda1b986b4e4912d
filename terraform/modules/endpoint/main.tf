# The serving side of SageMaker: execution role, model (inference image + model.tar.gz, network
# isolated), endpoint configuration, endpoint, target-tracking autoscaling and alarms.
#
# Batch transform jobs (started by training code with boto3) run this same Model, and SageMaker
# runs them as the Model's execution role; so this role may also read batch/input/ and write
# batch/output/. A separate batch role would need a second Model duplicating image and artifact.

# The container's serving defaults (docs/inference.md): a queue of 100 admitted requests per worker
# (TorchServe's job_queue_size default) and batches of up to 16 products across requests, taken without
# waiting. var.environment overrides any of them.
locals {
  serving_defaults = {
    MAX_BODY_MB          = "20"
    MODEL_LOAD_TIMEOUT   = tostring(local.model_load_timeout)
    MAX_PENDING_REQUESTS = "100"
    MAX_BATCH_PRODUCTS   = "16"
    BATCH_WAIT_MS        = "0"
  }
}

locals {
  artifact_bucket = split("/", trimprefix(var.model_data_url, "s3://"))[0]
  artifact_key    = join("/", slice(split("/", trimprefix(var.model_data_url, "s3://")), 1, length(split("/", trimprefix(var.model_data_url, "s3://")))))
  # model.tar.gz (Gzip) or a folder of model files (None, for large models: no unpacking on startup).
  #   https://docs.aws.amazon.com/sagemaker/latest/dg/large-model-inference-uncompressed.html
  compressed_artifact = var.model_data_compression == "Gzip"
  # The "folder" holding model.tar.gz, or the model folder itself: the role can read only below it.
  # With rollouts outside Terraform (`loom rollout --model-data`), any artifact under models/ (the
  # training output prefix) may be rolled out, so the role reads all of models/.
  artifact_prefix   = local.compressed_artifact ? join("/", slice(split("/", local.artifact_key), 0, length(split("/", local.artifact_key)) - 1)) : trimsuffix(local.artifact_key, "/")
  model_read_prefix = var.rollouts_outside_terraform ? "models" : local.artifact_prefix

  bucket_arn     = "arn:${local.partition}:s3:::${var.bucket_name}"
  capture_prefix = "capture/${var.endpoint_name}"
  endpoint_arn   = "arn:${local.partition}:sagemaker:${local.region}:${local.account_id}:endpoint/${lower(var.endpoint_name)}"
  # The containers of each endpoint write to /aws/sagemaker/Endpoints/<that endpoint's name>: the
  # asynchronous endpoint (async.tf) has its own group beside the real-time one's.
  log_group_names = concat(["/aws/sagemaker/Endpoints/${var.endpoint_name}", "/aws/sagemaker/TransformJobs"], var.async_inference.enabled ? ["/aws/sagemaker/Endpoints/${var.endpoint_name}-async"] : [])
  log_group_arns  = [for g in local.log_group_names : "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${g}"]
  # The server gives up loading the model (and /ping reports why) before SageMaker's startup health
  # check window ends, so that the failure carries the server's message, not only a timeout.
  model_load_timeout = var.container_startup_timeout_seconds - 120
  environment        = merge(local.serving_defaults, var.environment)
  resource_id        = "endpoint/${var.endpoint_name}/variant/${var.variant_name}"
  model_name         = "${var.endpoint_name}-${substr(sha1(jsonencode([var.image_uri, var.model_data_url, var.model_data_compression, local.environment])), 0, 8)}"
  # min_capacity is not part of the name: autoscaling owns the instance count once the endpoint
  # exists, so a capacity change must not create a new configuration (and a rollout).
  endpoint_config = "${var.endpoint_name}-${substr(sha1(jsonencode([local.model_name, var.instance_type, var.kms_key_arn, var.data_capture, var.container_startup_timeout_seconds, var.model_data_download_timeout_seconds])), 0, 8)}"

  # Instance types with NVMe instance storage: KmsKeyId does not encrypt their (hardware-encrypted) local
  # storage, so it is left out; the one rule of modules/instance_storage
  # (shared with the search module; operations/sagemaker_jobs.py has the same for jobs).
  local_storage_instance   = module.instance_storage.local_storage[var.instance_type]
  endpoint_volume_kms_key  = local.local_storage_instance ? null : var.kms_key_arn
  data_capture_enabled     = var.data_capture.enabled
  batch_input_prefix_arn   = "${local.bucket_arn}/batch/input/*"
  batch_output_prefix_arn  = "${local.bucket_arn}/batch/output/*"
  artifact_object_arn_glob = "${local.bucket_arn}/${local.model_read_prefix}/*"
}

module "instance_storage" {
  source         = "../instance_storage"
  instance_types = [var.instance_type]
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
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
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
          Sid       = "ListBatchInputAndModelFolder"
          Effect    = "Allow"
          Action    = "s3:ListBucket"
          Resource  = local.bucket_arn
          Condition = { StringLike = { "s3:prefix" = concat(["batch/input/*"], local.compressed_artifact && !var.rollouts_outside_terraform ? [] : ["${local.model_read_prefix}/*"]) } }
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
    model_data_url = local.compressed_artifact ? var.model_data_url : null
    environment    = local.environment

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
    # The name carries a hash of image, artifact and environment: a new one is created first,
    # then the endpoint moves to it, then the old one goes.
    create_before_destroy = true

    precondition {
      condition     = local.artifact_bucket == var.bucket_name && startswith(local.artifact_key, "models/") && endswith(local.artifact_key, local.compressed_artifact ? ".tar.gz" : "/")
      error_message = "model_data_url must point at a .tar.gz (model_data_compression = Gzip) or a folder ending in / (None) under s3://${var.bucket_name}/models/ (the training output prefix); got ${var.model_data_url}."
    }

    precondition {
      condition     = try(tonumber(local.environment.MODEL_LOAD_TIMEOUT) < var.container_startup_timeout_seconds, false)
      error_message = "environment MODEL_LOAD_TIMEOUT (${local.environment.MODEL_LOAD_TIMEOUT} s) must be below container_startup_timeout_seconds (${var.container_startup_timeout_seconds} s), so that the server reports a slow load before SageMaker stops the container."
    }
  }

  depends_on = [aws_iam_role_policy.model]
}

resource "aws_sagemaker_endpoint_configuration" "this" {
  # kms_key_arn is set for every instance type with an EBS volume: on ml.g5 (the default) and other
  # NVMe instance-storage types the key does not encrypt local storage, which is hardware-encrypted
  # (API_CreateEndpointConfig.html, KmsKeyId), so none is sent.
  name        = local.endpoint_config
  kms_key_arn = local.endpoint_volume_kms_key

  production_variants {
    variant_name  = var.variant_name
    model_name    = aws_sagemaker_model.this.name
    instance_type = var.instance_type
    # A new configuration (a rollout) starts with rollout_instance_count (e.g. the current count)
    # or min_capacity; autoscaling moves it from there. The provider sends no
    # RetainAllVariantProperties, so this is how a rollout keeps capacity.
    initial_instance_count = coalesce(var.rollout_instance_count, var.min_capacity)
    # Download and start-up of a large model (~8 GB) take longer than SageMaker's defaults.
    #   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html
    model_data_download_timeout_in_seconds            = var.model_data_download_timeout_seconds
    container_startup_health_check_timeout_in_seconds = var.container_startup_timeout_seconds
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
    # The count only matters when a configuration is created (its name changes); a changed
    # min_capacity or rollout_instance_count alone must not replace the configuration in use.
    ignore_changes = [production_variants[0].initial_instance_count]
  }
}

# Two blocks for one endpoint, because `ignore_changes` cannot depend on a variable: `this` when
# Terraform rolls the endpoint out (the default), `rollouts_outside_terraform` when `loom rollout`
# does, where Terraform leaves the live configuration and deployment configuration alone. Switching
# moves the endpoint between the two addresses with `terraform state mv` (docs/deploy.md); without
# it the plan destroys the endpoint and creates it again.
locals {
  endpoint = var.rollouts_outside_terraform ? aws_sagemaker_endpoint.rollouts_outside_terraform[0] : aws_sagemaker_endpoint.this[0]
  # Rollouts are blue/green: the new fleet takes all traffic once healthy, bakes for
  # rollout_bake_seconds, and SageMaker rolls back to the old fleet if the 5xx or latency alarm
  # fires meanwhile.  https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html
  rollback_alarm_names = [aws_cloudwatch_metric_alarm.invocation_5xx.alarm_name, aws_cloudwatch_metric_alarm.model_latency.alarm_name]
}

# Endpoints created before the two blocks existed were `aws_sagemaker_endpoint.this`.
moved {
  from = aws_sagemaker_endpoint.this
  to   = aws_sagemaker_endpoint.this[0]
}

resource "aws_sagemaker_endpoint" "this" {
  count                = var.rollouts_outside_terraform ? 0 : 1
  name                 = var.endpoint_name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.this.name

  deployment_config {
    blue_green_update_policy {
      traffic_routing_configuration {
        type                     = "ALL_AT_ONCE"
        wait_interval_in_seconds = var.rollout_bake_seconds
      }
      termination_wait_in_seconds          = var.rollout_termination_wait_seconds
      maximum_execution_timeout_in_seconds = var.rollout_timeout_seconds
    }

    auto_rollback_configuration {
      dynamic "alarms" {
        for_each = local.rollback_alarm_names
        content {
          alarm_name = alarms.value
        }
      }
    }
  }

  tags       = var.tags
  depends_on = [aws_cloudwatch_log_group.endpoint]
}

# Created with the same configuration and deployment configuration; afterwards `loom rollout` owns
# both: it moves the endpoint to configurations of its own (keeping the autoscaled instance count,
# which the provider's UpdateEndpoint cannot) and carries the deployment configuration forward.
resource "aws_sagemaker_endpoint" "rollouts_outside_terraform" {
  count                = var.rollouts_outside_terraform ? 1 : 0
  name                 = var.endpoint_name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.this.name

  deployment_config {
    blue_green_update_policy {
      traffic_routing_configuration {
        type                     = "ALL_AT_ONCE"
        wait_interval_in_seconds = var.rollout_bake_seconds
      }
      termination_wait_in_seconds          = var.rollout_termination_wait_seconds
      maximum_execution_timeout_in_seconds = var.rollout_timeout_seconds
    }

    auto_rollback_configuration {
      dynamic "alarms" {
        for_each = local.rollback_alarm_names
        content {
          alarm_name = alarms.value
        }
      }
    }
  }

  tags       = var.tags
  depends_on = [aws_cloudwatch_log_group.endpoint]

  lifecycle {
    # The provider would send UpdateEndpoint back to Terraform's configuration without
    # RetainAllVariantProperties (capacity reset), or with Terraform's deployment configuration.
    ignore_changes = [endpoint_config_name, deployment_config]
  }
}

# With rollouts_outside_terraform, a change of Terraform's model or configuration variables replaces
# Terraform's configuration, and create_before_destroy then deletes the old one. While the endpoint
# still serves it (before the first `loom rollout`), that would delete the live endpoint's
# configuration (API_DeleteEndpointConfig.html: "If you delete the EndpointConfig of an endpoint that
# is active ... you may lose visibility into the instance type the endpoint is using"): stop the plan.
resource "terraform_data" "rollout_guard" {
  count = var.rollouts_outside_terraform ? 1 : 0

  lifecycle {
    precondition {
      condition = (
        aws_sagemaker_endpoint.rollouts_outside_terraform[0].endpoint_config_name == aws_sagemaker_endpoint_configuration.this.name ||
        !can(regex("^${var.endpoint_name}-[0-9a-f]{8}$", aws_sagemaker_endpoint.rollouts_outside_terraform[0].endpoint_config_name))
      )
      error_message = "The endpoint still serves Terraform's configuration ${aws_sagemaker_endpoint.rollouts_outside_terraform[0].endpoint_config_name}, which this plan would replace and delete. With rollouts_outside_terraform = true roll out with `loom rollout`, and keep model_data_url, the image tag (make's IMAGE_TAG defaults to the current commit), instance_type and the other model and configuration variables as they are."
    }
  }
}

# SageMaker would create this group itself, unencrypted and kept forever.
resource "aws_cloudwatch_log_group" "endpoint" {
  name              = "/aws/sagemaker/Endpoints/${var.endpoint_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

# ---------------------------------------------------------------------------------------------
# Autoscaling on invocations per instance
# ---------------------------------------------------------------------------------------------
# Changing the instance type of an autoscaled variant fails (endpoint-scaling-update.html):
# `loom rollout --instance-type` deregisters and registers the variant around the update; through
# Terraform, apply with autoscaling_enabled = false first, then change instance_type, then enable it again.
resource "aws_appautoscaling_target" "this" {
  count = var.autoscaling_enabled ? 1 : 0

  service_namespace  = "sagemaker"
  resource_id        = local.resource_id
  scalable_dimension = "sagemaker:variant:DesiredInstanceCount"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity

  depends_on = [aws_sagemaker_endpoint.this, aws_sagemaker_endpoint.rollouts_outside_terraform]
}

resource "aws_appautoscaling_policy" "invocations" {
  count = var.autoscaling_enabled ? 1 : 0

  name               = "${var.endpoint_name}-invocations-per-instance"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[0].service_namespace
  resource_id        = aws_appautoscaling_target.this[0].resource_id
  scalable_dimension = aws_appautoscaling_target.this[0].scalable_dimension

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
  # By name, not by reference: the endpoint's rollback configuration refers to this alarm.
  dimensions = {
    EndpointName = var.endpoint_name
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
  # By name, not by reference: the endpoint's rollback configuration refers to this alarm.
  dimensions = {
    EndpointName = var.endpoint_name
    VariantName  = var.variant_name
  }
  tags = var.tags
}

# The provider waits at most 60 minutes for the endpoint to be InService after CreateEndpoint or
# UpdateEndpoint (hashicorp/terraform-provider-aws CHANGELOG 5.66.0, #39090; the resource has no
# timeouts block), whatever SageMaker's own limits. A rollout that may take longer (worst case: the new
# fleet's download and start-up windows, the bake and the old fleet's termination wait) can fail the
# apply while SageMaker carries on: say so at plan time.
check "rollout_fits_the_provider_wait" {
  assert {
    condition     = var.rollouts_outside_terraform || var.model_data_download_timeout_seconds + var.container_startup_timeout_seconds + var.rollout_bake_seconds + var.rollout_termination_wait_seconds <= 3600
    error_message = "A rollout through Terraform may take up to ${var.model_data_download_timeout_seconds + var.container_startup_timeout_seconds + var.rollout_bake_seconds + var.rollout_termination_wait_seconds} s (download + start-up + bake + termination wait), longer than the AWS provider's 60-minute endpoint wait: lower those windows, or roll out with `loom rollout` (rollouts_outside_terraform = true)."
  }
}
