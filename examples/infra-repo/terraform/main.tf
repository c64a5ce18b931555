# The bundled example's root module. It serves every service: tfo gives each deployment only its
# own service's variables, so the other maps stay empty and each state holds one service.
terraform {
  required_version = ">= 1.0.0"
  required_providers {
    tfotest = { source = "example.com/test/tfotest" }
  }
  # Partial configuration: tfo passes bucket/key/region (or overrides it with the local backend).
  backend "s3" {}
}

provider "tfotest" {}

# Set by tfo for every deployment through TF_VAR_* (undeclared ones are ignored by Terraform).
variable "tfo_account" {
  type    = string
  default = "unknown"
}
variable "tfo_project" {
  type    = string
  default = "unknown"
}

variable "region" {
  type    = string
  default = "us-east-1"
}
variable "tags" {
  type    = map(string)
  default = {}
}
variable "api_token" {
  type      = string
  default   = ""
  sensitive = true
}

# The outputs of the deployments this one depends on ([tfo.dependencies], tfo_depends_on), set by tfo:
# { "<service or deployment id>" = { "<output>" = value } }.
variable "tfo_dependency_outputs" {
  type    = any
  default = {}
}

variable "s3_buckets" {
  type    = any
  default = {}
}
variable "kms_keys" {
  type    = any
  default = {}
}
variable "iam_roles" {
  type    = any
  default = {}
}

locals {
  prefix = "${var.tfo_account}.${var.region}.${var.tfo_project}"
}

resource "tfotest_thing" "bucket" {
  for_each = var.s3_buckets
  name     = "s3.${local.prefix}.${each.key}"
  content = jsonencode(merge(
    { versioning = lookup(each.value, "versioning", false), tags = var.tags },
    # kms_key = "NAME": encrypted with that key of the kms deployment it depends on (its id from its outputs;
    # a plan made before the key's first apply cannot know it yet)
    { for k in compact([lookup(each.value, "kms_key", "")]) : "kms_key_id" => try(
      var.tfo_dependency_outputs["kms"]["key_ids"][k], "(not applied yet: kms key ${k})")
    },
  ))
  fail          = lookup(each.value, "fail", false)
  delay_seconds = lookup(each.value, "delay_seconds", 0)
}

resource "tfotest_thing" "key" {
  for_each      = var.kms_keys
  name          = "kms.${local.prefix}.${each.key}"
  content       = jsonencode({ rotation = lookup(each.value, "rotation", true) })
  secret        = var.api_token
  fail          = lookup(each.value, "fail", false)
  delay_seconds = lookup(each.value, "delay_seconds", 0)
}

resource "tfotest_thing" "role" {
  for_each      = var.iam_roles
  name          = "iam.${local.prefix}.${each.key}"
  content       = file(each.value.policy_file)
  fail          = lookup(each.value, "fail", false)
  delay_seconds = lookup(each.value, "delay_seconds", 0)
}

output "key_ids" {
  value = { for k, key in tfotest_thing.key : k => key.id }
}

output "names" {
  value = concat(
    [for b in tfotest_thing.bucket : b.name],
    [for k in tfotest_thing.key : k.name],
    [for r in tfotest_thing.role : r.name],
  )
}
