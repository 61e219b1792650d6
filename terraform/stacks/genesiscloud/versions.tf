terraform {
  required_version = ">= 1.6"

  required_providers {
    genesiscloud = {
      source  = "genesiscloud/genesiscloud"
      version = "~> 1.1"
    }
  }

  # State stays local; `agent infra` points it at .state/terraform/genesiscloud/.
  # For a shared remote state put a backend_override.tf here (see terraform/README.md).
  backend "local" {}
}
