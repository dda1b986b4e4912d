# The search module (modules/search): the CLIP endpoint, the three backends, the route and least-privilege IAM.
# Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan

  mock_resource "aws_opensearch_domain" {
    defaults = {
      arn      = "arn:aws:es:us-east-1:123456789012:domain/loom-search"
      endpoint = "search-loom-search-abc.us-east-1.es.amazonaws.com"
    }
  }

  mock_resource "aws_opensearchserverless_collection" {
    defaults = {
      arn                 = "arn:aws:aoss:us-east-1:123456789012:collection/abc123"
      collection_endpoint = "https://abc123.us-east-1.aoss.amazonaws.com"
    }
  }
}

variables {
  account_id          = "123456789012"
  region              = "us-east-1"
  bucket_name         = "loom-data-123456789012-us-east-1"
  kms_key_arn         = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  repository_arn      = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
  image_uri           = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
  model_data_url      = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
  api_id              = "abc123defg"
  lambda_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:loom-api"
  lambda_role_arn     = "arn:aws:iam::123456789012:role/loom-api-lambda"
  ingest_role_arns    = ["arn:aws:iam::123456789012:role/loom-ingest"]
}

run "search_defaults_serverless_endpoint_embedded_index" {
  command = plan

  module {
    source = "./modules/search"
  }

  assert {
    condition     = length(aws_sagemaker_endpoint_configuration.clip.production_variants[0].serverless_config) == 1 && aws_sagemaker_endpoint_configuration.clip.production_variants[0].serverless_config[0].memory_size_in_mb == 4096 && aws_sagemaker_endpoint_configuration.clip.production_variants[0].serverless_config[0].max_concurrency == 5
    error_message = "By default the CLIP endpoint is SageMaker Serverless Inference (4096 MB, concurrency 5)."
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.clip.kms_key_arn == null && aws_sagemaker_model.clip.enable_network_isolation
    error_message = "Serverless Inference takes no KMS key; the model runs network-isolated."
  }

  assert {
    condition     = length(aws_opensearch_domain.search) == 0 && length(aws_opensearchserverless_collection.search) == 0
    error_message = "The embedded backend creates no OpenSearch resource."
  }

  assert {
    condition     = aws_apigatewayv2_route.clip["POST /search"].route_key == "POST /search" && aws_apigatewayv2_route.clip["POST /search"].authorization_type == "AWS_IAM"
    error_message = "The module adds POST /search, IAM-authorised by default."
  }

  assert {
    condition     = aws_lambda_permission.clip["POST /search"].source_arn == "arn:aws:execute-api:us-east-1:123456789012:abc123defg/*/POST/search"
    error_message = "The Lambda permission must be limited to POST /search of this API."
  }

  # The CLIP endpoint's other tasks: zero-shot tags and a prompt from a photo, on the same integration.
  assert {
    condition = (toset(keys(aws_apigatewayv2_route.clip)) == toset(["POST /search", "POST /tags", "POST /interrogate"])
      && alltrue([for r in aws_apigatewayv2_route.clip : r.authorization_type == "AWS_IAM" && r.target == "integrations/${aws_apigatewayv2_integration.search.id}"])
    && output.route_keys == tolist(["POST /interrogate", "POST /search", "POST /tags"]))
    error_message = "With the CLIP endpoint the module adds POST /tags and POST /interrogate, IAM-authorised."
  }

  assert {
    condition = (aws_lambda_permission.clip["POST /tags"].source_arn == "arn:aws:execute-api:us-east-1:123456789012:abc123defg/*/POST/tags"
      && aws_lambda_permission.clip["POST /interrogate"].source_arn == "arn:aws:execute-api:us-east-1:123456789012:abc123defg/*/POST/interrogate"
    && aws_lambda_permission.clip["POST /tags"].statement_id == "AllowHttpApi-POST-tags")
    error_message = "Each CLIP task route has a Lambda permission limited to that route of this API."
  }

  assert {
    condition = jsondecode(aws_iam_role_policy.lambda_search.policy).Statement == [{
      Sid      = "InvokeClipEndpoint", Effect = "Allow", Action = "sagemaker:InvokeEndpoint",
      Resource = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-clip"
    }] && aws_iam_role_policy.lambda_search.role == "loom-api-lambda"
    error_message = "With the embedded backend the Lambda may only invoke the CLIP endpoint."
  }

  assert {
    condition     = output.lambda_environment.SEARCH_ENDPOINT_NAME == "loom-clip" && output.lambda_environment.SEARCH_BACKEND == "embedded" && length(keys(output.lambda_environment)) == 2
    error_message = "The Lambda environment must name the CLIP endpoint and the embedded backend."
  }
}

run "search_realtime_endpoint_with_an_opensearch_domain" {
  command = plan

  module {
    source = "./modules/search"
  }

  variables {
    endpoint_type  = "realtime"
    search_backend = "opensearch_domain"
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.clip.production_variants[0].instance_type == "ml.c6i.xlarge" && aws_sagemaker_endpoint_configuration.clip.kms_key_arn == var.kms_key_arn
    error_message = "A real-time CLIP endpoint runs on ml.c6i.xlarge with its volume under the project key."
  }

  assert {
    condition     = aws_opensearch_domain.search[0].encrypt_at_rest[0].enabled && aws_opensearch_domain.search[0].encrypt_at_rest[0].kms_key_id == var.kms_key_arn && aws_opensearch_domain.search[0].node_to_node_encryption[0].enabled
    error_message = "The domain must be encrypted at rest under the project key, with node-to-node encryption."
  }

  assert {
    condition     = aws_opensearch_domain.search[0].domain_endpoint_options[0].enforce_https && aws_opensearch_domain.search[0].domain_endpoint_options[0].tls_security_policy == "Policy-Min-TLS-1-2-2019-07"
    error_message = "The domain must be HTTPS-only with TLS 1.2 or newer."
  }

  assert {
    condition = toset([for s in jsondecode(aws_opensearch_domain.search[0].access_policies).Statement : jsonencode(s.Principal.AWS)]) == toset([
      jsonencode("arn:aws:iam::123456789012:role/loom-api-lambda"), jsonencode(["arn:aws:iam::123456789012:role/loom-ingest"]),
    ])
    error_message = "Only the API Lambda and the ingest roles may be named in the domain's access policy."
  }

  assert {
    condition     = !contains(flatten([for s in jsondecode(aws_opensearch_domain.search[0].access_policies).Statement : s.Action if s.Sid == "ApiLambdaReads"]), "es:ESHttpPut")
    error_message = "The API Lambda may not write the domain."
  }

  assert {
    condition     = output.lambda_environment["OPENSEARCH_ENDPOINT"] == "https://search-loom-search-abc.us-east-1.es.amazonaws.com" && output.lambda_environment["SEARCH_BACKEND"] == "opensearch_domain"
    error_message = "The Lambda must be told the domain endpoint."
  }
}

run "search_serverless_collection" {
  command = plan

  module {
    source = "./modules/search"
  }

  variables {
    search_backend = "opensearch_serverless"
  }

  assert {
    condition     = aws_opensearchserverless_collection.search[0].type == "VECTORSEARCH"
    error_message = "The collection must be a vector search collection."
  }

  assert {
    condition     = jsondecode(aws_opensearchserverless_security_policy.encryption[0].policy).KmsARN == var.kms_key_arn && !jsondecode(aws_opensearchserverless_security_policy.encryption[0].policy).AWSOwnedKey
    error_message = "The collection must be encrypted under the project key."
  }

  assert {
    condition     = [for s in jsondecode(aws_opensearchserverless_access_policy.data[0].policy) : s.Rules[0].Permission if contains(s.Principal, var.lambda_role_arn)] == [["aoss:ReadDocument", "aoss:DescribeIndex"]]
    error_message = "The API Lambda may only read the product index."
  }

  assert {
    condition     = contains([for s in jsondecode(aws_iam_role_policy.lambda_search.policy).Statement : s.Action], "aoss:APIAccessAll")
    error_message = "The Lambda role must be allowed to reach the collection."
  }
}

run "search_rejects_a_bad_backend" {
  command = plan

  module {
    source = "./modules/search"
  }

  variables {
    search_backend = "elasticsearch"
  }

  expect_failures = [var.search_backend]
}

run "root_wires_search_into_the_api" {
  command = plan

  variables {
    partition           = "aws"
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
    search = {
      model_data_url = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
    }
  }

  assert {
    condition     = module.search[0].route_key == "POST /search" && module.search[0].endpoint_name == "loom-clip"
    error_message = "With var.search set, the root module adds the CLIP endpoint and POST /search."
  }

  assert {
    condition     = output.api_routes == tolist(["POST /attributes", "POST /describe", "POST /interrogate", "POST /search", "POST /tags"])
    error_message = "With var.search the API has POST /tags and POST /interrogate beside /search (and no /restyle by default)."
  }

  # Without these the Lambda answers /search with "not configured": the search module's outputs reach it.
  assert {
    condition = (module.api[0].lambda_environment["SEARCH_ENDPOINT_NAME"] == "loom-clip"
    && module.api[0].lambda_environment["SEARCH_BACKEND"] == "embedded")
    error_message = "The API Lambda's environment carries the search module's SEARCH_ENDPOINT_NAME and SEARCH_BACKEND."
  }
}
