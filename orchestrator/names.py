"""Names that become paths and keys (account, project, region, service) must be boring."""

from __future__ import annotations

import re

# A leading letter or digit, then letters, digits, '.', '_' or '-': no '/', no '..', no spaces,
# no control or non-ASCII characters. Long enough for AWS account aliases and project names.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def unsafe_name_reason(value: str) -> str | None:
    """Why `value` is not a safe path segment, or None when it is."""
    if not value:
        return "is empty"
    if ".." in value:
        return f"{value!r} contains '..'"
    if not SAFE_NAME.fullmatch(value):
        return (f"{value!r} is not a safe name (letters, digits, '.', '_', '-'; "
                "starting with a letter or digit; at most 63)")
    return None
