# ECR repositories <name_prefix>-training and <name_prefix>-inference: immutable tags (CI tags
# images with the commit SHA), scan on push, KMS encryption.
#
# The lifecycle policy never expires an image by age or count alone: a running endpoint (and every
# scale-out or instance replacement) pulls its tag again, so `tagStatus = any` with "keep the last
# N" would delete the image in use after N pushes. It expires untagged images and images with a tag
# that starts with a prefix CI marks as disposable (e.g. ci-<sha> of branch builds). Such a rule
# looks at an image's tags, so an image that also carries a disposable tag may expire with it:
# deploy only images that carry none.
#   https://docs.aws.amazon.com/AmazonECR/latest/userguide/lifecycle_policy_parameters.html

locals {
  repositories = toset(["training", "inference"])
}

resource "aws_ecr_repository" "this" {
  for_each = local.repositories

  name                 = "${var.name_prefix}-${each.key}"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_delete

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }

  tags = var.tags
}

locals {
  lifecycle_rules = concat(
    [{
      rulePriority = 1
      description  = "Expire untagged images after ${var.untagged_expire_days} days"
      selection = {
        tagStatus   = "untagged"
        countType   = "sinceImagePushed"
        countUnit   = "days"
        countNumber = var.untagged_expire_days
      }
      action = { type = "expire" }
    }],
    [for i, prefix in var.disposable_tag_prefixes : {
      rulePriority = 10 + i
      description  = "Keep the last ${var.keep_last_images} images tagged ${prefix}*"
      selection = {
        tagStatus     = "tagged"
        tagPrefixList = [prefix]
        countType     = "imageCountMoreThan"
        countNumber   = var.keep_last_images
      }
      action = { type = "expire" }
    }],
  )
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each = aws_ecr_repository.this

  repository = each.value.name
  policy     = jsonencode({ rules = local.lifecycle_rules })
}
