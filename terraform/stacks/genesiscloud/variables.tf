variable "region" {
  description = "Genesis Cloud region; null keeps the module default (NORD-NO-KRS-1)."
  type        = string
  default     = null
}

variable "name_prefix" {
  description = "Prefix of resource and node names (nodes: <name_prefix>-1 ...)."
  type        = string
  default     = "inferfleet-gc"
}

variable "node_count" {
  description = "Number of GPU nodes."
  type        = number
  default     = 1
}

variable "instance_type" {
  description = "Genesis Cloud instance type; null keeps the module default (RTX 3080)."
  type        = string
  default     = null
}

variable "image" {
  description = "Image slug or ID; null keeps the module default (ubuntu:22.04)."
  type        = string
  default     = null
}

variable "ssh_public_key" {
  description = "OpenSSH public key installed on the nodes (content)."
  type        = string
}

variable "admin_cidrs" {
  description = "CIDR blocks allowed to reach SSH; required, never open by default."
  type        = list(string)
}

variable "triton_allowed_cidrs" {
  description = "CIDR blocks allowed to reach Triton's ports; empty keeps them closed."
  type        = list(string)
  default     = []
}

variable "collector_port" {
  description = "Fleet collector port, open to the fleet's private network only."
  type        = number
  default     = 8080
}

variable "floating_ips" {
  description = "Give every node a floating public IPv4."
  type        = bool
  default     = false
}

variable "volume_size" {
  description = "Extra data volume per node in GiB; 0 for none."
  type        = number
  default     = 0
}

variable "price_per_hour" {
  description = "Price override in USD/hour per instance type; null keeps the module's list prices."
  type        = map(number)
  default     = null
}
