# One naming rule for every service: "<service>.<prefix>.<name>".
variable "service" {
  type = string
}
variable "prefix" {
  type = string
}
variable "name" {
  type = string
}

output "full_name" {
  value = "${var.service}.${var.prefix}.${var.name}"
}
