# The Loom bucket (prefixes data/, models/, checkpoints/, batch/, capture/, restyle/) and the bucket that
# receives its S3 server access logs.

locals {
  bucket_name      = coalesce(var.bucket_name, "${var.name_prefix}-data-${local.account_id}-${local.region}")
  logs_bucket_name = "${substr(local.bucket_name, 0, 57)}-logs"
}

# ---------------------------------------------------------------------------------------------
# Data and model artifacts
# ---------------------------------------------------------------------------------------------
resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice per deployment; data is re-creatable from the catalog and models from training, and versioning guards against deletion.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; training and batch jobs are started explicitly by training.launch.
  bucket        = local.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_policy" "data" {
  bucket = aws_s3_bucket.data.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.data.arn, "${aws_s3_bucket.data.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
  depends_on = [aws_s3_bucket_public_access_block.data]
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    id     = "abort-incomplete-uploads-and-expire-old-versions"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  rule {
    id     = "expire-checkpoints"
    status = "Enabled"
    filter {
      prefix = "checkpoints/"
    }
    expiration {
      days = var.checkpoint_expiration_days
    }
  }

  rule {
    id     = "expire-batch-output"
    status = "Enabled"
    filter {
      prefix = "batch/output/"
    }
    expiration {
      days = var.batch_output_expiration_days
    }
  }

  # POST /restyle writes images too large to return inline under restyle/ and hands out a URL valid for
  # 15 minutes (inference/api/visual/restyle.py): one day is plenty.
  rule {
    id     = "expire-restyled-images"
    status = "Enabled"
    filter {
      prefix = "restyle/"
    }
    expiration {
      days = 1
    }
  }

  rule {
    id     = "expire-data-capture"
    status = "Enabled"
    filter {
      prefix = "capture/"
    }
    expiration {
      days = var.capture_expiration_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.data]
}

resource "aws_s3_bucket_logging" "data" {
  count         = var.access_logging_enabled ? 1 : 0
  bucket        = aws_s3_bucket.data.id
  target_bucket = aws_s3_bucket.logs[0].id
  target_prefix = "s3-access/"

  # S3 checks that the target bucket lets the logging service write before it accepts this.
  depends_on = [aws_s3_bucket_policy.logs]
}

# ---------------------------------------------------------------------------------------------
# Server access logs
# ---------------------------------------------------------------------------------------------
resource "aws_s3_bucket" "logs" {
  # No access logging of its own: logging the log bucket to itself would log its own deliveries.
  #checkov:skip=CKV_AWS_145:S3 server access logging can only deliver to buckets encrypted with SSE-S3 (AES256), not SSE-KMS.
  #checkov:skip=CKV_AWS_144:Access logs are kept for audit in-region for a limited time; replicating them is not worth the cost here.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events from the access-log bucket.
  count         = var.access_logging_enabled ? 1 : 0
  bucket        = local.logs_bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  count  = var.access_logging_enabled ? 1 : 0
  bucket = aws_s3_bucket.logs[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  count                   = var.access_logging_enabled ? 1 : 0
  bucket                  = aws_s3_bucket.logs[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  count  = var.access_logging_enabled ? 1 : 0
  bucket = aws_s3_bucket.logs[0].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  count  = var.access_logging_enabled ? 1 : 0
  bucket = aws_s3_bucket.logs[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  count  = var.access_logging_enabled ? 1 : 0
  bucket = aws_s3_bucket.logs[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "S3ServerAccessLogsFromTheDataBucket"
        Effect    = "Allow"
        Principal = { Service = "logging.s3.amazonaws.com" }
        Action    = "s3:PutObject"
        Resource  = "${aws_s3_bucket.logs[0].arn}/s3-access/*"
        Condition = {
          ArnLike      = { "aws:SourceArn" = aws_s3_bucket.data.arn }
          StringEquals = { "aws:SourceAccount" = local.account_id }
        }
      },
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [aws_s3_bucket.logs[0].arn, "${aws_s3_bucket.logs[0].arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
  depends_on = [aws_s3_bucket_public_access_block.logs]
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  count  = var.access_logging_enabled ? 1 : 0
  bucket = aws_s3_bucket.logs[0].id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    expiration {
      days = var.access_log_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.logs]
}
