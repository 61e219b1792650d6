locals {
  names = [for i in range(var.node_count) : "${var.name_prefix}-${i + 1}"]
  gpu_matches = [
    for k in sort(keys(var.gpu_by_type)) : var.gpu_by_type[k]
    if strcontains(lower(var.instance_type), k)
  ]
  gpu = length(local.gpu_matches) > 0 ? local.gpu_matches[0] : "unknown"

  triton_open = length(var.triton_allowed_cidrs) > 0

  # Genesis Cloud security-group rules have no source address: the group opens the
  # ports, and the node firewall below narrows each one to its allowed sources.
  # That firewall is the only reason for a startup script.
  startup_script = templatefile("${path.module}/templates/firewall.sh.tftpl", {
    admin_cidrs          = var.admin_cidrs
    triton_allowed_cidrs = var.triton_allowed_cidrs
    triton_ports         = [var.triton_ports.http, var.triton_ports.grpc, var.triton_ports.metrics]
    collector_port       = var.collector_port
    private_network_cidr = var.private_network_cidr
  })
}

resource "genesiscloud_ssh_key" "this" {
  name       = "${var.name_prefix}-key"
  public_key = var.ssh_public_key
}

resource "genesiscloud_security_group" "nodes" {
  name        = "${var.name_prefix}-nodes"
  region      = var.region
  description = "inferfleet GPU nodes: SSH; Triton only with triton_allowed_cidrs; sources narrowed by the node firewall"
  rules = concat(
    [{ direction = "ingress", protocol = "tcp", port_range_min = 22, port_range_max = 22 }],
    local.triton_open ? [
      for p in [var.triton_ports.http, var.triton_ports.grpc, var.triton_ports.metrics] :
      { direction = "ingress", protocol = "tcp", port_range_min = p, port_range_max = p }
    ] : [],
    [{ direction = "ingress", protocol = "tcp", port_range_min = var.collector_port, port_range_max = var.collector_port }],
    [{ direction = "egress", protocol = "all", port_range_min = null, port_range_max = null }],
  )
}

resource "genesiscloud_floating_ip" "node" {
  count       = var.floating_ips ? var.node_count : 0
  name        = "${local.names[count.index]}-ip"
  description = "public IPv4 of ${local.names[count.index]}"
  region      = var.region
  version     = "ipv4"
}

resource "genesiscloud_volume" "data" {
  count       = var.volume_size > 0 ? var.node_count : 0
  name        = "${local.names[count.index]}-data"
  description = "model and engine storage of ${local.names[count.index]}"
  region      = var.region
  size        = var.volume_size
  type        = var.volume_type
}

resource "genesiscloud_instance" "node" {
  count              = var.node_count
  name               = local.names[count.index]
  hostname           = local.names[count.index]
  region             = var.region
  image              = var.image
  type               = var.instance_type
  disk_size          = var.disk_size
  ssh_key_ids        = [genesiscloud_ssh_key.this.id]
  security_group_ids = [genesiscloud_security_group.nodes.id]
  floating_ip_id     = var.floating_ips ? genesiscloud_floating_ip.node[count.index].id : null
  volume_ids         = var.volume_size > 0 ? [genesiscloud_volume.data[count.index].id] : null

  metadata = {
    startup_script = local.startup_script
  }
}
