variable "name_prefix" {
  description = "Prefix for resource names (the role is <name_prefix>-github-actions)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix must be 2-20 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "github_repository" {
  description = "GitHub repository allowed to assume the role, as owner/name."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "github_branch" {
  description = "Branch whose workflow runs may assume the role."
  type        = string
  default     = "main"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.github_branch)) && !strcontains(var.github_branch, "*")
    error_message = "github_branch must be a single branch name (no wildcards)."
  }
}

variable "github_release_environment" {
  description = "GitHub environment whose jobs may also assume the role (OIDC subject repo:<owner>/<name>:environment:<name>), e.g. release for the images workflow's release-tag job. Protect it first (required reviewers, deployment tags v*): GitHub creates an unprotected environment on first use. null (default) trusts none."
  type        = string
  default     = null

  validation {
    condition     = var.github_release_environment == null || can(regex("^[A-Za-z0-9._-]{1,255}$", coalesce(var.github_release_environment, "-")))
    error_message = "github_release_environment must be a GitHub environment name (letters, digits, . _ -), without wildcards."
  }
}

variable "github_tag_pattern" {
  description = "Tag pattern (IAM StringLike) whose workflow runs may also assume the role: anyone who may push a matching tag gets the role, so set it only with protected tags (a tag ruleset). null (default) trusts no tag; prefer github_release_environment."
  type        = string
  default     = null

  validation {
    condition     = var.github_tag_pattern == null || can(regex("^[A-Za-z0-9._/-][A-Za-z0-9._/*-]*$", var.github_tag_pattern))
    error_message = "github_tag_pattern must be a tag name or a pattern such as v*, not starting with *."
  }
}

variable "oidc_provider_arn" {
  description = "ARN of an existing token.actions.githubusercontent.com OIDC provider (an account holds one); null creates it."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\\.actions\\.githubusercontent\\.com$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be the ARN of the token.actions.githubusercontent.com OIDC provider."
  }
}

variable "repository_arns" {
  description = "ARNs of the ECR repositories CI may push to."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.repository_arns) > 0 && alltrue([for a in var.repository_arns : can(regex("^arn:aws[a-z-]*:ecr:", a))])
    error_message = "repository_arns must be a non-empty list of ECR repository ARNs."
  }
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
  nullable    = false
}
