# Account, partition and Region of the provider this module runs with: read here, not passed in.
# None of these calls AWS except GetCallerIdentity (STS); `terraform test` mocks all three
# (tests/mocks/aws.tfmock.hcl).
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
}
