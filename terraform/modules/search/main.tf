# Product search (docs/search.md): the CLIP endpoint (SageMaker Serverless Inference by default, or
# real-time), the search backend (the endpoint's embedded index, an OpenSearch domain or an OpenSearch
# Serverless vector collection: opensearch.tf), the POST /search, /tags and /interrogate routes on the
# existing HTTP API, and least-privilege IAM for the API Lambda. The CLIP artifact runs in the same inference image as the
# attribute model; its manifest says kind "clip".

locals {
  artifact_key    = join("/", slice(split("/", trimprefix(var.model_data_url, "s3://")), 1, length(split("/", trimprefix(var.model_data_url, "s3://")))))
  artifact_bucket = split("/", trimprefix(var.model_data_url, "s3://"))[0]
  artifact_prefix = join("/", slice(split("/", local.artifact_key), 0, length(split("/", local.artifact_key)) - 1))
  bucket_arn      = "arn:${local.partition}:s3:::${var.bucket_name}"

  endpoint_name  = "${var.name_prefix}-clip"
  endpoint_arn   = "arn:${local.partition}:sagemaker:${local.region}:${local.account_id}:endpoint/${local.endpoint_name}"
  log_group_name = "/aws/sagemaker/Endpoints/${local.endpoint_name}"
  log_group_arn  = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}"
  serverless     = var.endpoint_type == "serverless"

  # What each endpoint type accepts (docs/search.md, "Limits per endpoint type"):
  # - Serverless Inference refuses network isolation (and VPC configuration, data capture, GPUs, more than
  #   one variant): SageMaker guide, "Deploy models with Amazon SageMaker Serverless Inference", feature
  #   exclusions, https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html. Real-time
  #   endpoints keep the model network-isolated.
  # - Request and response payloads: 4 MB on Serverless Inference (same guide, invoke limits), 6 MB on
  #   real-time InvokeEndpoint (API_runtime_InvokeEndpoint.html; botocore's sagemaker-runtime model caps
  #   Body at 6291456 bytes). The Lambda refuses larger requests with a 413 (SEARCH_MAX_REQUEST_BYTES); the
  #   container's MAX_BODY_MB (MiB) is a backstop.
  # - Serverless Inference allows the container 3 minutes to answer /ping: the server gives up loading
  #   (MODEL_LOAD_TIMEOUT) before that, so that a slow load fails with the server's message.
  network_isolation  = !local.serverless
  max_request_bytes  = local.serverless ? 4000000 : 6291456
  serverless_ping_s  = 180
  model_load_timeout = local.serverless ? local.serverless_ping_s - 30 : var.container_startup_timeout_seconds - 120
  model_environment = {
    MAX_BODY_MB        = local.serverless ? "4" : "6"
    MODEL_LOAD_TIMEOUT = tostring(local.model_load_timeout)
  }
  model_name  = "${local.endpoint_name}-${substr(sha1(jsonencode([var.image_uri, var.model_data_url, local.network_isolation, local.model_environment])), 0, 8)}"
  config_name = "${local.endpoint_name}-${substr(sha1(jsonencode([local.model_name, var.endpoint_type, var.serverless_memory_mb, var.serverless_max_concurrency, var.instance_type, var.instance_count, var.container_startup_timeout_seconds])), 0, 8)}"
  # NVMe instance storage is hardware-encrypted and KmsKeyId does not encrypt it (the rule of modules/instance_storage,
  # shared with the endpoint module); Serverless Inference takes no key either.
  local_storage_instance = module.instance_storage.local_storage[var.instance_type]
  endpoint_kms_key       = local.serverless || local.local_storage_instance ? null : var.kms_key_arn

  clip_routes       = toset(["POST /search", "POST /tags", "POST /interrogate"])
  lambda_role_name  = element(split("/", var.lambda_role_arn), length(split("/", var.lambda_role_arn)) - 1)
  lambda_invoke_arn = "arn:${local.partition}:apigateway:${local.region}:lambda:path/2015-03-31/functions/${var.lambda_function_arn}/invocations"
}

module "instance_storage" {
  source         = "../instance_storage"
  instance_types = [var.instance_type]
}

# ---------------------------------------------------------------------------------------------
# The CLIP model's execution role: read only the artifact's prefix, pull only the inference image
# ---------------------------------------------------------------------------------------------
resource "aws_iam_role" "model" {
  name        = "${local.endpoint_name}-sagemaker-model"
  description = "SageMaker CLIP model ${local.endpoint_name}: search endpoint and embedding batch transform"
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
  name = "clip-model"
  role = aws_iam_role.model.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "ReadModelArtifact", Effect = "Allow", Action = "s3:GetObject", Resource = "${local.bucket_arn}/${local.artifact_prefix}/*" },
      { Sid = "UseBucketKey", Effect = "Allow", Action = ["kms:Decrypt", "kms:DescribeKey"], Resource = var.kms_key_arn },
      {
        Sid      = "PullInferenceImage"
        Effect   = "Allow"
        Action   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
        Resource = var.repository_arn
      },
      # GetAuthorizationToken has no resource-level permissions: AWS requires "*".
      { Sid = "EcrLogin", Effect = "Allow", Action = "ecr:GetAuthorizationToken", Resource = "*" },
      {
        Sid      = "EndpointLogs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        Resource = [local.log_group_arn, "${local.log_group_arn}:*"]
      },
    ]
  })
}

resource "aws_sagemaker_model" "clip" {
  #checkov:skip=CKV_AWS_370:Network isolation is on for real-time endpoints; Serverless Inference refuses it (feature exclusions, serverless-endpoints.html).
  name                     = local.model_name
  execution_role_arn       = aws_iam_role.model.arn
  enable_network_isolation = local.network_isolation

  primary_container {
    image          = var.image_uri
    model_data_url = var.model_data_url
    environment    = local.model_environment
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = local.artifact_bucket == var.bucket_name
      error_message = "model_data_url must lie in the Loom bucket ${var.bucket_name}; got ${var.model_data_url}."
    }
  }

  depends_on = [aws_iam_role_policy.model]
}

resource "aws_sagemaker_endpoint_configuration" "clip" {
  #checkov:skip=CKV_AWS_98:The key is set for every variant that accepts one; Serverless Inference refuses KmsKeyId, and on NVMe instance types it does not encrypt local storage, which the instance encrypts in hardware.
  name        = local.config_name
  kms_key_arn = local.endpoint_kms_key

  production_variants {
    variant_name           = "AllTraffic"
    model_name             = aws_sagemaker_model.clip.name
    instance_type          = local.serverless ? null : var.instance_type
    initial_instance_count = local.serverless ? null : var.instance_count
    # Real-time only: ProductionVariant's start-up health check window (60-3600 s, API_ProductionVariant.html).
    # Serverless Inference has its fixed 3-minute /ping window and takes neither setting.
    container_startup_health_check_timeout_in_seconds = local.serverless ? null : var.container_startup_timeout_seconds

    dynamic "serverless_config" {
      for_each = local.serverless ? [1] : []
      content {
        memory_size_in_mb = var.serverless_memory_mb
        max_concurrency   = var.serverless_max_concurrency
      }
    }
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

# SageMaker would create this group itself, unencrypted and kept forever.
resource "aws_cloudwatch_log_group" "clip" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_sagemaker_endpoint" "clip" {
  name                 = local.endpoint_name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.clip.name
  tags                 = var.tags
  depends_on           = [aws_cloudwatch_log_group.clip]
}

# ---------------------------------------------------------------------------------------------
# The API: POST /search, /tags and /interrogate on the existing HTTP API, answered by the existing
# Lambda (inference/api/visual/search.py, clip_tasks.py): products by text or photo, a photo's zero-shot tags,
# a prompt that describes a photo
# ---------------------------------------------------------------------------------------------
resource "aws_apigatewayv2_integration" "search" {
  api_id                 = var.api_id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = local.lambda_invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "clip" {
  for_each = local.clip_routes

  api_id             = var.api_id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.search.id}"
  authorization_type = var.route_authorization_type
  authorizer_id      = var.route_authorization_type == "JWT" ? var.route_authorizer_id : null

  lifecycle {
    precondition {
      condition     = var.route_authorization_type != "JWT" || var.route_authorizer_id != null
      error_message = "route_authorization_type JWT needs route_authorizer_id."
    }
  }
}

resource "aws_lambda_permission" "clip" {
  for_each = local.clip_routes

  statement_id  = "AllowHttpApi-${replace(each.key, "/[^A-Za-z0-9]+/", "-")}"
  action        = "lambda:InvokeFunction"
  function_name = var.lambda_function_arn
  principal     = "apigateway.amazonaws.com"
  # Only this route of this API may invoke the function through this permission.
  source_arn = "arn:${local.partition}:execute-api:${local.region}:${local.account_id}:${var.api_id}/*/${replace(each.key, " /", "/")}"
}

# Deployments made before /tags and /interrogate keep their /search route and permission.
moved {
  from = aws_apigatewayv2_route.search
  to   = aws_apigatewayv2_route.clip["POST /search"]
}

moved {
  from = aws_lambda_permission.search
  to   = aws_lambda_permission.clip["POST /search"]
}

# The API Lambda may invoke the CLIP endpoint and query (never write) the search backend.
resource "aws_iam_role_policy" "lambda_search" {
  name = "search"
  role = local.lambda_role_name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{ Sid = "InvokeClipEndpoint", Effect = "Allow", Action = "sagemaker:InvokeEndpoint", Resource = local.endpoint_arn }],
      var.search_backend == "opensearch_domain" ? [{
        Sid      = "QueryDomain"
        Effect   = "Allow"
        Action   = ["es:ESHttpGet", "es:ESHttpPost", "es:ESHttpHead"]
        Resource = "${local.domain_arn}/${var.opensearch_index}*"
      }] : [],
      var.search_backend == "opensearch_serverless" ? [{
        # aoss:APIAccessAll lets requests reach the collection; the data-access policy limits them to reads.
        Sid      = "QueryCollection"
        Effect   = "Allow"
        Action   = "aoss:APIAccessAll"
        Resource = aws_opensearchserverless_collection.search[0].arn
      }] : [],
    )
  })
}
