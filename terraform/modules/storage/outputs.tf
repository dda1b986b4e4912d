output "bucket_name" {
  description = "Name of the data/model bucket."
  value       = aws_s3_bucket.data.bucket
}

output "bucket_arn" {
  description = "ARN of the data/model bucket."
  value       = aws_s3_bucket.data.arn
}

output "logs_bucket_name" {
  description = "Name of the S3 access-log bucket (null when access logging is off)."
  value       = try(aws_s3_bucket.logs[0].bucket, null)
}
