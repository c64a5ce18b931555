# Root module of the s3 service: one bucket module per entry of s3_buckets.
terraform {
  required_version = ">= 1.0.0"
  required_providers {
    tfotest = { source = "example.com/test/tfotest" }
  }
  backend "s3" {}
}

variable "tfo_account" {
  type    = string
  default = "unknown"
}
variable "tfo_project" {
  type    = string
  default = "unknown"
}
variable "tfo_region" {
  type    = string
  default = "unknown"
}
variable "owner" {
  type    = string
  default = "nobody"
}
variable "tags" {
  type    = map(string)
  default = {}
}
variable "s3_buckets" {
  type    = any
  default = {}
}

module "bucket" {
  source   = "../../modules/bucket"
  for_each = var.s3_buckets

  prefix           = "${var.tfo_account}.${var.tfo_region}.${var.tfo_project}"
  name             = each.key
  settings         = each.value
  tags             = merge(var.tags, { owner = var.owner })
  lifecycle_policy = file("${path.module}/../../shared/policies/lifecycle.json")
}

output "buckets" {
  value = [for b in module.bucket : b.name]
}
