# POST /restyle (modules/api/restyle.tf): off by default, and when enabled exactly its route, its
# permission, its environment and least-privilege IAM. Runs with `mock_provider "aws"`: nothing reaches AWS.
# `terraform test` from terraform/.

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

run "restyle_is_off_by_default" {
  command = plan
  module {
    source = "./modules/api"
  }

  assert {
    condition     = !contains(keys(aws_apigatewayv2_route.this), "POST /restyle") && !contains(keys(aws_lambda_permission.api), "POST /restyle")
    error_message = "Without enable_restyle there is no POST /restyle route and no permission for it."
  }

  assert {
    condition     = length(aws_iam_role_policy.restyle) == 0
    error_message = "Without enable_restyle the Lambda role has no restyle policy."
  }

  assert {
    condition = length([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s if anytrue([
      for a in flatten([s.Action]) : startswith(a, "s3:")
    ]) || strcontains(jsonencode(s.Resource), "stability.")]) == 0
    error_message = "Without enable_restyle no IAM statement names an image model or S3."
  }

  assert {
    condition     = length([for k in keys(aws_lambda_function.api.environment[0].variables) : k if startswith(k, "RESTYLE_")]) == 0
    error_message = "Without enable_restyle the Lambda has no RESTYLE_* variable (it answers 404 on /restyle)."
  }

  assert {
    condition     = output.route_keys == tolist(["POST /attributes", "POST /describe"])
    error_message = "By default the api module puts exactly /describe and /attributes on the API."
  }
}

run "restyle_enabled_adds_its_route_environment_and_least_privilege_iam" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    enable_restyle      = true
    restyle_bucket_name = "loom-data-123456789012-us-east-1"
  }

  assert {
    condition     = aws_apigatewayv2_route.this["POST /restyle"].authorization_type == "AWS_IAM" && output.route_keys == tolist(["POST /attributes", "POST /describe", "POST /restyle"])
    error_message = "enable_restyle adds POST /restyle, IAM-authorised like the other routes."
  }

  assert {
    condition     = endswith(aws_lambda_permission.api["POST /restyle"].source_arn, "/*/POST/restyle")
    error_message = "The Lambda permission for /restyle is limited to that route."
  }

  assert {
    condition = (aws_lambda_function.api.environment[0].variables.RESTYLE_MODEL_ID == "stability.sd3-5-large-v1:0"
      && aws_lambda_function.api.environment[0].variables.RESTYLE_REGION == "us-west-2"
    && aws_lambda_function.api.environment[0].variables.RESTYLE_BUCKET == "loom-data-123456789012-us-east-1")
    error_message = "The Lambda is told the restyle model (SD 3.5 Large by default), its Region and the bucket."
  }

  # The model in the Region that offers it (not the API's), on demand: InvokeModel only, on that ARN only.
  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.restyle[0].policy).Statement : s if s.Sid == "InvokeTheRestyleModel"]) == {
      Sid      = "InvokeTheRestyleModel"
      Effect   = "Allow"
      Action   = "bedrock:InvokeModel"
      Resource = "arn:aws:bedrock:us-west-2::foundation-model/stability.sd3-5-large-v1:0"
    }
    error_message = "The role may invoke the configured Stability model in restyle_region, and nothing else."
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.restyle[0].policy).Statement : s.Resource if s.Sid == "WriteAndShareRestyledImages"]) == "arn:aws:s3:::loom-data-123456789012-us-east-1/restyle/*" && toset(one([
      for s in jsondecode(aws_iam_role_policy.restyle[0].policy).Statement : s.Action if s.Sid == "WriteAndShareRestyledImages"
    ])) == toset(["s3:PutObject", "s3:GetObject"])
    error_message = "The role may write (and presign reads of) objects under restyle/ of the project bucket only."
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.restyle[0].policy).Statement : s if s.Sid == "EncryptRestyledImagesThroughS3"]).Condition == {
      StringEquals = { "kms:ViaService" = "s3.us-east-1.amazonaws.com" }
    } && one([for s in jsondecode(aws_iam_role_policy.restyle[0].policy).Statement : s.Resource if s.Sid == "EncryptRestyledImagesThroughS3"]) == var.kms_key_arn
    error_message = "The project key is usable for the restyled images through S3 only."
  }

  assert {
    condition     = length(jsondecode(aws_iam_role_policy.restyle[0].policy).Statement) == 3
    error_message = "The restyle policy holds exactly the model, the prefix and the key."
  }
}

run "restyle_model_and_region_are_configurable" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    enable_restyle      = true
    restyle_bucket_name = "loom-data-123456789012-us-east-1"
    restyle_model_id    = "stability.sd3-5-large-v1:0"
    restyle_region      = "us-east-1"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.restyle[0].policy).Statement : s.Resource if s.Sid == "InvokeTheRestyleModel"]) == "arn:aws:bedrock:us-east-1::foundation-model/stability.sd3-5-large-v1:0"
    error_message = "restyle_region decides the Region of the model ARN."
  }
}

run "restyle_needs_the_bucket" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    enable_restyle = true
  }

  expect_failures = [aws_iam_role_policy.restyle]
}

run "restyle_refuses_a_model_that_is_not_a_stability_model" {
  command = plan
  module {
    source = "./modules/api"
  }
  variables {
    enable_restyle      = true
    restyle_bucket_name = "loom-data-123456789012-us-east-1"
    restyle_model_id    = "amazon.nova-canvas-v1:0"
  }

  expect_failures = [var.restyle_model_id]
}

run "root_wires_restyle_into_the_api_with_the_project_bucket" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
    enable_restyle      = true
  }

  assert {
    condition     = module.api[0].lambda_environment["RESTYLE_BUCKET"] == "loom-data-123456789012-us-east-1" && contains(output.api_routes, "POST /restyle")
    error_message = "The root module passes enable_restyle and the project bucket to the api module."
  }
}

run "root_has_no_restyle_by_default" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
  }

  assert {
    condition     = output.api_routes == tolist(["POST /attributes", "POST /describe"]) && !contains(keys(module.api[0].lambda_environment), "RESTYLE_MODEL_ID")
    error_message = "By default the root module deploys neither POST /restyle nor its settings."
  }
}
