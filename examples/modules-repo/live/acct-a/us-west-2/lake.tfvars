# One file, two services: s3 and kms deployments, each with its own state.
s3_buckets = {
  raw     = { versioning = true }
  curated = { versioning = true }
}

kms_keys = {
  lake = {
    policy = <<-EOT
      {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]
      }
    EOT
  }
}
