variable "name_prefix" {
  description = "Prefix for the repository names (<name_prefix>-training, <name_prefix>-inference)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix must be 2-20 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "kms_key_arn" {
  description = "KMS key that encrypts the images at rest."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "keep_last_images" {
  description = "How many images each disposable tag prefix keeps; older ones expire. Other tagged images never expire."
  type        = number
  default     = 20
  nullable    = false

  validation {
    condition     = var.keep_last_images >= 1 && var.keep_last_images <= 1000 && floor(var.keep_last_images) == var.keep_last_images
    error_message = "keep_last_images must be a whole number between 1 and 1000."
  }
}

variable "force_delete" {
  description = "Allow terraform destroy to delete repositories that still hold images."
  type        = bool
  default     = false
  nullable    = false
}

variable "tags" {
  description = "Tags for every resource of this module."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "disposable_tag_prefixes" {
  description = "Tag prefixes CI uses for throw-away images (branch builds); images with such a tag expire beyond keep_last_images per prefix. Deployed images must carry no such tag."
  type        = list(string)
  default     = ["ci-", "pr-"]
  nullable    = false

  validation {
    condition     = alltrue([for p in var.disposable_tag_prefixes : can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", p))])
    error_message = "disposable_tag_prefixes must be non-empty tag prefixes (letters, digits, _ . -)."
  }
}

variable "untagged_expire_days" {
  description = "Days after which untagged images expire."
  type        = number
  default     = 7
  nullable    = false

  validation {
    condition     = var.untagged_expire_days >= 1 && floor(var.untagged_expire_days) == var.untagged_expire_days
    error_message = "untagged_expire_days must be a whole number of at least 1."
  }
}
