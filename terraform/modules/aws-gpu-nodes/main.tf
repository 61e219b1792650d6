data "aws_ami" "gpu" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = var.ami_owners

  filter {
    name   = "name"
    values = [var.ami_name_pattern]
  }
}

data "aws_vpc" "default" {
  count   = var.vpc_id == null ? 1 : 0
  default = true
}

data "aws_region" "current" {}

locals {
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.gpu[0].id
  vpc_id = var.vpc_id != null ? var.vpc_id : data.aws_vpc.default[0].id
  family = split(".", var.instance_type)[0]
  gpu    = lookup({ g5 = "A10G", g4dn = "T4", p3 = "V100" }, local.family, "unknown")
  tags   = merge({ "inferfleet:fleet" = var.name_prefix, "managed-by" = "terraform" }, var.tags)

  triton_rules = merge([
    for name, port in var.triton_ports : {
      for cidr in var.triton_allowed_cidrs : "${name}-${cidr}" => { port = port, cidr = cidr }
    }
  ]...)
}

resource "aws_key_pair" "this" {
  key_name   = "${var.name_prefix}-key"
  public_key = var.ssh_public_key
  tags       = local.tags
}

resource "aws_security_group" "nodes" {
  name        = "${var.name_prefix}-nodes"
  description = "inferfleet GPU nodes: SSH from admin CIDRs, Triton only from allowed CIDRs, collector between nodes"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each          = toset(var.admin_cidrs)
  security_group_id = aws_security_group.nodes.id
  description       = "SSH from an admin CIDR"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "triton" {
  for_each          = local.triton_rules
  security_group_id = aws_security_group.nodes.id
  description       = "Triton ${split("-", each.key)[0]} from an allowed CIDR"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "collector" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "fleet collector, from the nodes of this fleet only"
  ip_protocol                  = "tcp"
  from_port                    = var.collector_port
  to_port                      = var.collector_port
  referenced_security_group_id = aws_security_group.nodes.id
  tags                         = local.tags
}

# Outbound is open: nodes install the stack from apt, PyPI and NGC and push to the collector.
resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.nodes.id
  description       = "outbound: package mirrors, container registries, the collector"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_instance" "node" {
  # checkov:skip=CKV_AWS_88: Ansible reaches the nodes over SSH; the public IP is filtered by the security group (admin_cidrs only, Triton closed by default)
  # checkov:skip=CKV2_AWS_41: the nodes call no AWS API, so an instance role would only hand out credentials nobody needs
  count                       = var.node_count
  ami                         = local.ami_id
  instance_type               = var.instance_type
  key_name                    = aws_key_pair.this.key_name
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [aws_security_group.nodes.id]
  associate_public_ip_address = true
  monitoring                  = var.detailed_monitoring
  ebs_optimized               = true

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  root_block_device {
    volume_size = var.root_volume_size
    volume_type = "gp3"
    encrypted   = true
  }

  tags = merge(local.tags, { Name = "${var.name_prefix}-${count.index + 1}" })

  lifecycle {
    ignore_changes = [ami]
  }
}
