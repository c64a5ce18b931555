# Bootstrap for tfo's S3 store: state bucket (versioning, SSE-KMS, no public access, lifecycle),
# and the DynamoDB lock table Terraform and tfo share. Apply once per organisation, with local state.
terraform {
  required_version = ">= 1.0.0"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 4.0" }
  }
}

variable "bucket" { type = string }
variable "lock_table" {
  type    = string
  default = "terraform-locks"
}
variable "audit_retention_days" {
  type    = number
  default = 90
}
variable "audit_noncurrent_days" {
  # How long an overwritten or deleted audit record stays recoverable (the worker's role can write
  # audit/, and a plan runs with credentials near it). For records nobody can erase, use Object Lock.
  type    = number
  default = 30
}
variable "backup_noncurrent_days" {
  type    = number
  default = 365
}

resource "aws_kms_key" "state" {
  description         = "tfo state, backups and audit"
  enable_key_rotation = true
}

resource "aws_s3_bucket" "state" {
  bucket = var.bucket
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id
  versioning_configuration { status = "Enabled" }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.state.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    id     = "audit-90-days"
    status = "Enabled"
    filter { prefix = "audit/" }
    expiration { days = var.audit_retention_days }
    # In a versioned bucket, expiring only makes the current version noncurrent (a delete marker):
    # the record itself is removed only by this, and the markers left behind by the next rule.
    noncurrent_version_expiration { noncurrent_days = var.audit_noncurrent_days }
  }
  rule {
    id     = "audit-delete-markers"
    status = "Enabled"
    filter { prefix = "audit/" }
    expiration { expired_object_delete_marker = true }
  }
  rule {
    id     = "backups-keep-versions"
    status = "Enabled"
    filter { prefix = "backups/" }
    noncurrent_version_expiration { noncurrent_days = var.backup_noncurrent_days }
  }
}

resource "aws_dynamodb_table" "locks" {
  name         = var.lock_table
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "LockID"
  attribute {
    name = "LockID"
    type = "S"
  }
  point_in_time_recovery { enabled = true }
  server_side_encryption { enabled = true }
}

output "tfo_toml" {
  value = <<-EOT
    [tfo.store]
    kind = "s3"
    bucket = "${aws_s3_bucket.state.id}"
    lock_table = "${aws_dynamodb_table.locks.name}"
    sse = "aws:kms"
    kms_key_id = "${aws_kms_key.state.arn}"
  EOT
}
