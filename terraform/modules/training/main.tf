# The execution role SageMaker training jobs run as. The jobs themselves are started by
# `python -m training.launch` (plain boto3): the AWS provider has no training-job resource.
#
# Least privilege: read data/, read+write checkpoints/, write models/, pull only the training
# image, write only training-job logs and metrics, use the bucket's KMS key.

locals {
  log_group_arn = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/sagemaker/TrainingJobs"
}

resource "aws_iam_role" "training" {
  name        = "${var.name_prefix}-sagemaker-training"
  description = "SageMaker training jobs for ${var.name_prefix}"
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

resource "aws_iam_role_policy" "training" {
  name = "training-job"
  role = aws_iam_role.training.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "ListOwnPrefixes"
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = var.bucket_arn
        Condition = { StringLike = { "s3:prefix" = ["data/*", "checkpoints/*", "models/*"] } }
      },
      {
        Sid      = "ReadTrainingData"
        Effect   = "Allow"
        Action   = "s3:GetObject"
        Resource = ["${var.bucket_arn}/data/*", "${var.bucket_arn}/checkpoints/*"]
      },
      {
        Sid      = "WriteModelsAndCheckpoints"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"]
        Resource = ["${var.bucket_arn}/models/*", "${var.bucket_arn}/checkpoints/*"]
      },
      {
        Sid      = "UseBucketKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
        Resource = var.kms_key_arn
      },
      {
        Sid       = "EncryptTrainingVolumesWithBucketKey"
        Effect    = "Allow"
        Action    = "kms:CreateGrant"
        Resource  = var.kms_key_arn
        Condition = { Bool = { "kms:GrantIsForAWSResource" = "true" } }
      },
      {
        Sid      = "PullTrainingImage"
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
        Sid      = "TrainingJobLogs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        Resource = [local.log_group_arn, "${local.log_group_arn}:*"]
      },
      {
        # PutMetricData has no resource-level permissions; the namespace condition scopes it.
        Sid       = "TrainingJobMetrics"
        Effect    = "Allow"
        Action    = "cloudwatch:PutMetricData"
        Resource  = "*"
        Condition = { StringLike = { "cloudwatch:namespace" = "/aws/sagemaker/TrainingJobs" } }
      },
    ]
  })
}

# SageMaker's account-wide job log groups, created here with the KMS key and a retention; SageMaker
# would otherwise create them unencrypted and keep them forever. An account that already has them
# (from earlier jobs) sets create_job_log_groups = false or imports them (docs/deploy.md).
resource "aws_cloudwatch_log_group" "jobs" {
  for_each = var.create_job_log_groups ? toset(["TrainingJobs", "TransformJobs"]) : toset([])

  name              = "/aws/sagemaker/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}
