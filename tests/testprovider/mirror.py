"""Install the test provider into a Terraform filesystem mirror and write a CLI config that uses it.

Run from the repository root: `python -m tests.testprovider.mirror [DIR]` prints the CLI config's path.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from tests.testprovider.provider import PROVIDER_SOURCE, PROVIDER_TYPE, PROVIDER_VERSION

# The repository root: terraform starts the provider from its own working directory, where `tests` is
# not importable (the package is not installed), so the executable puts this on its path.
ROOT = Path(__file__).resolve().parents[2]


def install(mirror_dir: Path, python: str = sys.executable) -> Path:
    """Write the provider executable into `mirror_dir` and return a CLI config file that uses it."""
    plugin_dir = mirror_dir / PROVIDER_SOURCE / PROVIDER_VERSION / "linux_amd64"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    exe = plugin_dir / f"terraform-provider-{PROVIDER_TYPE}_v{PROVIDER_VERSION}"
    exe.write_text(f"#!{python}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                   "from tests.testprovider.provider import main\nmain()\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    cli_config = mirror_dir / "terraformrc"
    cli_config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror_dir}"\n    include = ["example.com/*/*"]\n  }}\n'
        '  direct {\n    exclude = ["example.com/*/*"]\n  }\n'
        "}\n"
    )
    return cli_config


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".tfo/provider-mirror").resolve()
    print(install(target))


if __name__ == "__main__":
    main()
