module "nodes" {
  source = "../../modules/genesiscloud-gpu-nodes"

  name_prefix          = var.name_prefix
  node_count           = var.node_count
  region               = var.region
  instance_type        = var.instance_type
  image                = var.image
  ssh_public_key       = var.ssh_public_key
  admin_cidrs          = var.admin_cidrs
  triton_allowed_cidrs = var.triton_allowed_cidrs
  collector_port       = var.collector_port
  floating_ips         = var.floating_ips
  volume_size          = var.volume_size
  price_per_hour       = var.price_per_hour
}
