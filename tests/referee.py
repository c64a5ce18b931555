"""Terraform as the referee: what a real `terraform` makes of a variable definitions file.

A module with no provider declares every variable as `any` and outputs it; `terraform apply
-var-file=FILE` then `terraform output -json` give the values exactly as Terraform read them, and a
refused file gives Terraform's error and the line it names.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ERROR_LINE = re.compile(r"^\s*on (?P<file>.+?) line (?P<line>\d+)", re.M)


def referee_module(names: list[str]) -> str:
    """A module that declares each name as a variable of any type and outputs it."""
    return "".join(f'variable "{n}" {{\n  type    = any\n  default = null\n}}\noutput "{n}" {{\n  value = var.{n}\n}}\n'
                   for n in sorted(set(names)))


@dataclass(frozen=True)
class Verdict:
    values: dict[str, Any] | None  # None: refused
    error: str = ""
    lines: tuple[int, ...] = ()  # of each error, in the var file


class Referee:
    def __init__(self, terraform: str, workdir: Path, names: list[str]) -> None:
        self.terraform = terraform
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "main.tf").write_text(referee_module(names))
        self._run("init", "-input=false", "-no-color")
        self._n = 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([self.terraform, *args], cwd=self.dir, capture_output=True, text=True, timeout=120,
                           env={"PATH": "/usr/bin:/bin", "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"})
        if check and r.returncode != 0:
            raise AssertionError(f"terraform {args[0]} failed: {r.stdout}{r.stderr}")
        return r

    def read(self, var_file: Path) -> Verdict:
        self._n += 1
        state = f"s{self._n}.tfstate"
        r = self._run("apply", "-auto-approve", "-input=false", "-no-color", f"-var-file={var_file}",
                      f"-state={state}", check=False)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            return Verdict(None, out, tuple(int(m.group("line")) for m in _ERROR_LINE.finditer(out)))
        outputs = json.loads(self._run("output", "-json", f"-state={state}").stdout)
        return Verdict({k: v["value"] for k, v in outputs.items() if v["value"] is not None})

    def state_outputs(self, state_file: Path) -> dict[str, Any]:
        """Outputs recorded in a state file written elsewhere (by tfo), as Terraform reports them."""
        data = json.loads(state_file.read_text())
        return {k: v["value"] for k, v in data.get("outputs", {}).items() if v["value"] is not None}
