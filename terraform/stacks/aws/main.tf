module "nodes" {
  source = "../../modules/aws-gpu-nodes"

  name_prefix          = var.name_prefix
  node_count           = var.node_count
  instance_type        = var.instance_type
  ami_id               = var.ami_id
  ssh_public_key       = var.ssh_public_key
  admin_cidrs          = var.admin_cidrs
  triton_allowed_cidrs = var.triton_allowed_cidrs
  collector_port       = var.collector_port
  price_per_hour       = var.price_per_hour
  detailed_monitoring  = var.detailed_monitoring
}
