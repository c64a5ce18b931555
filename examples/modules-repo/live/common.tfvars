# Applied under every deployment (shallowest layer first; a deeper file replaces what it sets).
owner = "platform-team"
tags = {
  managed_by = "tfo"
}
