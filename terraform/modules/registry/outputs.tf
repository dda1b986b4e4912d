output "repository_urls" {
  description = "Repository URLs by image (training, inference)."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "repository_arns" {
  description = "Repository ARNs by image (training, inference)."
  value       = { for k, r in aws_ecr_repository.this : k => r.arn }
}

output "repository_names" {
  description = "Repository names by image (training, inference)."
  value       = { for k, r in aws_ecr_repository.this : k => r.name }
}
