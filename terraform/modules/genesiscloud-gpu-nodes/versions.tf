terraform {
  required_version = ">= 1.6"

  required_providers {
    genesiscloud = {
      source  = "genesiscloud/genesiscloud"
      version = "~> 1.1"
    }
  }
}
