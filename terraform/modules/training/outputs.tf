output "role_arn" {
  description = "ARN of the SageMaker training execution role (RoleArn for CreateTrainingJob)."
  value       = aws_iam_role.training.arn
}

output "role_name" {
  description = "Name of the SageMaker training execution role."
  value       = aws_iam_role.training.name
}

output "job_log_group_names" {
  description = "SageMaker job log groups created here (empty with create_job_log_groups = false)."
  value       = sort([for g in aws_cloudwatch_log_group.jobs : g.name])
}
