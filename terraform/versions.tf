terraform {
  # 1.9+ for variable validations that refer to other variables; tested with 1.11.4.
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    # 5.66.0 raised aws_sagemaker_endpoint's create and update waiters from 10 to 60 minutes
    # (CHANGELOG.md, 5.66.0: "Increase Create and Update InService timeouts to 60 minutes", #39090);
    # with 10 minutes a large model's start-up or a blue/green rollout fails the apply. The resource
    # has no timeouts block (checked in 5.100.0), so the floor is the only lever.
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.66, < 6.0"
    }
  }
}
