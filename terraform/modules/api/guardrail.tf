# Optional Amazon Bedrock guardrail on the description model (docs/deploy.md "Guardrail"). Off by default:
# no guardrail, no BEDROCK_GUARDRAIL_* variable, no IAM statement. Either this module creates one
# (create_guardrail) or the Lambda uses an existing one (guardrail_id + guardrail_version). The Lambda then
# sends Converse `guardrailConfig` with both values (inference/api/describe.py), which needs
# bedrock:ApplyGuardrail on the guardrail, and kms:Decrypt on its customer managed key if it has one.
#   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-permissions.html
#   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-permissions-kms.html
#   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-use-converse-api.html

locals {
  guardrail_enabled = var.create_guardrail || var.guardrail_id != null
  # An existing guardrail named by id is in this account and Region; by ARN, wherever the ARN says.
  existing_guardrail_arn = var.guardrail_id == null ? null : (
    startswith(var.guardrail_id, "arn:") ? var.guardrail_id : "arn:${local.partition}:bedrock:${local.region}:${local.account_id}:guardrail/${var.guardrail_id}"
  )
  guardrail_arn = var.create_guardrail ? aws_bedrock_guardrail.description[0].guardrail_arn : local.existing_guardrail_arn
  guardrail_environment = !local.guardrail_enabled ? {} : {
    BEDROCK_GUARDRAIL_ID      = var.create_guardrail ? aws_bedrock_guardrail.description[0].guardrail_id : var.guardrail_id
    BEDROCK_GUARDRAIL_VERSION = var.create_guardrail ? aws_bedrock_guardrail_version.description[0].version : var.guardrail_version
  }
}

resource "aws_bedrock_guardrail" "description" {
  count = var.create_guardrail ? 1 : 0

  name        = "${var.name_prefix}-description"
  description = "Loom: screens the attributes sent to the description model and the descriptions it writes"
  # The Lambda withholds the description and says why (description_error); these texts are not shown.
  blocked_input_messaging   = "The description request was blocked by the guardrail."
  blocked_outputs_messaging = "The description was blocked by the guardrail."
  kms_key_arn               = var.kms_key_arn

  # Prompt attacks (jailbreaks, injected instructions in the product facts) are user prompts: the filter
  # applies to input, so its output strength is NONE. The harmful-content categories apply both
  # ways. SEXUAL is left out: the catalogue has underwear and swimwear, whose plain descriptions it could
  # withhold.
  #   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-prompt-attack.html
  #   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-content-filters.html
  content_policy_config {
    filters_config {
      type            = "PROMPT_ATTACK"
      input_strength  = "HIGH"
      output_strength = "NONE"
    }
    dynamic "filters_config" {
      for_each = ["HATE", "INSULTS", "MISCONDUCT", "VIOLENCE"]
      content {
        type            = filters_config.value
        input_strength  = "MEDIUM"
        output_strength = "MEDIUM"
      }
    }
  }

  # AWS's managed profanity list, on input and output.
  #   https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-word-filters.html
  word_policy_config {
    managed_word_lists_config {
      type = "PROFANITY"
    }
  }

  tags = var.tags
}

# A guardrail version is an immutable snapshot of the guardrail: a change to the guardrail makes a new one.
resource "aws_bedrock_guardrail_version" "description" {
  count = var.create_guardrail ? 1 : 0

  guardrail_arn = aws_bedrock_guardrail.description[0].guardrail_arn
  description   = "Loom description guardrail"

  lifecycle {
    replace_triggered_by = [aws_bedrock_guardrail.description]
  }
}

resource "aws_iam_role_policy" "guardrail" {
  count = local.guardrail_enabled ? 1 : 0

  name = "apply-guardrail"
  role = aws_iam_role.lambda.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ApplyTheDescriptionGuardrail"
        Effect   = "Allow"
        Action   = "bedrock:ApplyGuardrail"
        Resource = local.guardrail_arn
      },
      ], var.create_guardrail ? [
      {
        # The guardrail this module creates is encrypted with the project key.
        Sid      = "DecryptTheGuardrail"
        Effect   = "Allow"
        Action   = "kms:Decrypt"
        Resource = var.kms_key_arn
      },
    ] : [])
  })
}
