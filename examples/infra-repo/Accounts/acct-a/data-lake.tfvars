# One file, two services: tfo shards it into s3/... and kms/... deployments with separate state.
region = "us-west-2"
tags = {
  team = "data"
}
api_token = "tok-demo-Zq81vX2mP0"

s3_buckets = {
  raw     = { versioning = true, delay_seconds = 1 }
  curated = { versioning = true, delay_seconds = 1 }
}

kms_keys = {
  lake = { rotation = true, delay_seconds = 1 }
}
