# Which Bedrock resources the Lambda may invoke, derived from var.bedrock_model_id.
#
# Current Claude models refuse on-demand invocation by model id ("on-demand throughput isn't
# supported"): they are invoked through a cross-Region inference profile (us./eu./apac./jp./au./
# ca./us-gov./global. ids, or the profile's ARN). IAM must then allow the profile ARN *and* the
# foundation model in every Region the profile routes to; the bedrock:InferenceProfileArn
# condition keeps the foundation model reachable only through this profile.
#   https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-prereq.html
#   https://docs.aws.amazon.com/bedrock/latest/userguide/cross-region-inference.html
# Converse and ConverseStream are authorised by bedrock:InvokeModel / InvokeModelWithResponseStream.
#   https://docs.aws.amazon.com/bedrock/latest/userguide/conversation-inference-call.html

locals {
  bedrock_is_arn   = startswith(var.bedrock_model_id, "arn:")
  bedrock_id       = local.bedrock_is_arn ? regex("inference-profile/(.+)$", var.bedrock_model_id)[0] : var.bedrock_model_id
  bedrock_geo      = try(regex("^(global|us-gov|us|eu|apac|jp|au|ca)\\.", local.bedrock_id)[0], null)
  bedrock_profiled = local.bedrock_geo != null
  # The foundation model behind the profile: "us.anthropic.claude-sonnet-4-6" -> "anthropic.claude-sonnet-4-6".
  bedrock_foundation_model = local.bedrock_profiled ? substr(local.bedrock_id, length(local.bedrock_geo) + 1, -1) : local.bedrock_id
  bedrock_profile_arn = !local.bedrock_profiled ? null : (
    local.bedrock_is_arn ? var.bedrock_model_id : "arn:${local.partition}:bedrock:${local.region}:${local.account_id}:inference-profile/${local.bedrock_id}"
  )
  # Destination Regions: the listed ones, or every Region (the profile decides where it routes; the
  # condition below admits the model only through it). A global profile also needs the Region-less ARN.
  bedrock_model_regions = length(var.bedrock_destination_regions) > 0 ? var.bedrock_destination_regions : (local.bedrock_profiled ? ["*"] : [local.region])
  bedrock_model_arns = concat(
    [for r in local.bedrock_model_regions : "arn:${local.partition}:bedrock:${r}::foundation-model/${local.bedrock_foundation_model}"],
    local.bedrock_geo == "global" ? ["arn:${local.partition}:bedrock:::foundation-model/${local.bedrock_foundation_model}"] : [],
  )
  # A geographic profile can only be called from a source Region of its geography. The same sets as
  # inference/api/describe.py (PROFILE_SOURCE_REGIONS, PROFILE_SOURCE_PREFIXES, profile_callable_from),
  # which tests/infra/test_terraform_bedrock_regions.py compares with these: jp. is Tokyo and Osaka, au. is
  # Sydney and Melbourne (Seoul and Singapore have apac. only), apac. is also called from me-central-1,
  # us. is not GovCloud, global. is any commercial Region.
  #   https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html
  bedrock_source_regions = {
    jp = ["ap-northeast-1", "ap-northeast-3"]
    au = ["ap-southeast-2", "ap-southeast-4"]
  }
  bedrock_source_prefixes = {
    us = ["us-"], "us-gov" = ["us-gov-"], eu = ["eu-"], apac = ["ap-", "me-central-1"], ca = ["ca-"]
  }
  bedrock_excluded_prefixes = {
    us = ["us-gov-"], global = ["us-gov-", "cn-", "us-iso"]
  }
  bedrock_geo_key = local.bedrock_geo == null ? "" : local.bedrock_geo
  bedrock_callable_here = local.bedrock_geo == null || (
    contains(keys(local.bedrock_source_regions), local.bedrock_geo_key)
    ? contains(lookup(local.bedrock_source_regions, local.bedrock_geo_key, []), local.region)
    : ((local.bedrock_geo_key == "global" || anytrue([for p in lookup(local.bedrock_source_prefixes, local.bedrock_geo_key, []) : startswith(local.region, p)]))
    && !anytrue([for p in lookup(local.bedrock_excluded_prefixes, local.bedrock_geo_key, []) : startswith(local.region, p)]))
  )
  bedrock_invoke_actions = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]

  # For-filters, not conditionals: the two branches would be tuples of different lengths.
  bedrock_statements = [for st in [
    {
      when = local.bedrock_profiled
      statement = {
        Sid      = "InvokeThroughInferenceProfile"
        Effect   = "Allow"
        Action   = local.bedrock_invoke_actions
        Resource = local.bedrock_profile_arn
      }
    },
    {
      when = local.bedrock_profiled
      statement = {
        Sid       = "InvokeFoundationModelOnlyThroughProfile"
        Effect    = "Allow"
        Action    = local.bedrock_invoke_actions
        Resource  = local.bedrock_model_arns
        Condition = { StringEquals = { "bedrock:InferenceProfileArn" = local.bedrock_profile_arn } }
      }
    },
    {
      when = !local.bedrock_profiled
      statement = {
        Sid      = "InvokeThisFoundationModel"
        Effect   = "Allow"
        Action   = local.bedrock_invoke_actions
        Resource = local.bedrock_model_arns
      }
    },
  ] : st.statement if st.when]

  # First invocation of a third-party (Marketplace) model subscribes the account. Either an admin
  # invokes the model once (`loom preflight` does), or the role may subscribe to these products only.
  #   https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html
  marketplace_statements = [for st in [
    {
      Sid       = "SubscribeToTheDescriptionModelOnly"
      Effect    = "Allow"
      Action    = "aws-marketplace:Subscribe"
      Resource  = "*"
      Condition = { "ForAnyValue:StringEquals" = { "aws-marketplace:ProductId" = var.bedrock_marketplace_product_ids } }
    },
    {
      # ViewSubscriptions has no resource-level permissions or product condition: AWS requires "*".
      Sid      = "ViewMarketplaceSubscriptions"
      Effect   = "Allow"
      Action   = "aws-marketplace:ViewSubscriptions"
      Resource = "*"
    },
  ] : st if length(var.bedrock_marketplace_product_ids) > 0]
}
