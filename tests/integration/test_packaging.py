"""The wheel as pip builds it holds every module of the product and the compiled tfvars reader
(a listed set of packages once left orchestrator.hcl and cli.commands out of it), and no tests."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_module_and_the_compiled_reader(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path),
                        str(ROOT)], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = tmp_path.glob("tfo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for top in ("orchestrator", "workers", "cli")
               for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
    assert sources - names == set()
    assert "orchestrator/py.typed" in names
    static = {p.relative_to(ROOT).as_posix() for p in (ROOT / "cli/dashboard/static").iterdir()}
    assert static and static - names == set()  # the dashboard's page, script and style ship with tfo
    assert any(n.startswith("orchestrator/hcl/_literal.") and n.endswith(".so") for n in names), sorted(names)
    assert not any(n.startswith("tests/") for n in names)
