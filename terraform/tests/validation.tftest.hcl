# Invalid inputs are rejected at plan time with a clear message.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  lambda_zip_path = "tests/fixtures/lambda.zip"
}

run "instance_type_must_start_with_ml" {
  command = plan
  variables {
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/m/model.tar.gz"
    inference_image_tag = "abc"
    instance_type       = "g5.2xlarge"
  }
  expect_failures = [var.instance_type]
}

run "model_data_url_must_be_s3" {
  command = plan
  variables {
    model_data_url      = "https://example.com/model.tar.gz"
    inference_image_tag = "abc"
  }
  expect_failures = [var.model_data_url]
}

run "model_data_url_needs_an_image_tag" {
  command = plan
  variables {
    model_data_url = "s3://loom-data-123456789012-us-east-1/models/m/model.tar.gz"
  }
  expect_failures = [var.inference_image_tag]
}

run "max_capacity_not_below_min" {
  command = plan
  variables {
    min_capacity = 3
    max_capacity = 2
  }
  expect_failures = [var.max_capacity]
}

run "name_prefix_is_lower_case" {
  command = plan
  variables {
    name_prefix = "Loom_Prod"
  }
  expect_failures = [var.name_prefix]
}

run "authorization_is_a_known_kind" {
  command = plan
  variables {
    api_authorization = "OPEN"
  }
  expect_failures = [var.api_authorization]
}

run "jwt_needs_an_issuer" {
  command = plan
  variables {
    api_authorization = "JWT"
    jwt_audience      = ["loom-web"]
  }
  expect_failures = [var.jwt_issuer]
}

run "lambda_timeout_below_api_gateway_timeout" {
  command = plan
  variables {
    lambda_timeout_seconds = 30
  }
  expect_failures = [var.lambda_timeout_seconds]
}

run "lambda_runtime_is_python_3_12_or_newer" {
  command = plan
  variables {
    lambda_runtime = "python3.11"
  }
  expect_failures = [var.lambda_runtime]
}

run "github_repository_is_owner_slash_name" {
  command = plan
  variables {
    github_repository = "just-a-name"
  }
  expect_failures = [var.github_repository]
}

run "bedrock_model_id_is_a_model_id" {
  command = plan
  variables {
    bedrock_model_id = "arn:aws:bedrock:us-east-1::foundation-model/x"
  }
  expect_failures = [var.bedrock_model_id]
}

run "lambda_zip_path_is_a_zip" {
  command = plan
  variables {
    lambda_zip_path = "build/lambda.tar"
  }
  expect_failures = [var.lambda_zip_path]
}

# A bucket name with dots is refused: presigned /restyle URLs are virtual-hosted
# (https://<bucket>.s3.<region>.amazonaws.com) and S3's wildcard certificate (*.s3.<region>.amazonaws.com)
# does not match a name with dots ("Virtual hosting of buckets",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html).
run "bucket_name_without_dots_root" {
  command = plan
  variables {
    bucket_name = "loom.data.example"
  }
  expect_failures = [var.bucket_name]
}

run "bucket_name_without_dots_storage_module" {
  command = plan
  module {
    source = "./modules/storage"
  }
  variables {
    name_prefix = "loom"
    kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    bucket_name = "loom.data.example"
  }
  expect_failures = [var.bucket_name]
}

run "bucket_name_with_hyphens_is_accepted" {
  command = plan
  module {
    source = "./modules/storage"
  }
  variables {
    name_prefix = "loom"
    kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    bucket_name = "loom-data-example"
  }
  assert {
    condition     = aws_s3_bucket.data.bucket == "loom-data-example"
    error_message = "A bucket name of letters, digits and hyphens must be accepted."
  }
}
