"""Producers: the `tfo` command line (and, later, the webhook)."""
