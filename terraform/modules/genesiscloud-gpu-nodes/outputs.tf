output "nodes" {
  description = "The fleet contract: node name => { public_ip, private_ip, ssh_user, cloud, region, instance_type, gpu, price_per_hour }."
  value = {
    for i, node in genesiscloud_instance.node : node.name => {
      public_ip      = var.floating_ips ? genesiscloud_floating_ip.node[i].ip_address : node.public_ip
      private_ip     = node.private_ip
      ssh_user       = var.ssh_user
      cloud          = "genesiscloud"
      region         = node.region
      instance_type  = node.type
      gpu            = local.gpu
      price_per_hour = lookup(var.price_per_hour, node.type, null)
    }
  }
}

output "security_group_id" {
  description = "ID of the nodes' security group."
  value       = genesiscloud_security_group.nodes.id
}

output "instance_ids" {
  description = "Genesis Cloud instance IDs, in node order."
  value       = genesiscloud_instance.node[*].id
}

output "startup_script" {
  description = "The node firewall script run at first boot (for review)."
  value       = local.startup_script
}
