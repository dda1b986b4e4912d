# Where a cross-Region inference profile may be called from (modules/api/bedrock.tf, the precondition on
# the Lambda's role policy): exactly the source Regions of inference/api/describe.py profile_callable_from.
# jp. is Tokyo and Osaka, au. is Sydney and Melbourne: Seoul (ap-northeast-2) and Singapore (ap-southeast-1)
# have apac. only; apac. is also called from me-central-1; us. is not GovCloud; global. is commercial only.
#   https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html
# tests/infra/test_terraform_bedrock_regions.py keeps the Terraform sets equal to describe.py's.
# Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  region          = "us-east-1"
  kms_key_arn     = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  lambda_zip_path = "tests/fixtures/lambda.zip"
  name_prefix     = "loom"
  endpoint_name   = "loom-endpoint"
  endpoint_arn    = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
  bucket_name     = "loom-data-123456789012-us-east-1"
  repository_arn  = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
  image_uri       = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
  model_data_url  = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
}

run "jp_profile_is_refused_in_seoul" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-northeast-2" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-northeast-2:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "jp.anthropic.claude-sonnet-4-6"
  }
  # jp.anthropic.claude-sonnet-4-6 cannot be called from ap-northeast-2: the role policy's precondition refuses the plan.
  expect_failures = [aws_iam_role_policy.lambda]
}

run "jp_profile_is_allowed_in_tokyo" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-northeast-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-northeast-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "jp.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:ap-northeast-1:123456789012:inference-profile/jp.anthropic.claude-sonnet-4-6"
    error_message = "jp.anthropic.claude-sonnet-4-6 can be called from ap-northeast-1: the plan must pass and grant the profile of this Region."
  }
}

run "jp_profile_is_allowed_in_osaka" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-northeast-3" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-northeast-3:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "jp.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:ap-northeast-3:123456789012:inference-profile/jp.anthropic.claude-sonnet-4-6"
    error_message = "jp.anthropic.claude-sonnet-4-6 can be called from ap-northeast-3: the plan must pass and grant the profile of this Region."
  }
}

run "au_profile_is_refused_in_singapore" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-southeast-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-southeast-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "au.anthropic.claude-sonnet-4-6"
  }
  # au.anthropic.claude-sonnet-4-6 cannot be called from ap-southeast-1: the role policy's precondition refuses the plan.
  expect_failures = [aws_iam_role_policy.lambda]
}

run "au_profile_is_allowed_in_sydney" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-southeast-2" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-southeast-2:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "au.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:ap-southeast-2:123456789012:inference-profile/au.anthropic.claude-sonnet-4-6"
    error_message = "au.anthropic.claude-sonnet-4-6 can be called from ap-southeast-2: the plan must pass and grant the profile of this Region."
  }
}

run "au_profile_is_allowed_in_melbourne" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-southeast-4" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-southeast-4:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "au.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:ap-southeast-4:123456789012:inference-profile/au.anthropic.claude-sonnet-4-6"
    error_message = "au.anthropic.claude-sonnet-4-6 can be called from ap-southeast-4: the plan must pass and grant the profile of this Region."
  }
}

run "apac_profile_is_allowed_in_seoul" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-northeast-2" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-northeast-2:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "apac.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:ap-northeast-2:123456789012:inference-profile/apac.anthropic.claude-sonnet-4-6"
    error_message = "apac.anthropic.claude-sonnet-4-6 can be called from ap-northeast-2: the plan must pass and grant the profile of this Region."
  }
}

run "apac_profile_is_allowed_in_singapore" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-southeast-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-southeast-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "apac.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:ap-southeast-1:123456789012:inference-profile/apac.anthropic.claude-sonnet-4-6"
    error_message = "apac.anthropic.claude-sonnet-4-6 can be called from ap-southeast-1: the plan must pass and grant the profile of this Region."
  }
}

run "apac_profile_is_allowed_in_uae" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "me-central-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:me-central-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "apac.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:me-central-1:123456789012:inference-profile/apac.anthropic.claude-sonnet-4-6"
    error_message = "apac.anthropic.claude-sonnet-4-6 can be called from me-central-1: the plan must pass and grant the profile of this Region."
  }
}

run "apac_profile_is_refused_in_bahrain" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "me-south-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:me-south-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "apac.anthropic.claude-sonnet-4-6"
  }
  # apac.anthropic.claude-sonnet-4-6 cannot be called from me-south-1: the role policy's precondition refuses the plan.
  expect_failures = [aws_iam_role_policy.lambda]
}

run "us_profile_is_refused_in_govcloud" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "us-gov-west-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws-us-gov" }
  }
  variables {
    endpoint_arn     = "arn:aws-us-gov:sagemaker:us-gov-west-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "us.anthropic.claude-sonnet-5-5"
  }
  # us.anthropic.claude-sonnet-5-5 cannot be called from us-gov-west-1: the role policy's precondition refuses the plan.
  expect_failures = [aws_iam_role_policy.lambda]
}

run "us_gov_profile_is_allowed_in_govcloud" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "us-gov-west-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws-us-gov" }
  }
  variables {
    endpoint_arn     = "arn:aws-us-gov:sagemaker:us-gov-west-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "us-gov.anthropic.claude-sonnet-4-6"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:inference-profile/us-gov.anthropic.claude-sonnet-4-6"
    error_message = "us-gov.anthropic.claude-sonnet-4-6 can be called from us-gov-west-1: the plan must pass and grant the profile of this Region."
  }
}

run "us_gov_profile_is_refused_in_us_east_1" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "us-east-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "us-gov.anthropic.claude-sonnet-4-6"
  }
  # us-gov.anthropic.claude-sonnet-4-6 cannot be called from us-east-1: the role policy's precondition refuses the plan.
  expect_failures = [aws_iam_role_policy.lambda]
}

run "global_profile_is_refused_in_govcloud" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "us-gov-east-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws-us-gov" }
  }
  variables {
    endpoint_arn     = "arn:aws-us-gov:sagemaker:us-gov-east-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "global.anthropic.claude-sonnet-5-5"
  }
  # global.anthropic.claude-sonnet-5-5 cannot be called from us-gov-east-1: the role policy's precondition refuses the plan.
  expect_failures = [aws_iam_role_policy.lambda]
}

run "global_profile_is_allowed_in_singapore" {
  command = plan
  module {
    source = "./modules/api"
  }
  override_data {
    target = data.aws_region.current
    values = { name = "ap-southeast-1" }
  }
  override_data {
    target = data.aws_partition.current
    values = { partition = "aws" }
  }
  variables {
    endpoint_arn     = "arn:aws:sagemaker:ap-southeast-1:123456789012:endpoint/loom-endpoint"
    bedrock_model_id = "global.anthropic.claude-sonnet-5-5"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s.Resource if s.Sid == "InvokeThroughInferenceProfile"]) == "arn:aws:bedrock:ap-southeast-1:123456789012:inference-profile/global.anthropic.claude-sonnet-5-5"
    error_message = "global.anthropic.claude-sonnet-5-5 can be called from ap-southeast-1: the plan must pass and grant the profile of this Region."
  }
}
