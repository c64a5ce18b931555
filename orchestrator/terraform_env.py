"""What terraform, its providers and everything they start may see of tfo's environment.

A plan runs the repository's code: providers, `external` data sources, `file("/proc/self/environ")`.
So terraform gets an allowlist, not tfo's environment: what Terraform and the clouds' SDKs read
(TF_*, AWS_*, ARM_*, GOOGLE_*, ...), the basics a process needs, proxies and certificate bundles, and
names the operator adds (`[tfo] terraform_env`). tfo's own secrets are withheld even when a pattern
would match them: the GitHub token and App key, the webhook secret, everything named TFO_* (the
broker URL with its password, the store's encryption key, Flower's credentials).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping

BASICS = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    # proxies (both spellings are in use) and certificate bundles, which providers need behind a proxy
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
})
# Terraform (TF_CLI_CONFIG_FILE, TF_PLUGIN_CACHE_DIR, TF_VAR_*, TF_TOKEN_*) and the clouds' credentials
# and settings as their providers read them.
PREFIXES = ("LC_", "TF_", "AWS_", "ARM_", "GOOGLE_", "CLOUDSDK_")
# Never passed, whatever a pattern says.
WITHHELD_PREFIXES = ("TFO_",)
WITHHELD_NAMES = frozenset({"GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"})


def withheld(name: str, secret_names: Iterable[str]) -> bool:
    return name.startswith(WITHHELD_PREFIXES) or name in WITHHELD_NAMES or name in set(secret_names)


def _pattern(globs: Iterable[str]) -> re.Pattern[str] | None:
    globs = [g for g in globs if g]
    return re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None


def terraform_environment(environ: Mapping[str, str], extra: Iterable[str] = (),
                          secret_names: Iterable[str] = ()) -> dict[str, str]:
    """The part of `environ` terraform may see. `extra`: names or globs the operator adds;
    `secret_names`: the variables the config says hold tfo's secrets (withheld like TFO_*)."""
    added = _pattern(extra)
    secrets = set(secret_names)
    return {name: value for name, value in environ.items()
            if (name in BASICS or name.startswith(PREFIXES) or (added is not None and added.fullmatch(name)))
            and not withheld(name, secrets)}


def refused_names(extra: Iterable[str], secret_names: Iterable[str]) -> list[str]:
    """Names in `terraform_env` that are tfo's own secrets: a config error, never silently dropped."""
    secrets = set(secret_names)
    return [n for n in extra if not any(c in n for c in "*?[") and withheld(n, secrets)]
