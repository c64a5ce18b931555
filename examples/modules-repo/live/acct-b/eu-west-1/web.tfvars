s3_buckets = {
  site = { versioning = false }
}
owner = "web-team"
