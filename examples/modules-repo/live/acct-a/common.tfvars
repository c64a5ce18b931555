# Account acct-a: its own tags replace the repository-wide ones (Windows line endings).
tags = {
  managed_by  = "tfo"
  cost_center = "cc-1234"
}
