# Phase 1 (foundation) and the modules it is made of: wiring and security defaults.
# Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

mock_provider "aws" {
  source = "./tests/mocks"
  # Mocked computed values (ARNs, URLs) are known at plan time, so every run can be a plan.
  override_during = plan
}

variables {
  region      = "us-east-1"
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
}

run "root_phase_one_creates_no_serving" {
  command = plan

  variables {
    github_repository = "example-org/loom"
  }

  assert {
    condition     = output.serving_enabled == false && output.endpoint_name == null && output.api_url == null && output.lambda_role_arn == null
    error_message = "Without model_data_url the endpoint and API must not be created."
  }

  assert {
    condition     = output.bucket_name == "loom-data-123456789012-us-east-1"
    error_message = "The default bucket name must be <name_prefix>-data-<account>-<region>."
  }

  assert {
    condition     = output.ci_role_arn != null && output.training_role_arn != null
    error_message = "Phase 1 must output the training and CI role ARNs."
  }
}

run "root_without_github_repository_creates_no_ci_role" {
  command = plan

  assert {
    condition     = output.ci_role_arn == null
    error_message = "No CI role may exist unless github_repository is set."
  }
}

run "kms_key_rotates" {
  command = plan

  module {
    source = "./modules/kms"
  }

  variables {
    name_prefix = "loom"
  }

  assert {
    condition     = aws_kms_key.this.enable_key_rotation && aws_kms_key.this.deletion_window_in_days == 30
    error_message = "The KMS key must rotate and keep the 30-day deletion window by default."
  }

  assert {
    condition = alltrue([
      for s in jsondecode(aws_kms_key.this.policy).Statement :
      s.Principal != "*" && try(s.Principal.AWS, "") != "*"
    ])
    error_message = "The key policy must not name a wildcard principal."
  }
}

run "storage_is_private_encrypted_versioned_logged" {
  command = plan

  module {
    source = "./modules/storage"
  }

  variables {
    name_prefix = "loom"
  }

  assert {
    condition = alltrue([
      aws_s3_bucket_public_access_block.data.block_public_acls,
      aws_s3_bucket_public_access_block.data.block_public_policy,
      aws_s3_bucket_public_access_block.data.ignore_public_acls,
      aws_s3_bucket_public_access_block.data.restrict_public_buckets,
    ])
    error_message = "All public access must be blocked on the data bucket."
  }

  assert {
    condition     = aws_s3_bucket_versioning.data.versioning_configuration[0].status == "Enabled"
    error_message = "The data bucket must be versioned."
  }

  assert {
    condition = anytrue([
      for r in aws_s3_bucket_server_side_encryption_configuration.data.rule :
      anytrue([for d in r.apply_server_side_encryption_by_default : d.sse_algorithm == "aws:kms" && d.kms_master_key_id == var.kms_key_arn])
    ])
    error_message = "The data bucket must default to SSE-KMS with the Loom key."
  }

  assert {
    condition = anytrue([
      for s in jsondecode(aws_s3_bucket_policy.data.policy).Statement :
      s.Effect == "Deny" && try(s.Condition.Bool["aws:SecureTransport"], "") == "false" && s.Action == "s3:*"
    ])
    error_message = "The data bucket policy must deny every request without TLS."
  }

  assert {
    condition     = length(aws_s3_bucket_lifecycle_configuration.data.rule) >= 3 && anytrue([for r in aws_s3_bucket_lifecycle_configuration.data.rule : length(r.abort_incomplete_multipart_upload) > 0])
    error_message = "The data bucket needs lifecycle rules, including aborting incomplete uploads."
  }

  assert {
    condition     = aws_s3_bucket_logging.data[0].target_bucket == aws_s3_bucket.logs[0].id
    error_message = "Access logs of the data bucket must go to the log bucket."
  }

  assert {
    condition = anytrue([
      for s in jsondecode(aws_s3_bucket_policy.logs[0].policy).Statement :
      s.Effect == "Deny" && try(s.Condition.Bool["aws:SecureTransport"], "") == "false"
    ]) && aws_s3_bucket_public_access_block.logs[0].restrict_public_buckets
    error_message = "The log bucket must be private and TLS-only too."
  }

  assert {
    condition     = aws_s3_bucket.data.force_destroy == false
    error_message = "Buckets must not be force-destroyed by default."
  }
}

run "registry_is_immutable_scanned_encrypted" {
  command = plan

  module {
    source = "./modules/registry"
  }

  variables {
    name_prefix      = "loom"
    keep_last_images = 15
  }

  assert {
    condition     = toset([for r in aws_ecr_repository.this : r.name]) == toset(["loom-training", "loom-inference"])
    error_message = "The repositories must be loom-training and loom-inference."
  }

  assert {
    condition = alltrue([
      for r in aws_ecr_repository.this :
      r.image_tag_mutability == "IMMUTABLE" && r.image_scanning_configuration[0].scan_on_push && r.encryption_configuration[0].encryption_type == "KMS" && r.encryption_configuration[0].kms_key == var.kms_key_arn && !r.force_delete
    ])
    error_message = "Repositories must have immutable tags, scan on push and KMS encryption, and no force delete."
  }

  # A running endpoint pulls its tag again on scale-out: no rule may select every image
  # (tagStatus = any); only untagged images and disposable tag prefixes expire.
  # https://docs.aws.amazon.com/AmazonECR/latest/userguide/lifecycle_policy_parameters.html
  assert {
    condition = alltrue([
      for p in aws_ecr_lifecycle_policy.this : alltrue([
        for r in jsondecode(p.policy).rules :
        r.selection.tagStatus == "untagged" || try(r.selection.tagStatus == "tagged" && length(r.selection.tagPrefixList) == 1 && contains(["ci-", "pr-"], r.selection.tagPrefixList[0]), false)
      ])
    ])
    error_message = "The lifecycle may expire only untagged images and disposable (ci-, pr-) tags, never any tagged image."
  }

  assert {
    condition = alltrue([
      for p in aws_ecr_lifecycle_policy.this : length([
        for r in jsondecode(p.policy).rules : r if r.selection.tagStatus == "tagged" && r.selection.countType == "imageCountMoreThan" && r.selection.countNumber == 15
      ]) == 2 && length([for r in jsondecode(p.policy).rules : r if r.selection.tagStatus == "untagged"]) == 1
    ])
    error_message = "Each disposable prefix keeps keep_last_images images; untagged images expire."
  }
}

run "training_role_is_least_privilege" {
  command = plan

  module {
    source = "./modules/training"
  }

  variables {
    name_prefix    = "loom"
    bucket_arn     = "arn:aws:s3:::loom-data-123456789012-us-east-1"
    repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/loom-training"
  }

  assert {
    condition     = jsondecode(aws_iam_role.training.assume_role_policy).Statement[0].Principal.Service == "sagemaker.amazonaws.com"
    error_message = "Only SageMaker may assume the training role."
  }

  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.training.policy).Statement : s.Resource if s.Sid == "ReadTrainingData"
    ])) == toset(["arn:aws:s3:::loom-data-123456789012-us-east-1/data/*", "arn:aws:s3:::loom-data-123456789012-us-east-1/checkpoints/*"])
    error_message = "The training role reads data/ and checkpoints/ only."
  }

  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.training.policy).Statement : s.Resource if s.Sid == "WriteModelsAndCheckpoints"
    ])) == toset(["arn:aws:s3:::loom-data-123456789012-us-east-1/models/*", "arn:aws:s3:::loom-data-123456789012-us-east-1/checkpoints/*"])
    error_message = "The training role writes models/ and checkpoints/ only."
  }

  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.training.policy).Statement :
      s.Resource != "*" || contains(["ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"], s.Action)
    ])
    error_message = "Only actions without resource-level permissions may use Resource \"*\"."
  }

  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.training.policy).Statement : s.Resource if s.Sid == "PullTrainingImage"
    ]) == var.repository_arn
    error_message = "The training role pulls from the training repository only."
  }
}

run "ci_role_is_limited_to_repo_branch_and_repositories" {
  command = plan

  module {
    source = "./modules/ci"
  }

  variables {
    name_prefix       = "loom"
    github_repository = "example-org/loom"
    repository_arns = [
      "arn:aws:ecr:us-east-1:123456789012:repository/loom-training",
      "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference",
    ]
  }

  # By default only main: a tag pattern would give ECR push rights to whoever may push a tag.
  assert {
    condition     = jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition.StringLike["token.actions.githubusercontent.com:sub"] == ["repo:example-org/loom:ref:refs/heads/main"]
    error_message = "By default only the main branch of the configured repository may assume the CI role (no tags, no environment)."
  }

  assert {
    condition     = jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    error_message = "The CI trust policy must check the token audience."
  }

  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.push_images.policy).Statement : s.Resource if s.Sid == "PushToLoomRepositories"
    ])) == toset(var.repository_arns)
    error_message = "CI may push only to the two Loom repositories."
  }

  assert {
    condition     = length(aws_iam_openid_connect_provider.github) == 1 && aws_iam_openid_connect_provider.github[0].url == "https://token.actions.githubusercontent.com"
    error_message = "The GitHub OIDC provider must be created when none is given."
  }
}

run "ci_reuses_an_existing_oidc_provider" {
  command = plan

  module {
    source = "./modules/ci"
  }

  variables {
    name_prefix        = "loom"
    github_repository  = "example-org/loom"
    github_tag_pattern = null
    oidc_provider_arn  = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    repository_arns    = ["arn:aws:ecr:us-east-1:123456789012:repository/loom-training"]
  }

  assert {
    condition     = length(aws_iam_openid_connect_provider.github) == 0
    error_message = "An existing OIDC provider must be reused, not duplicated."
  }

  assert {
    condition     = jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition.StringLike["token.actions.githubusercontent.com:sub"] == ["repo:example-org/loom:ref:refs/heads/main"]
    error_message = "With github_tag_pattern = null only the branch may assume the role."
  }
}

# Release tags through a protected GitHub environment: a job that names an environment gets the OIDC
# subject repo:<owner>/<name>:environment:<name> (GitHub, "About security hardening with OpenID Connect",
# example subject claims); the environment's required reviewers approve each release.
run "ci_trusts_releases_only_through_the_named_environment" {
  command = plan

  module {
    source = "./modules/ci"
  }

  variables {
    name_prefix                = "loom"
    github_repository          = "example-org/loom"
    github_release_environment = "release"
    repository_arns            = ["arn:aws:ecr:us-east-1:123456789012:repository/loom-training"]
  }

  assert {
    condition = jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition.StringLike["token.actions.githubusercontent.com:sub"] == [
      "repo:example-org/loom:ref:refs/heads/main",
      "repo:example-org/loom:environment:release",
    ]
    error_message = "With github_release_environment the role trusts main and that environment, and no tag ref."
  }
}

run "ci_environment_takes_no_wildcards" {
  command = plan

  module {
    source = "./modules/ci"
  }

  variables {
    name_prefix                = "loom"
    github_repository          = "example-org/loom"
    github_release_environment = "*"
    repository_arns            = ["arn:aws:ecr:us-east-1:123456789012:repository/loom-training"]
  }

  expect_failures = [var.github_release_environment]
}

run "root_ci_trusts_no_tags_by_default" {
  command = plan

  variables {
    github_repository = "example-org/loom"
    model_data_url    = null
  }

  assert {
    condition     = var.github_tag_pattern == null && var.github_release_environment == null
    error_message = "The root module must trust no tag and no environment unless asked."
  }
}
