output "role_arn" {
  description = "ARN of the role GitHub Actions assumes (set it as the AWS_ROLE_ARN repository variable)."
  value       = aws_iam_role.ci.arn
}

output "oidc_provider_arn" {
  description = "ARN of the GitHub OIDC provider in use."
  value       = local.provider_arn
}
