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

  # Serverless Inference refuses network isolation, VPC configuration and data capture (SageMaker guide,
  # Serverless Inference, feature exclusions: https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html)
  # and takes no volume KMS key.
  assert {
    condition     = aws_sagemaker_endpoint_configuration.clip.kms_key_arn == null && !aws_sagemaker_model.clip.enable_network_isolation && length(aws_sagemaker_model.clip.vpc_config) == 0 && length(aws_sagemaker_endpoint_configuration.clip.data_capture_config) == 0
    error_message = "A serverless CLIP model must not ask for network isolation, a VPC, data capture or a volume key: Serverless Inference refuses them."
  }

  # Serverless Inference gives the container 3 minutes to answer /ping (same guide): the server gives up
  # loading before that, so the failure carries its own message. No start-up window is sent (real-time only).
  assert {
    condition = (tonumber(aws_sagemaker_model.clip.primary_container[0].environment["MODEL_LOAD_TIMEOUT"]) < 180
      && aws_sagemaker_endpoint_configuration.clip.production_variants[0].container_startup_health_check_timeout_in_seconds == null
    && aws_sagemaker_endpoint_configuration.clip.production_variants[0].instance_type == null)
    error_message = "On Serverless Inference MODEL_LOAD_TIMEOUT must be under the 3-minute /ping window, with no instance type or start-up window."
  }

  # 4 MB request and response payloads on Serverless Inference (same guide): the Lambda is told the limit.
  assert {
    condition     = output.lambda_environment["SEARCH_MAX_REQUEST_BYTES"] == "4000000" && aws_sagemaker_model.clip.primary_container[0].environment["MAX_BODY_MB"] == "4"
    error_message = "A serverless CLIP endpoint takes requests of at most 4 MB: SEARCH_MAX_REQUEST_BYTES = 4000000."
  }

  assert {
    condition     = aws_cloudwatch_log_group.clip.name == "/aws/sagemaker/Endpoints/loom-clip" && aws_cloudwatch_log_group.clip.kms_key_id == var.kms_key_arn && aws_cloudwatch_log_group.clip.retention_in_days == 365 && output.log_group_name == aws_cloudwatch_log_group.clip.name
    error_message = "Terraform creates the CLIP endpoint's log group, KMS-encrypted and with retention (SageMaker would create it unencrypted, kept forever)."
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
    condition     = output.lambda_environment.SEARCH_ENDPOINT_NAME == "loom-clip" && output.lambda_environment.SEARCH_BACKEND == "embedded" && length(keys(output.lambda_environment)) == 3
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

  # Real-time endpoints keep the model network-isolated; InvokeEndpoint takes 6 MB (botocore's
  # sagemaker-runtime model: Body max 6291456 bytes); the start-up window covers MODEL_LOAD_TIMEOUT.
  assert {
    condition = (aws_sagemaker_model.clip.enable_network_isolation
      && output.lambda_environment["SEARCH_MAX_REQUEST_BYTES"] == "6291456"
      && aws_sagemaker_model.clip.primary_container[0].environment["MAX_BODY_MB"] == "6"
      && aws_sagemaker_endpoint_configuration.clip.production_variants[0].container_startup_health_check_timeout_in_seconds == 600
    && aws_sagemaker_model.clip.primary_container[0].environment["MODEL_LOAD_TIMEOUT"] == "480")
    error_message = "A real-time CLIP model runs network-isolated, takes 6 MB requests, and loads within its start-up window."
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

run "search_realtime_on_nvme_instances_takes_no_volume_key" {
  command = plan

  module {
    source = "./modules/search"
  }

  variables {
    endpoint_type = "realtime"
    instance_type = "ml.g4dn.xlarge"
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.clip.kms_key_arn == null && aws_sagemaker_endpoint_configuration.clip.production_variants[0].instance_type == "ml.g4dn.xlarge"
    error_message = "NVMe instance types get no KmsKeyId: it does not encrypt their local storage (modules/instance_storage, the rule the endpoint module uses)."
  }
}

# ProductionVariantServerlessConfig: MemorySizeInMB 1024-6144 in 1 GB steps, MaxConcurrency 1-200.
#   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariantServerlessConfig.html
run "search_serverless_memory_in_1_gb_steps" {
  command = plan

  module {
    source = "./modules/search"
  }

  variables {
    serverless_memory_mb = 1536
  }

  expect_failures = [var.serverless_memory_mb]
}

run "search_serverless_memory_at_most_6_gb" {
  command = plan

  module {
    source = "./modules/search"
  }

  variables {
    serverless_memory_mb = 7168
  }

  expect_failures = [var.serverless_memory_mb]
}

run "search_serverless_concurrency_at_most_200" {
  command = plan

  module {
    source = "./modules/search"
  }

  variables {
    serverless_max_concurrency = 201
  }

  expect_failures = [var.serverless_max_concurrency]
}

# Serverless Inference is CPU-only with a 10 GB image limit (serverless-endpoints.html); the inference
# image is built on the CUDA PyTorch base (containers/inference/Dockerfile): a serverless CLIP endpoint runs
# the CPU build (BASE_IMAGE=cpu-base) that CI and scripts/build_and_push.sh push as <sha>-cpu.
run "root_serverless_search_runs_the_cpu_build_by_default" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
    search = {
      model_data_url = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
    }
  }

  assert {
    condition     = endswith(output.search_image_uri, "/loom-mock:0123abc-cpu") && endswith(output.inference_image_uri, ":0123abc")
    error_message = "Without search.image_tag a serverless CLIP endpoint runs <inference_image_tag>-cpu, the CPU build; the attribute endpoint keeps the CUDA image."
  }
}

run "root_realtime_search_runs_the_inference_image_by_default" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
    search = {
      model_data_url = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
      endpoint_type  = "realtime"
    }
  }

  assert {
    condition     = endswith(output.search_image_uri, "/loom-mock:0123abc")
    error_message = "A real-time CLIP endpoint runs the inference image unless search.image_tag names another."
  }
}

run "root_serverless_search_takes_a_named_cpu_image" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
    search = {
      model_data_url = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
      image_tag      = "v1.2-cpu"
    }
  }

  assert {
    condition     = endswith(output.search_image_uri, "/loom-mock:v1.2-cpu")
    error_message = "search.image_tag, when given, is the CLIP endpoint's image."
  }
}

run "root_serverless_search_needs_room_for_the_cpu_suffix" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "a1234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234"
    search = {
      model_data_url = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
    }
  }

  expect_failures = [var.search]
}

run "root_serverless_search_refuses_the_gpu_image_tag" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
    search = {
      model_data_url = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
      image_tag      = "0123abc"
    }
  }

  expect_failures = [var.search]
}

# JWT authorisation and search together: the search routes use the API's JWT authorizer.
run "root_plans_jwt_authorisation_with_search" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
    api_authorization   = "JWT"
    jwt_issuer          = "https://issuer.example.com/"
    jwt_audience        = ["loom"]
    search = {
      model_data_url = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
      endpoint_type  = "realtime"
    }
  }

  assert {
    condition = (module.api[0].authorizer_id == "auth01" && length(module.search[0].route_authorization) == 3
    && alltrue([for r in values(module.search[0].route_authorization) : r.type == "JWT" && r.authorizer_id == module.api[0].authorizer_id]))
    error_message = "With api_authorization = JWT every search route uses the API's JWT authorizer."
  }

  assert {
    condition     = module.api[0].lambda_environment["SEARCH_MAX_REQUEST_BYTES"] == "6291456"
    error_message = "A real-time CLIP endpoint takes 6 MB requests: the Lambda is told so."
  }
}

run "root_wires_search_into_the_api" {
  command = plan

  variables {
    lambda_zip_path     = "tests/fixtures/lambda.zip"
    model_data_url      = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag = "0123abc"
    search = {
      model_data_url = "s3://loom-data-123456789012-us-east-1/models/clip-1/model.tar.gz"
      image_tag      = "0123abc-cpu"
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
      && module.api[0].lambda_environment["SEARCH_BACKEND"] == "embedded"
    && module.api[0].lambda_environment["SEARCH_MAX_REQUEST_BYTES"] == "4000000")
    error_message = "The API Lambda's environment carries the search module's SEARCH_ENDPOINT_NAME and SEARCH_BACKEND."
  }

  assert {
    condition     = module.search[0].route_authorization["POST /search"].type == "AWS_IAM" && module.api[0].authorizer_id == null
    error_message = "The search routes are IAM-authorised by default."
  }
}
