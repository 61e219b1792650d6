# Plan-level tests with a mocked AWS provider: no account, no network.
# Run with `terraform init && terraform test` (offline through a provider mirror).

mock_provider "aws" {
  mock_data "aws_ami" {
    defaults = {
      id = "ami-0123456789abcdef0"
    }
  }
  mock_data "aws_region" {
    defaults = {
      name = "us-east-1"
    }
  }
}

variables {
  node_count     = 3
  admin_cidrs    = ["203.0.113.7/32"]
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx3f2wR0m2TqP1v9a1y0Zb5O6eYcXk3s1o8p7B4d5e6 test"
}

run "defaults_are_three_g5_nodes_with_closed_ports" {
  command = plan

  assert {
    condition     = length(aws_instance.node) == 3
    error_message = "expected one aws_instance per node_count"
  }
  assert {
    condition     = alltrue([for n in aws_instance.node : n.instance_type == "g5.xlarge"])
    error_message = "the default instance type must be g5.xlarge"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.ssh : r.cidr_ipv4 != "0.0.0.0/0" && r.from_port == 22])
    error_message = "SSH must only be open to admin_cidrs"
  }
  assert {
    condition     = keys(aws_vpc_security_group_ingress_rule.ssh) == ["203.0.113.7/32"]
    error_message = "exactly one SSH rule per admin CIDR"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.triton) == 0
    error_message = "Triton ports must stay closed without triton_allowed_cidrs"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.collector.cidr_ipv4 == null
    error_message = "the collector port must be open to the nodes' security group only"
  }
  assert {
    condition     = alltrue([for n in aws_instance.node : n.metadata_options[0].http_tokens == "required" && n.root_block_device[0].encrypted])
    error_message = "IMDSv2 and encrypted root volumes are required"
  }
  assert {
    condition     = output.nodes["inferfleet-aws-1"].gpu == "A10G" && output.nodes["inferfleet-aws-3"].price_per_hour == 1.006
    error_message = "the nodes contract must carry gpu and price_per_hour"
  }
  assert {
    condition     = output.nodes["inferfleet-aws-2"].cloud == "aws" && output.nodes["inferfleet-aws-2"].ssh_user == "ubuntu"
    error_message = "the nodes contract must carry cloud and ssh_user"
  }
}

run "g4dn_is_selectable" {
  command = plan

  variables {
    node_count    = 1
    instance_type = "g4dn.xlarge"
  }

  assert {
    condition     = output.nodes["inferfleet-aws-1"].gpu == "T4" && output.nodes["inferfleet-aws-1"].price_per_hour == 0.526
    error_message = "g4dn.xlarge must map to a T4 at its list price"
  }
}

run "triton_opens_only_to_allowed_cidrs" {
  command = plan

  variables {
    triton_allowed_cidrs = ["198.51.100.0/24"]
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.triton) == 3
    error_message = "http, grpc and metrics must each get one rule per allowed CIDR"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.triton : r.cidr_ipv4 == "198.51.100.0/24"])
    error_message = "Triton rules must use triton_allowed_cidrs"
  }
}

run "ami_override_skips_the_lookup" {
  command = plan

  variables {
    ami_id = "ami-0fedcba9876543210"
  }

  assert {
    condition     = length(data.aws_ami.gpu) == 0 && aws_instance.node[0].ami == "ami-0fedcba9876543210"
    error_message = "ami_id must override the AMI data source"
  }
}

run "zero_nodes_is_refused" {
  command = plan

  variables {
    node_count = 0
  }

  expect_failures = [var.node_count]
}

run "empty_admin_cidrs_is_refused" {
  command = plan

  variables {
    admin_cidrs = []
  }

  expect_failures = [var.admin_cidrs]
}

run "unsupported_instance_family_is_refused" {
  command = plan

  variables {
    instance_type = "t3.micro"
  }

  expect_failures = [var.instance_type]
}
