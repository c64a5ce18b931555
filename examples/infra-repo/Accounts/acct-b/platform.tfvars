tags = {
  team = "platform"
}

iam_roles = {
  deployer = { policy_file = "policies/deployer.json", delay_seconds = 1 }
}
