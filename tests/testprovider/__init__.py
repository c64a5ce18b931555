"""The project's own small Terraform provider, written in Python with the `tf` framework.

Resources persist as JSON files in a "world" directory outside Terraform, so tests and the demo can
compare what really exists with what Terraform state claims. `fail = true` makes create/update fail
after the other resources of the same apply went through: the partial-apply case rollback exists for.
"""
