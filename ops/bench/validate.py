"""Validation at the scale of a large repository: `tfo validate` of 3,600 realistic tfvars files.

    .venv/bin/python -m ops.bench.validate      # measures, prints, and updates its section of docs/benchmarks.md

Realistic means what platform repositories hold: ~5 KB per file, nested maps and lists, one-line
objects, null, negative and exponent numbers, an indented heredoc (a JSON policy), comments, and a
quarter of the files with Windows line endings. Cold: tfo's cache of readings is empty (a first run
on a host); warm: the same files again; a module change: the files did not change, only the module
that every deployment uses, so every deployment is selected. The compiled reader must be built: the
measurement is refused without it.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ops.bench.run import write_section

ROOT = Path(__file__).resolve().parents[2]
FILES = 3600
BEGIN, END = "<!-- bench:validate:begin -->", "<!-- bench:validate:end -->"


def realistic_tfvars(i: int) -> str:
    rng = random.Random(i)  # noqa: S311 - test data, not secrets
    buckets = []
    for b in range(8):
        buckets.append(f"""  bucket-{b} = {{
    versioning     = {str(rng.random() > 0.5).lower()}
    force_destroy  = false
    kms_key_alias  = null
    retention_days = {rng.randint(1, 3650)}
    offset_minutes = -{rng.randint(1, 60)}
    lifecycle_rules = [
      {{ id = "expire-old", days = {rng.randint(30, 400)}, storage_class = "GLACIER", enabled = true }},
      {{ id = "abort-mpu", days = 7, storage_class = null, enabled = false }},
    ]
    tags = {{
      owner       = "team-{rng.randint(1, 40)}" # who to page
      cost_center = "cc-{rng.randint(1000, 9999)}"
      "app:name"  = "service-{i}-{b}"
    }}
    cors = {{ allowed_origins = ["https://a.example.com", "https://b.example.com"], max_age = 3600 }}
  }}""")
    text = f"""# Account acct-{i % 100}, project {i}
region = "us-west-2"
tags = {{
  team        = "data"
  environment = "prod"
  ratio       = 0.75
  threshold   = -1.5e-3
}}

s3_buckets = {{
{chr(10).join(buckets)}
}}

kms_keys = {{
  main = {{
    rotation        = true
    deletion_window = 30
    policy          = <<-EOT
      {{
        "Version": "2012-10-17",
        "Statement": [{{"Effect": "Allow", "Principal": {{"AWS": "arn:aws:iam::123456789012:root"}},
                       "Action": "kms:*", "Resource": "*"}}]
      }}
    EOT
  }}
}}
"""
    return text.replace("\n", "\r\n") if i % 4 == 0 else text


def make_repo(root: Path, files: int = FILES) -> None:
    shutil.copytree(ROOT / "examples/infra-repo/terraform", root / "terraform")
    for i in range(files):
        p = root / f"Accounts/acct-{i % 100:03d}/proj-{i:05d}.tfvars"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(realistic_tfvars(i).encode())


def tfo(root: Path, cache: Path, *args: str, stdin: str | None = None) -> float:
    env = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT), "HOME": str(cache)}
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=root, env=env, capture_output=True, text=True,
                       input=stdin, timeout=600)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"tfo {' '.join(args)} failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    return elapsed


def measure(tmp: Path, runs: int = 3) -> dict[str, Any]:
    from orchestrator.tfvars import compiled_reader

    if compiled_reader is None:
        raise SystemExit("the compiled tfvars reader is not built (install gcc, then `make setup`)")
    root = tmp / "validate-repo"
    make_repo(root)
    sizes = [p.stat().st_size for p in root.glob("Accounts/*/*.tfvars")]
    cold, warm, module = [], [], []
    for i in range(runs):
        cache = tmp / f"cache-{i}"
        cold.append(tfo(root, cache, "validate"))
        warm.append(tfo(root, cache, "validate"))
        module.append(tfo(root, cache, "discover", "--changed-files", "-", stdin="terraform/main.tf\n"))
        shutil.rmtree(cache)
    return {"files": len(sizes), "mean_file_kb": statistics.mean(sizes) / 1024,
            "validate_cold_s": statistics.median(cold), "validate_warm_s": statistics.median(warm),
            "module_change_selection_s": statistics.median(module),
            "samples": {"cold": cold, "warm": warm, "module_change": module}}


def section(r: dict[str, Any]) -> str:
    return "\n".join([
        BEGIN,
        f"## Validation at scale: {r['files']:,} realistic tfvars files ({r['mean_file_kb']:.1f} KB each)",
        "",
        "`python -m ops.bench.validate`: nested maps and lists, one-line objects, null, negative and exponent"
        " numbers, an indented heredoc, comments, a quarter of the files with CRLF line endings. Whole `tfo`"
        " processes (start, discovery, reading, sharding, var files), medians of"
        f" {len(r['samples']['cold'])} runs.",
        "",
        "| measure | result | target |",
        "|---|---:|---|",
        f"| `tfo validate`, first run on a host (empty cache of readings) | {r['validate_cold_s']:.2f} s | < 3 s |",
        f"| `tfo validate`, files unchanged since a run on this host | {r['validate_warm_s']:.2f} s | < 3 s |",
        f"| `tfo discover --changed-files terraform/main.tf` (a module change selects every deployment)"
        f" | {r['module_change_selection_s']:.2f} s | < 3 s |",
        "",
        "Each file is read by the compiled reader for plain literals (`orchestrator/hcl/_literal.c`, about"
        " 0.2 ms per 5 KB file here); files it steps aside for (templates, expressions, file references,"
        " mistakes) go to the Python line reader and then the full HCL reader, and their readings are kept in"
        " the user's cache under the digest of the file's text. The compiled reader's files are not cached:"
        " reading one again costs less than fetching and decoding its cached reading (JSON, ~0.15 ms here),"
        " so cold and warm runs now cost the same, and a module change reads every file again at that"
        " price. History on this machine: python-hcl2 for every file, about 24 s; the Python line reader"
        " with the cache, 9.3 s cold and 1.7 s warm; pygohcl (HashiCorp's parser through cgo) and tree-sitter"
        " were measured at 3 ms and 2 ms per file, no faster than the Python line reader.",
        "",
        "```json",
        json.dumps(r, indent=2),
        "```",
        END,
    ])


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tfo-bench-validate-"))
    try:
        r = measure(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_section(ROOT / "docs" / "benchmarks.md", BEGIN, END, section(r))
    print(section(r))


if __name__ == "__main__":
    main()
