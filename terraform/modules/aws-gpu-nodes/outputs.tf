output "nodes" {
  description = "The fleet contract: node name => { public_ip, private_ip, ssh_user, cloud, region, instance_type, gpu, price_per_hour }."
  value = {
    for node in aws_instance.node : node.tags["Name"] => {
      public_ip      = node.public_ip
      private_ip     = node.private_ip
      ssh_user       = var.ssh_user
      cloud          = "aws"
      region         = data.aws_region.current.name
      instance_type  = node.instance_type
      gpu            = local.gpu
      price_per_hour = lookup(var.price_per_hour, node.instance_type, null)
    }
  }
}

output "security_group_id" {
  description = "ID of the nodes' security group."
  value       = aws_security_group.nodes.id
}

output "instance_ids" {
  description = "EC2 instance IDs, in node order."
  value       = aws_instance.node[*].id
}

output "ami_id" {
  description = "The AMI the nodes booted."
  value       = local.ami_id
}
