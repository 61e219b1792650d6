# Plan-level tests with a mocked Genesis Cloud provider (no token, no API calls).
# mock_provider still needs the provider's schema: `terraform init` must be able
# to install genesiscloud/genesiscloud (registry access or a provider mirror).

mock_provider "genesiscloud" {}

variables {
  node_count     = 2
  admin_cidrs    = ["203.0.113.7/32"]
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx3f2wR0m2TqP1v9a1y0Zb5O6eYcXk3s1o8p7B4d5e6 test"
}

run "defaults_are_rtx3080_nodes_with_closed_triton" {
  command = plan

  assert {
    condition     = length(genesiscloud_instance.node) == 2
    error_message = "expected one instance per node_count"
  }
  assert {
    condition     = alltrue([for n in genesiscloud_instance.node : n.type == "vcpu-4_memory-16g_nvidia-rtx-3080-1"])
    error_message = "the default type must be the RTX 3080 type"
  }
  assert {
    condition     = length([for r in genesiscloud_security_group.nodes.rules : r if r.direction == "ingress" && r.port_range_min == 8000]) == 0
    error_message = "Triton ports must stay closed without triton_allowed_cidrs"
  }
  assert {
    condition     = strcontains(local.startup_script, "ip saddr 203.0.113.7/32 tcp dport 22 accept") && strcontains(local.startup_script, "policy drop")
    error_message = "the node firewall must allow SSH from admin_cidrs only"
  }
  assert {
    condition     = output.nodes["inferfleet-gc-1"].gpu == "RTX 3080" && output.nodes["inferfleet-gc-2"].cloud == "genesiscloud"
    error_message = "the nodes contract must carry gpu and cloud"
  }
  assert {
    condition     = length(genesiscloud_floating_ip.node) == 0 && length(genesiscloud_volume.data) == 0
    error_message = "floating IPs and volumes are opt-in"
  }
}

run "triton_and_extras_are_opt_in" {
  command = plan

  variables {
    triton_allowed_cidrs = ["198.51.100.0/24"]
    floating_ips         = true
    volume_size          = 200
  }

  assert {
    condition     = length([for r in genesiscloud_security_group.nodes.rules : r if r.direction == "ingress" && contains([8000, 8001, 8002], r.port_range_min)]) == 3
    error_message = "triton_allowed_cidrs must open http, grpc and metrics"
  }
  assert {
    condition     = length(genesiscloud_floating_ip.node) == 2 && length(genesiscloud_volume.data) == 2
    error_message = "one floating IP and one volume per node"
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
