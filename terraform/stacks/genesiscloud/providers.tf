# The API token comes only from the environment: GENESISCLOUD_TOKEN.
provider "genesiscloud" {}
