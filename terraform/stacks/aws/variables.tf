variable "region" {
  description = "AWS region of the fleet."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of resource and node names (nodes: <name_prefix>-1 ...)."
  type        = string
  default     = "inferfleet-aws"
}

variable "node_count" {
  description = "Number of GPU nodes."
  type        = number
  default     = 1
}

variable "instance_type" {
  description = "EC2 GPU instance type (g5.xlarge, g4dn.xlarge, p3.2xlarge, ...); null keeps the module default g5.xlarge."
  type        = string
  default     = null
}

variable "ami_id" {
  description = "AMI override; null finds the newest Deep Learning AMI."
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
  description = "Fleet collector port, open between the nodes only."
  type        = number
  default     = 8080
}

variable "price_per_hour" {
  description = "Price override in USD/hour per instance type; null keeps the module's list prices."
  type        = map(number)
  default     = null
}

variable "aws_endpoint_url" {
  description = "Endpoint for EC2, IAM and STS (an AWS emulator such as moto_server for offline tests); null for real AWS."
  type        = string
  default     = null
}

variable "detailed_monitoring" {
  description = "EC2 detailed monitoring (false for emulators that do not implement it)."
  type        = bool
  default     = true
}
