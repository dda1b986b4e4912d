# POST /restyle (docs/api.md): the product photo redrawn in a style by a Stability image-to-image model on
# Bedrock. Off by default: with enable_restyle = false there is no route, no permission, no IAM statement
# and no RESTYLE_* variable (the Lambda then answers 404 "not enabled" on the path).
#
# The model is invoked on demand by foundation model id in restyle_region, which may differ from the
# API's Region: Stability models are offered in few Regions (the model card's Regional availability,
# https://docs.aws.amazon.com/bedrock/latest/userguide/models-regions.html); `loom preflight
# --restyle-model-id ... --restyle-region ...` checks that it is ACTIVE and accessible there.
# Images too large for the 6 MB Lambda response are written under restyle/ in the project bucket (SSE-KMS
# with the project key) and answered with a presigned GET URL, which S3 authorises as the Lambda role: so
# the role may put and get objects under that prefix only, and use the key for them through S3 only.
#   https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html
#   https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html (GenerateDataKey, Decrypt)

locals {
  restyle_key_prefix = "restyle/" # inference/api/visual/restyle.py RESTYLE_KEY_PREFIX (tests/api/test_restyle.py)
  restyle_model_arn  = "arn:${local.partition}:bedrock:${var.restyle_region}::foundation-model/${var.restyle_model_id}"
  restyle_bucket_arn = var.restyle_bucket_name == null ? null : "arn:${local.partition}:s3:::${var.restyle_bucket_name}"
  restyle_routes     = var.enable_restyle ? ["POST /restyle"] : []
  restyle_environment = var.enable_restyle ? {
    RESTYLE_MODEL_ID = var.restyle_model_id
    RESTYLE_REGION   = var.restyle_region
    RESTYLE_BUCKET   = var.restyle_bucket_name
  } : {}
}

resource "aws_iam_role_policy" "restyle" {
  count = var.enable_restyle ? 1 : 0

  name = "restyle"
  role = aws_iam_role.lambda.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "InvokeTheRestyleModel"
        Effect   = "Allow"
        Action   = "bedrock:InvokeModel"
        Resource = local.restyle_model_arn
      },
      {
        Sid      = "WriteAndShareRestyledImages"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:GetObject"]
        Resource = "${local.restyle_bucket_arn}/${local.restyle_key_prefix}*"
      },
      {
        Sid      = "EncryptRestyledImagesThroughS3"
        Effect   = "Allow"
        Action   = ["kms:GenerateDataKey", "kms:Decrypt"]
        Resource = var.kms_key_arn
        Condition = {
          StringEquals = { "kms:ViaService" = "s3.${local.region}.amazonaws.com" }
        }
      },
    ]
  })

  lifecycle {
    precondition {
      condition     = var.restyle_bucket_name != null
      error_message = "enable_restyle needs restyle_bucket_name (the project bucket) for images too large to return inline."
    }
  }
}
