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
variable "policy" {
  type = string
}
variable "fail" {
  type = bool
}

module "naming" {
  source  = "../naming"
  service = "kms"
  prefix  = var.prefix
  name    = var.name
}

resource "tfotest_thing" "this" {
  name    = module.naming.full_name
  content = var.policy
  fail    = var.fail
}
