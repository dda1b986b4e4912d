# Product search (docs/search.md): the CLIP endpoint (SageMaker Serverless Inference by default, or
# real-time), the search backend (the endpoint's embedded index, an OpenSearch domain or an OpenSearch
# Serverless vector collection: opensearch.tf), the POST /search, /tags and /interrogate routes on the
# existing HTTP API, and least-privilege IAM for the API Lambda. The CLIP artifact runs in the same inference image as the
# attribute model; its manifest says kind "clip".

locals {
  artifact_key    = join("/", slice(split("/", trimprefix(var.model_data_url, "s3://")), 1, length(split("/", trimprefix(var.model_data_url, "s3://")))))
  artifact_bucket = split("/", trimprefix(var.model_data_url, "s3://"))[0]
  artifact_prefix = join("/", slice(split("/", local.artifact_key), 0, length(split("/", local.artifact_key)) - 1))
  bucket_arn      = "arn:${var.partition}:s3:::${var.bucket_name}"

  endpoint_name = "${var.name_prefix}-clip"
  endpoint_arn  = "arn:${var.partition}:sagemaker:${var.region}:${var.account_id}:endpoint/${local.endpoint_name}"
  log_group_arn = "arn:${var.partition}:logs:${var.region}:${var.account_id}:log-group:/aws/sagemaker/Endpoints/${local.endpoint_name}"
  serverless    = var.endpoint_type == "serverless"
  model_name    = "${local.endpoint_name}-${substr(sha1(jsonencode([var.image_uri, var.model_data_url])), 0, 8)}"
  config_name   = "${local.endpoint_name}-${substr(sha1(jsonencode([local.model_name, var.endpoint_type, var.serverless_memory_mb, var.serverless_max_concurrency, var.instance_type, var.instance_count])), 0, 8)}"
  # NVMe instance storage is hardware-encrypted and refuses KmsKeyId; Serverless Inference takes no key either.
  local_storage_instance = can(regex("^ml\\.(c5d|m5d|r5d|g4dn|g5|g6|g6e|p3dn|p4d|p4de|p5|trn1)\\.", var.instance_type))
  endpoint_kms_key       = local.serverless || local.local_storage_instance ? null : var.kms_key_arn

  clip_routes       = toset(["POST /search", "POST /tags", "POST /interrogate"])
  lambda_role_name  = element(split("/", var.lambda_role_arn), length(split("/", var.lambda_role_arn)) - 1)
  lambda_invoke_arn = "arn:${var.partition}:apigateway:${var.region}:lambda:path/2015-03-31/functions/${var.lambda_function_arn}/invocations"
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
      Condition = { StringEquals = { "aws:SourceAccount" = var.account_id } }
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
        Action   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        Resource = [local.log_group_arn, "${local.log_group_arn}:*"]
      },
    ]
  })
}

resource "aws_sagemaker_model" "clip" {
  name                     = local.model_name
  execution_role_arn       = aws_iam_role.model.arn
  enable_network_isolation = true

  primary_container {
    image          = var.image_uri
    model_data_url = var.model_data_url
    environment    = { MAX_BODY_MB = "6" } # InvokeEndpoint's own limit is 6 MB
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
  #checkov:skip=CKV_AWS_98:The key is set for every variant that accepts one; Serverless Inference and NVMe instance types refuse KmsKeyId (their storage is encrypted by AWS).
  name        = local.config_name
  kms_key_arn = local.endpoint_kms_key

  production_variants {
    variant_name           = "AllTraffic"
    model_name             = aws_sagemaker_model.clip.name
    instance_type          = local.serverless ? null : var.instance_type
    initial_instance_count = local.serverless ? null : var.instance_count

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

resource "aws_sagemaker_endpoint" "clip" {
  name                 = local.endpoint_name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.clip.name
  tags                 = var.tags
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
  source_arn = "arn:${var.partition}:execute-api:${var.region}:${var.account_id}:${var.api_id}/*/${replace(each.key, " /", "/")}"
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
