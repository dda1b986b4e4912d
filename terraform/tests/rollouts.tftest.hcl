# Who rolls the endpoint out (issue 13, item 6). The provider's UpdateEndpoint sends no
# RetainAllVariantProperties, so a rollout through Terraform starts the new fleet at the
# configuration's instance count instead of the autoscaled one:
#   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html (RetainAllVariantProperties, default false)
#   provider source: internal/service/sagemaker/endpoint.go, resourceEndpointUpdate (EndpointName,
#   EndpointConfigName and DeploymentConfig only).
# `loom rollout` sends it; with rollouts_outside_terraform = true Terraform must leave the endpoint's
# live configuration and deployment configuration alone (lifecycle.ignore_changes on a second block).
# Runs with `mock_provider "aws"`: nothing reaches AWS. `terraform test` from terraform/.

# Computed values are mocked at apply (the default): runs here apply, and a value mocked at plan time
# would differ at apply ("inconsistent final plan").
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  region         = "us-east-1"
  kms_key_arn    = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  endpoint_name  = "loom-endpoint"
  bucket_name    = "loom-data-123456789012-us-east-1"
  repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
  image_uri      = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
  model_data_url = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
}

run "terraform_rolls_out_by_default" {
  command = plan
  module {
    source = "./modules/endpoint"
  }

  assert {
    condition = (
      !output.rollouts_outside_terraform &&
      length(aws_sagemaker_endpoint.this) == 1 && length(aws_sagemaker_endpoint.rollouts_outside_terraform) == 0 &&
      output.artifact_prefix == "models/job-1/output"
    )
    error_message = "By default Terraform rolls the endpoint out, and the model role reads only its own artifact's prefix."
  }

  assert {
    condition     = tolist(output.rollback_alarm_names) == tolist(["loom-endpoint-invocation-5xx", "loom-endpoint-model-latency-p90"])
    error_message = "The rollback alarm names are an output (`loom rollout --alarm` takes them)."
  }
}

run "opt_in_creates_the_endpoint_as_terraform_would" {
  command   = apply
  state_key = "opt_in"
  module {
    source = "./modules/endpoint"
  }
  variables {
    rollouts_outside_terraform = true
  }

  assert {
    condition = (
      length(aws_sagemaker_endpoint.this) == 0 && length(aws_sagemaker_endpoint.rollouts_outside_terraform) == 1 &&
      aws_sagemaker_endpoint.rollouts_outside_terraform[0].name == "loom-endpoint" &&
      aws_sagemaker_endpoint.rollouts_outside_terraform[0].endpoint_config_name == aws_sagemaker_endpoint_configuration.this.name &&
      output.endpoint_name == "loom-endpoint" && output.endpoint_arn == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/loom-endpoint"
    )
    error_message = "With rollouts_outside_terraform the endpoint is created (once) at Terraform's configuration, under the other address."
  }

  assert {
    condition = (
      aws_sagemaker_endpoint.rollouts_outside_terraform[0].deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].type == "ALL_AT_ONCE" &&
      aws_sagemaker_endpoint.rollouts_outside_terraform[0].deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].wait_interval_in_seconds == 600 &&
      toset([for a in aws_sagemaker_endpoint.rollouts_outside_terraform[0].deployment_config[0].auto_rollback_configuration[0].alarms : a.alarm_name]) == toset(["loom-endpoint-invocation-5xx", "loom-endpoint-model-latency-p90"])
    )
    error_message = "The endpoint starts with the same blue/green deployment configuration and rollback alarms, which `loom rollout` carries forward."
  }

  assert {
    condition = (
      one([for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Resource if s.Sid == "ReadModelArtifact"]) == "arn:aws:s3:::loom-data-123456789012-us-east-1/models/*" &&
      contains(one([for s in jsondecode(aws_iam_role_policy.model.policy).Statement : s.Condition.StringLike["s3:prefix"] if s.Sid == "ListBatchInputAndModelFolder"]), "models/*") &&
      output.artifact_prefix == "models"
    )
    error_message = "`loom rollout --model-data` may name any artifact under models/ (compressed or a folder): the role must read and list models/."
  }

  assert {
    condition     = length(aws_appautoscaling_target.this) == 1 && aws_appautoscaling_target.this[0].resource_id == "endpoint/loom-endpoint/variant/AllTraffic"
    error_message = "Autoscaling stays with Terraform."
  }
}

# Applied above (mocked), then planned with another bake time: the endpoint keeps its deployment
# configuration (and configuration), which `loom rollout` owns from now on.
run "opt_in_ignores_terraform_side_changes" {
  command   = plan
  state_key = "opt_in"
  module {
    source = "./modules/endpoint"
  }
  variables {
    rollouts_outside_terraform = true
    rollout_bake_seconds       = 300
  }

  assert {
    condition = (
      aws_sagemaker_endpoint.rollouts_outside_terraform[0].endpoint_config_name == run.opt_in_creates_the_endpoint_as_terraform_would.endpoint_config_name &&
      aws_sagemaker_endpoint.rollouts_outside_terraform[0].deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].wait_interval_in_seconds == 600
    )
    error_message = "With rollouts_outside_terraform the endpoint must keep its live deployment configuration (ignore_changes)."
  }
}

# A new artifact through Terraform would replace (and delete) the configuration the endpoint still
# serves: the guard stops the plan. (After a `loom rollout` the endpoint serves another configuration
# and the same change passes: tests/infra/test_terraform.py, against moto.)
run "opt_in_refuses_to_delete_the_live_configuration" {
  command   = plan
  state_key = "opt_in"
  module {
    source = "./modules/endpoint"
  }
  variables {
    rollouts_outside_terraform = true
    model_data_url             = "s3://loom-data-123456789012-us-east-1/models/job-2/output/model.tar.gz"
  }
  expect_failures = [terraform_data.rollout_guard]
}

# The same two steps by default, in a state of their own: Terraform moves the endpoint (which is what
# undoes a `loom rollout` when the operator has not opted in).
run "default_applied" {
  command   = apply
  state_key = "default"
  module {
    source = "./modules/endpoint"
  }
}

run "default_follows_terraform_side_changes" {
  command   = plan
  state_key = "default"
  module {
    source = "./modules/endpoint"
  }
  variables {
    model_data_url       = "s3://loom-data-123456789012-us-east-1/models/job-2/output/model.tar.gz"
    rollout_bake_seconds = 300
  }

  assert {
    condition = (
      aws_sagemaker_endpoint.this[0].endpoint_config_name == output.endpoint_config_name &&
      output.endpoint_config_name != run.default_applied.endpoint_config_name &&
      aws_sagemaker_endpoint.this[0].deployment_config[0].blue_green_update_policy[0].traffic_routing_configuration[0].wait_interval_in_seconds == 300
    )
    error_message = "By default the endpoint follows Terraform's configuration and deployment configuration."
  }
}

run "root_passes_the_choice_down" {
  command = plan
  variables {
    model_data_url             = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    inference_image_tag        = "0123abc"
    lambda_zip_path            = "tests/fixtures/lambda.zip"
    rollouts_outside_terraform = true
  }

  assert {
    condition     = length(module.endpoint[0].rollback_alarm_names) == 2 && tolist(output.endpoint_rollback_alarm_names) == tolist(["loom-endpoint-invocation-5xx", "loom-endpoint-model-latency-p90"]) && module.endpoint[0].rollouts_outside_terraform
    error_message = "The root module must pass rollouts_outside_terraform to the endpoint module and output the rollback alarm names."
  }
}
