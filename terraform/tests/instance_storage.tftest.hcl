# modules/instance_storage: the one rule for "this instance type has NVMe instance storage and so refuses
# a volume KMS key" (CreateEndpointConfig KmsKeyId, CreateTrainingJob VolumeKmsKeyId), used by the
# endpoint and search modules. The table follows the SageMaker guide's instance storage volumes page
# (https://docs.aws.amazon.com/sagemaker/latest/dg/host-instance-storage.html) and EC2's instance store
# table for the families it lists; tests/operations/test_sagemaker_jobs.py checks the same table against
# operations/sagemaker_jobs.py has_instance_storage.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  table = {
    # NVMe instance storage: a "d" attribute ...
    "ml.m5d.large"     = true
    "ml.m5d.24xlarge"  = true
    "ml.m6id.large"    = true
    "ml.c5d.xlarge"    = true
    "ml.c6id.xlarge"   = true
    "ml.r5d.2xlarge"   = true
    "ml.r6gd.xlarge"   = true
    "ml.r7gd.large"    = true
    "ml.c7gd.large"    = true
    "ml.g4dn.xlarge"   = true
    "ml.g4ad.xlarge"   = true
    "ml.p3dn.24xlarge" = true
    "ml.p4d.24xlarge"  = true
    "ml.p4de.24xlarge" = true
    # ... or an accelerated family with NVMe storage and no "d" in its name
    "ml.g5.2xlarge"       = true
    "ml.g5.48xlarge"      = true
    "ml.g6.xlarge"        = true
    "ml.g6e.12xlarge"     = true
    "ml.gr6.4xlarge"      = true
    "ml.p5.48xlarge"      = true
    "ml.p5e.48xlarge"     = true
    "ml.p5en.48xlarge"    = true
    "ml.p6-b200.48xlarge" = true
    "ml.trn1.2xlarge"     = true
    "ml.trn1.32xlarge"    = true
    "ml.trn1n.32xlarge"   = true
    "ml.trn2.48xlarge"    = true
    # EBS only: the project key encrypts the volume
    "ml.m5.xlarge"    = false
    "ml.c5.2xlarge"   = false
    "ml.c5n.xlarge"   = false
    "ml.c6i.xlarge"   = false
    "ml.c7g.xlarge"   = false
    "ml.m7i.large"    = false
    "ml.p3.2xlarge"   = false
    "ml.inf1.xlarge"  = false
    "ml.inf2.xlarge"  = false
    "ml.t3.medium"    = false
    "ml.r7i.large"    = false
    "ml.g4ad.4xlarge" = true
  }
}

run "instance_storage_rule_matches_the_table" {
  command = plan

  module {
    source = "./modules/instance_storage"
  }

  variables {
    instance_types = keys(var.table)
  }

  assert {
    condition     = output.local_storage == var.table
    error_message = "Types the rule gets wrong: ${jsonencode({ for t, v in var.table : t => output.local_storage[t] if output.local_storage[t] != v })}"
  }
}

run "instance_storage_refuses_a_non_instance_type" {
  command = plan

  module {
    source = "./modules/instance_storage"
  }

  variables {
    instance_types = ["g5.2xlarge"]
  }

  expect_failures = [var.instance_types]
}

# The endpoint and search modules use this module, not lists of their own.
run "endpoint_module_uses_the_shared_rule" {
  command = plan

  module {
    source = "./modules/endpoint"
  }

  variables {
    endpoint_name  = "loom-endpoint"
    bucket_name    = "loom-data-123456789012-us-east-1"
    kms_key_arn    = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/loom-inference"
    image_uri      = "123456789012.dkr.ecr.us-east-1.amazonaws.com/loom-inference:0123abc"
    model_data_url = "s3://loom-data-123456789012-us-east-1/models/job-1/output/model.tar.gz"
    instance_type  = "ml.trn1n.32xlarge"
  }

  assert {
    condition     = aws_sagemaker_endpoint_configuration.this.kms_key_arn == null
    error_message = "ml.trn1n has NVMe storage: no KmsKeyId."
  }
}
