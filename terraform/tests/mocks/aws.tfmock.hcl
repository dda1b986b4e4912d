# Values for computed attributes under `mock_provider "aws"`: random strings would fail the
# provider's ARN checks and the modules' own validations.

mock_data "aws_caller_identity" {
  defaults = {
    account_id = "123456789012"
    arn        = "arn:aws:iam::123456789012:user/terraform-test"
  }
}

mock_data "aws_partition" {
  defaults = {
    partition  = "aws"
    dns_suffix = "amazonaws.com"
  }
}

mock_data "aws_region" {
  defaults = {
    name = "us-east-1"
  }
}

mock_resource "aws_kms_key" {
  defaults = {
    arn    = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    key_id = "11111111-2222-3333-4444-555555555555"
  }
}

mock_resource "aws_s3_bucket" {
  defaults = {
    arn = "arn:aws:s3:::loom-data-123456789012-us-east-1"
  }
}

mock_resource "aws_ecr_repository" {
  defaults = {
    arn            = "arn:aws:ecr:us-east-1:123456789012:repository/loom-mock"
    repository_url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-mock"
  }
}

mock_resource "aws_iam_role" {
  defaults = {
    arn = "arn:aws:iam::123456789012:role/loom-mock"
  }
}

mock_resource "aws_iam_openid_connect_provider" {
  defaults = {
    arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
  }
}

mock_resource "aws_sagemaker_model" {
  defaults = {
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model/loom-mock"
  }
}

mock_resource "aws_sagemaker_endpoint_configuration" {
  defaults = {
    arn = "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/loom-mock"
  }
}

mock_resource "aws_sagemaker_endpoint" {
  defaults = {
    arn = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
  }
}

mock_resource "aws_cloudwatch_log_group" {
  defaults = {
    arn = "arn:aws:logs:us-east-1:123456789012:log-group:/mock"
  }
}

mock_resource "aws_lambda_function" {
  defaults = {
    arn           = "arn:aws:lambda:us-east-1:123456789012:function:loom-api"
    qualified_arn = "arn:aws:lambda:us-east-1:123456789012:function:loom-api:1"
    invoke_arn    = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:loom-api/invocations"
  }
}

mock_resource "aws_apigatewayv2_api" {
  defaults = {
    id            = "abc123"
    arn           = "arn:aws:apigateway:us-east-1::/apis/abc123"
    execution_arn = "arn:aws:execute-api:us-east-1:123456789012:abc123"
    api_endpoint  = "https://abc123.execute-api.us-east-1.amazonaws.com"
  }
}

mock_resource "aws_apigatewayv2_stage" {
  defaults = {
    arn           = "arn:aws:apigateway:us-east-1::/apis/abc123/stages/$default"
    execution_arn = "arn:aws:execute-api:us-east-1:123456789012:abc123/$default"
    invoke_url    = "https://abc123.execute-api.us-east-1.amazonaws.com/"
  }
}

mock_resource "aws_cloudwatch_metric_alarm" {
  defaults = {
    arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:loom-mock"
  }
}

mock_resource "aws_apigatewayv2_integration" {
  defaults = {
    id = "integ01"
  }
}

mock_resource "aws_apigatewayv2_authorizer" {
  defaults = {
    id = "auth01"
  }
}

mock_data "aws_service_principal" {
  defaults = {
    name   = "logs.us-east-1.amazonaws.com"
    suffix = "amazonaws.com"
  }
}

mock_resource "aws_bedrock_guardrail" {
  defaults = {
    guardrail_arn = "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123def456"
    guardrail_id  = "abc123def456"
    version       = "DRAFT"
  }
}

mock_resource "aws_bedrock_guardrail_version" {
  defaults = {
    version = "1"
  }
}
