output "nodes" {
  description = "The fleet contract (same shape for every cloud): name => { public_ip, private_ip, ssh_user, cloud, region, instance_type, gpu, price_per_hour }."
  value       = module.nodes.nodes
}
