output "role_arn" {
  description = "ARN of the SageMaker training execution role (RoleArn for CreateTrainingJob)."
  value       = aws_iam_role.training.arn
}

output "role_name" {
  description = "Name of the SageMaker training execution role."
  value       = aws_iam_role.training.name
}
