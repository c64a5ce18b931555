terraform {
  required_providers {
    tfotest = { source = "example.com/test/tfotest" }
  }
}

variable "prefix" {
  type = string
}
variable "name" {
  type = string
}
variable "settings" {
  type = any
}
variable "tags" {
  type = map(string)
}
variable "lifecycle_policy" {
  type = string
}

module "naming" {
  source  = "../naming"
  service = "s3"
  prefix  = var.prefix
  name    = var.name
}

resource "tfotest_thing" "this" {
  name = module.naming.full_name
  content = jsonencode({
    versioning = lookup(var.settings, "versioning", false)
    tags       = var.tags
    lifecycle  = jsondecode(var.lifecycle_policy)
  })
  fail          = lookup(var.settings, "fail", false)
  delay_seconds = lookup(var.settings, "delay_seconds", 0)
}

output "name" {
  value = tfotest_thing.this.name
}
