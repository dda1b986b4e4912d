# Region and credentials come from the environment (AWS_REGION / AWS_PROFILE / OIDC) unless
# var.region is set. No default_tags: every module tags its resources with var.tags.
provider "aws" {
  region = var.region
}
