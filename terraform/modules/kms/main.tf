# One customer-managed key for Loom's data at rest: the S3 bucket, ECR repositories, SageMaker
# data capture and volumes, Lambda environment variables and CloudWatch log groups.
# Principals in the account get access through their IAM policies (the root statement delegates
# to IAM); CloudWatch Logs gets a service statement scoped to this account's log groups.

# The CloudWatch Logs service principal differs by partition and Region (logs.<region>.amazonaws.com,
# logs.<region>.amazonaws.com.cn, ...): the provider's aws_service_principal data source knows it
# without calling AWS; logs_service_principal overrides it.
#   https://registry.terraform.io/providers/hashicorp/aws/latest/docs/data-sources/service_principal
data "aws_service_principal" "logs" {
  count        = var.logs_service_principal == null ? 1 : 0
  service_name = "logs"
  region       = local.region
}

locals {
  logs_service_principal = coalesce(var.logs_service_principal, try(data.aws_service_principal.logs[0].name, null))
}

resource "aws_kms_key" "this" {
  description             = "${var.name_prefix}: data, models, images and logs"
  enable_key_rotation     = true
  deletion_window_in_days = var.deletion_window_in_days

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersKeyThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid    = "CloudWatchLogsEncryptsThisAccountsLogGroups"
        Effect = "Allow"
        # Covers every log group of the account in this Region: the Lambda and API groups and
        # SageMaker's /aws/sagemaker/{Endpoints/<name>,TrainingJobs,TransformJobs}.
        Principal = { Service = local.logs_service_principal }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })

  tags = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name_prefix}"
  target_key_id = aws_kms_key.this.key_id
}
