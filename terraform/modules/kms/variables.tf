variable "name_prefix" {
  description = "Prefix for resource names; the key alias becomes alias/<name_prefix>."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name_prefix))
    error_message = "name_prefix must be 2-31 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "deletion_window_in_days" {
  description = "Days a deleted key waits before it is destroyed (7-30)."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be between 7 and 30."
  }
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "logs_service_principal" {
  description = "CloudWatch Logs service principal for the key policy; null asks the provider's aws_service_principal data source (e.g. logs.us-east-1.amazonaws.com)."
  type        = string
  default     = null

  validation {
    condition     = var.logs_service_principal == null || can(regex("^logs\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?$", coalesce(var.logs_service_principal, "-")))
    error_message = "logs_service_principal must look like logs.<region>.amazonaws.com."
  }
}
