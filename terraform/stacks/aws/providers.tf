# Credentials come only from the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
# AWS_PROFILE, ...). aws_endpoint_url points every API the module uses at an
# emulator (moto) for offline tests; leave it null for real AWS.
provider "aws" {
  region = var.region

  skip_credentials_validation = var.aws_endpoint_url != null
  skip_requesting_account_id  = var.aws_endpoint_url != null
  skip_metadata_api_check     = var.aws_endpoint_url != null

  dynamic "endpoints" {
    for_each = var.aws_endpoint_url == null ? [] : [var.aws_endpoint_url]
    content {
      ec2 = endpoints.value
      iam = endpoints.value
      sts = endpoints.value
    }
  }

  default_tags {
    tags = { "inferfleet:managed" = "true" }
  }
}
