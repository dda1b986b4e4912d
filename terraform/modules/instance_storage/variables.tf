variable "instance_types" {
  description = "SageMaker instance types to classify (e.g. [\"ml.g5.2xlarge\"])."
  type        = list(string)
  nullable    = false

  validation {
    condition     = alltrue([for t in var.instance_types : can(regex("^ml\\.[a-z0-9]+(-[a-z0-9]+)?\\.[a-z0-9]+$", t))])
    error_message = "instance_types must be SageMaker instance types such as ml.g5.2xlarge."
  }
}
