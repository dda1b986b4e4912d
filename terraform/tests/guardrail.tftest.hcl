# Bedrock guardrail on the description model (modules/api/guardrail.tf): off by default; created when asked;
# an existing one used by id or ARN. The Lambda sends both BEDROCK_GUARDRAIL_* values as Converse
# guardrailConfig (inference/api/describe.py), and the role may apply that guardrail only:
#   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-permissions.html (bedrock:ApplyGuardrail
#   on arn:aws:bedrock:region:account-id:guardrail/guardrail-id)
#   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-permissions-kms.html (kms:Decrypt for users
#   of a guardrail encrypted with a customer managed key)
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
}

run "guardrail_is_off_by_default" {
  command = plan
  module {
    source = "./modules/api"
  }

  assert {
    condition     = length(aws_bedrock_guardrail.description) == 0 && length(aws_bedrock_guardrail_version.description) == 0
    error_message = "By default no guardrail is created."
  }

  assert {
    condition     = length([for k in keys(aws_lambda_function.api.environment[0].variables) : k if startswith(k, "BEDROCK_GUARDRAIL_")]) == 0
    error_message = "Without a guardrail the Lambda has no BEDROCK_GUARDRAIL_* variable (Converse gets no guardrailConfig)."
  }

  assert {
    condition = length(aws_iam_role_policy.guardrail) == 0 && length([
      for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s if contains(flatten([s.Action]), "bedrock:ApplyGuardrail")
    ]) == 0
    error_message = "Without a guardrail no IAM statement allows bedrock:ApplyGuardrail."
  }

  assert {
    condition     = output.guardrail_arn == null
    error_message = "Without a guardrail the module reports none."
  }
}

run "created_guardrail_filters_prompt_attacks_and_is_applied" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    create_guardrail = true
  }

  # Prompt attacks are user prompts: the filter applies to input (output strength NONE).
  #   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-prompt-attack.html
  assert {
    condition = one([for f in aws_bedrock_guardrail.description[0].content_policy_config[0].filters_config : f if f.type == "PROMPT_ATTACK"]) == {
      type = "PROMPT_ATTACK", input_strength = "HIGH", output_strength = "NONE"
    }
    error_message = "The guardrail filters prompt attacks on input, strongly."
  }

  assert {
    condition     = aws_bedrock_guardrail.description[0].kms_key_arn == var.kms_key_arn && aws_bedrock_guardrail.description[0].name == "loom-description"
    error_message = "The guardrail is encrypted with the project key."
  }

  assert {
    condition = (aws_lambda_function.api.environment[0].variables.BEDROCK_GUARDRAIL_ID == "abc123def456"
    && aws_lambda_function.api.environment[0].variables.BEDROCK_GUARDRAIL_VERSION == "1")
    error_message = "The Lambda is given the created guardrail's id and its published version (not DRAFT)."
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.guardrail[0].policy).Statement : s if s.Sid == "ApplyTheDescriptionGuardrail"]) == {
      Sid      = "ApplyTheDescriptionGuardrail"
      Effect   = "Allow"
      Action   = "bedrock:ApplyGuardrail"
      Resource = "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123def456"
    }
    error_message = "The role may apply the created guardrail, and no other."
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.guardrail[0].policy).Statement : s if s.Sid == "DecryptTheGuardrail"]) == {
      Sid      = "DecryptTheGuardrail"
      Effect   = "Allow"
      Action   = "kms:Decrypt"
      Resource = var.kms_key_arn
    } && length(jsondecode(aws_iam_role_policy.guardrail[0].policy).Statement) == 2
    error_message = "The role may decrypt the guardrail's key (the project key), and nothing more."
  }

  assert {
    condition     = aws_bedrock_guardrail_version.description[0].guardrail_arn == output.guardrail_arn
    error_message = "A version of the created guardrail is published."
  }
}

run "existing_guardrail_by_id_is_applied" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    guardrail_id      = "gr0123456789"
    guardrail_version = "DRAFT"
  }

  assert {
    condition     = length(aws_bedrock_guardrail.description) == 0 && length(aws_bedrock_guardrail_version.description) == 0
    error_message = "An existing guardrail is used, not created."
  }

  assert {
    condition = (aws_lambda_function.api.environment[0].variables.BEDROCK_GUARDRAIL_ID == "gr0123456789"
    && aws_lambda_function.api.environment[0].variables.BEDROCK_GUARDRAIL_VERSION == "DRAFT")
    error_message = "The Lambda is given the existing guardrail's id and version."
  }

  assert {
    condition = jsondecode(aws_iam_role_policy.guardrail[0].policy).Statement == [{
      Sid      = "ApplyTheDescriptionGuardrail"
      Effect   = "Allow"
      Action   = "bedrock:ApplyGuardrail"
      Resource = "arn:aws:bedrock:us-east-1:123456789012:guardrail/gr0123456789"
    }]
    error_message = "The role may apply that guardrail (in this account and Region), and nothing else; its key is its owner's business."
  }
}

run "existing_guardrail_by_arn_keeps_its_arn" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    guardrail_id      = "arn:aws:bedrock:us-west-2:123456789012:guardrail/gr0123456789"
    guardrail_version = "3"
  }

  assert {
    condition     = one(jsondecode(aws_iam_role_policy.guardrail[0].policy).Statement).Resource == "arn:aws:bedrock:us-west-2:123456789012:guardrail/gr0123456789"
    error_message = "A guardrail given by ARN is allowed by that ARN."
  }
}

run "guardrail_id_without_version_is_refused" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    guardrail_id = "gr0123456789"
  }
  expect_failures = [var.guardrail_version]
}

run "guardrail_version_must_be_a_number_or_draft" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    guardrail_id      = "gr0123456789"
    guardrail_version = "latest"
  }
  expect_failures = [var.guardrail_version]
}

run "guardrail_id_format_is_checked" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    guardrail_id      = "My Guardrail"
    guardrail_version = "1"
  }
  expect_failures = [var.guardrail_id]
}

run "create_and_existing_guardrail_are_exclusive" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    create_guardrail  = true
    guardrail_id      = "gr0123456789"
    guardrail_version = "1"
  }
  expect_failures = [var.guardrail_id]
}

# The root module (only module outputs are visible from here): off by default, and create_bedrock_guardrail /
# bedrock_guardrail_* reach the api module.
run "root_has_no_guardrail_by_default" {
  command = plan
  variables {
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
  }

  assert {
    condition     = output.serving_enabled && output.bedrock_guardrail_arn == null
    error_message = "The root module creates and applies no guardrail unless asked."
  }
}

run "root_creates_the_guardrail_when_asked" {
  command = plan
  variables {
    model_data_url           = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag      = "0123abc"
    create_bedrock_guardrail = true
  }

  assert {
    condition     = output.bedrock_guardrail_arn == "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123def456"
    error_message = "create_bedrock_guardrail creates a guardrail and applies it."
  }
}

run "root_uses_an_existing_guardrail" {
  command = plan
  variables {
    model_data_url            = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag       = "0123abc"
    bedrock_guardrail_id      = "gr0123456789"
    bedrock_guardrail_version = "2"
  }

  assert {
    condition     = output.bedrock_guardrail_arn == "arn:aws:bedrock:us-east-1:123456789012:guardrail/gr0123456789"
    error_message = "bedrock_guardrail_id reaches the api module."
  }
}

run "root_guardrail_version_needs_an_id" {
  command = plan
  variables {
    bedrock_guardrail_version = "1"
  }
  expect_failures = [var.bedrock_guardrail_version]
}
