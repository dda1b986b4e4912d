terraform {
  # 1.9+ for variable validations that refer to other variables; tested with 1.11.4.
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}
