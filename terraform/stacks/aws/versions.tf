terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # State stays local; `agent infra` points it at .state/terraform/aws/. For a
  # shared remote state put a backend_override.tf here (see terraform/README.md).
  backend "local" {}
}
