output "local_storage" {
  description = "Instance type => true where it has NVMe instance storage (and so refuses a volume KMS key)."
  value       = { for t in var.instance_types : t => can(regex(local.pattern, t)) }
}

output "pattern" {
  description = "The regular expression the rule uses."
  value       = local.pattern
}
