"""What terraform, its providers and everything they start may see of tfo's environment.

A plan runs the repository's code: providers, `external` data sources, `file("/proc/self/environ")`.
So terraform gets an allowlist, not tfo's environment: what Terraform and the clouds' SDKs read
(TF_*, AWS_*, ARM_*, GOOGLE_*, ...), the basics a process needs, proxies and certificate bundles, and
names the operator adds (`[tfo] terraform_env`). tfo's own secrets are withheld even when a pattern
would match them: the GitHub token and App key and the webhook secret (by the names the config gives
them), everything named TFO_* (the broker URL with its password, the store's encryption key, Flower's
credentials).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping

BASICS = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    # module sources over ssh (git::ssh://...), and Kubernetes providers' config file
    "SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "KUBECONFIG",
    # proxies (both spellings are in use) and certificate bundles, which providers need behind a proxy
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
})
# Terraform (TF_CLI_CONFIG_FILE, TF_PLUGIN_CACHE_DIR, TF_VAR_*, TF_TOKEN_*), the clouds' credentials and
# settings as their providers read them, Vault's and Kubernetes' providers, and the OIDC request a
# workflow gives the azurerm and google providers in GitHub Actions.
PREFIXES = ("LC_", "TF_", "AWS_", "ARM_", "GOOGLE_", "CLOUDSDK_", "VAULT_", "KUBE_", "ACTIONS_ID_TOKEN_REQUEST_")
# Never passed, whatever a pattern says: tfo's own settings and secrets (the GitHub token, App key and
# webhook secret are withheld by the names the config gives them, GITHUB_TOKEN by default).
WITHHELD_PREFIXES = ("TFO_",)


def withheld(name: str, secret_names: Iterable[str]) -> bool:
    return name.startswith(WITHHELD_PREFIXES) or name in set(secret_names)


def _pattern(globs: Iterable[str]) -> re.Pattern[str] | None:
    globs = [g for g in globs if g]
    return re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None


DEFAULT_SECRET_NAMES = ("GITHUB_TOKEN", "TFO_GITHUB_APP_KEY", "TFO_WEBHOOK_SECRET")


def terraform_environment(environ: Mapping[str, str], extra: Iterable[str] = (),
                          secret_names: Iterable[str] = DEFAULT_SECRET_NAMES) -> dict[str, str]:
    """The part of `environ` terraform may see. `extra`: names or globs the operator adds;
    `secret_names`: the variables the config says hold tfo's secrets (withheld like TFO_*)."""
    added = _pattern(extra)
    secrets = set(secret_names)
    return {name: value for name, value in environ.items()
            if (name in BASICS or name.startswith(PREFIXES) or (added is not None and added.fullmatch(name)))
            and not withheld(name, secrets)}


def git_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What git (the webhook's fetches and checkouts) needs of tfo's environment: the basics, proxies,
    certificates and ssh; none of tfo's secrets (a token goes to git only as the call's own header)."""
    return {name: value for name, value in environ.items() if name in BASICS or name.startswith("LC_")}


def refused_names(extra: Iterable[str], secret_names: Iterable[str]) -> list[str]:
    """Names in `terraform_env` that are tfo's own secrets: a config error, never silently dropped."""
    secrets = set(secret_names)
    return [n for n in extra if not any(c in n for c in "*?[") and withheld(n, secrets)]
