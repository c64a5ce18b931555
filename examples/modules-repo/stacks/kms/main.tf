# Root module of the kms service.
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
variable "kms_keys" {
  type    = any
  default = {}
}

module "key" {
  source   = "../../modules/key"
  for_each = var.kms_keys

  prefix = "${var.tfo_account}.${var.tfo_region}.${var.tfo_project}"
  name   = each.key
  policy = lookup(each.value, "policy", "")
  fail   = lookup(each.value, "fail", false)
}
