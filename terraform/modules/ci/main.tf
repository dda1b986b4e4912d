# GitHub Actions OIDC: a role that one repository's main branch can assume to push to the two Loom ECR
# repositories, and to nothing else. Release tags are trusted only through a GitHub environment that the
# operator has protected (required reviewers, deployment tag rule): a workflow job that names an
# environment gets the OIDC subject repo:<owner>/<name>:environment:<environment> instead of its ref.
#   https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect#example-subject-claims
# A bare tag pattern (github_tag_pattern) trusts whoever may push a matching tag; it is off by default.

locals {
  create_provider = var.oidc_provider_arn == null
  provider_arn    = local.create_provider ? aws_iam_openid_connect_provider.github[0].arn : var.oidc_provider_arn
  subjects = concat(
    ["repo:${var.github_repository}:ref:refs/heads/${var.github_branch}"],
    var.github_release_environment == null ? [] : ["repo:${var.github_repository}:environment:${var.github_release_environment}"],
    var.github_tag_pattern == null ? [] : ["repo:${var.github_repository}:ref:refs/tags/${var.github_tag_pattern}"],
  )
}

resource "aws_iam_openid_connect_provider" "github" {
  count          = local.create_provider ? 1 : 0
  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  # AWS trusts GitHub's OIDC endpoint through its own CA list; the thumbprints are kept for
  # older IAM behaviour that still requires them.
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
  tags            = var.tags
}

resource "aws_iam_role" "ci" {
  name                 = "${var.name_prefix}-github-actions"
  description          = "GitHub Actions in ${var.github_repository}: push Loom images"
  max_session_duration = 3600
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = local.provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = { "token.actions.githubusercontent.com:aud" = "sts.amazonaws.com" }
        StringLike   = { "token.actions.githubusercontent.com:sub" = local.subjects }
      }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "push_images" {
  name = "push-loom-images"
  role = aws_iam_role.ci.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # GetAuthorizationToken has no resource-level permissions: AWS requires "*".
        Sid      = "EcrLogin"
        Effect   = "Allow"
        Action   = "ecr:GetAuthorizationToken"
        Resource = "*"
      },
      {
        Sid    = "PushToLoomRepositories"
        Effect = "Allow"
        Action = [
          "ecr:BatchCheckLayerAvailability",
          "ecr:BatchGetImage",
          "ecr:GetDownloadUrlForLayer",
          "ecr:InitiateLayerUpload",
          "ecr:UploadLayerPart",
          "ecr:CompleteLayerUpload",
          "ecr:PutImage",
          "ecr:DescribeImages",
        ]
        Resource = var.repository_arns
      },
    ]
  })
}
