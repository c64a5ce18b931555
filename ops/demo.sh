#!/usr/bin/env bash
# The bundled example on the embedded default (local executor, local store), no cloud account:
# Terraform 1.0.3 from the demo extra and the project's own Python provider, whose resources are
# JSON files in .tfo-demo/world. Shows a parallel apply, a failing apply with its automatic
# rollback, and where the backup and the audit landed.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
demo=$here/.tfo-demo
tfo=$venv/bin/tfo

rm -rf "$demo"
mkdir -p "$demo"
cp -r "$here/examples/infra-repo" "$demo/repo"
git -C "$demo/repo" init -q
git -C "$demo/repo" add -A
git -C "$demo/repo" -c user.email=demo@tfo.invalid -c user.name="tfo demo" commit -qm "example infra repo"

export TF_CLI_CONFIG_FILE
# the test provider lives in the checkout (tests/testprovider), not in the installed package
TF_CLI_CONFIG_FILE=$(cd "$here" && "$venv/bin/python" -m tests.testprovider.mirror "$demo/mirror")
export TFOTEST_WORLD=$demo/world
# terraform sees only an allowlist of the environment (README: "What terraform sees"); the test
# provider reads where its world lives from this variable, so pass it on.
export TFO_TERRAFORM_ENV=TFOTEST_WORLD
export TFO_TERRAFORM_BIN=$venv/bin/terraform
cd "$demo/repo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. discover: two tfvars files shard into three deployments, one state each"
"$tfo" discover

step "2. apply all three in parallel"
"$tfo" apply --json-out "$demo/apply-1.json"
step "the world the provider created (outside Terraform)"
ls "$TFOTEST_WORLD" | grep -v journal
cp -r "$TFOTEST_WORLD" "$demo/world-after-first-apply"

step "3. a change that fails half-way: one bucket changed, one added, one removed, one fails"
cat > Accounts/acct-a/data-lake.tfvars <<'TFVARS'
region = "us-west-2"
tags = {
  team = "data"
}
api_token = "tok-demo-Zq81vX2mP0"

s3_buckets = {
  raw     = { versioning = false }
  staging = { versioning = true }
  broken  = { fail = true, delay_seconds = 2 }
}

kms_keys = {
  lake = { rotation = true, delay_seconds = 1 }
}
TFVARS
rc=0
"$tfo" apply --json-out "$demo/apply-2.json" --markdown-out "$demo/apply-2.md" || rc=$?
if [ "$rc" -ne 1 ]; then
  echo "expected exit 1 from the failing apply, got $rc" >&2
  exit 1
fi

step "after the automatic rollback the world is exactly as after the first apply"
diff -r -x journal.log "$demo/world-after-first-apply" "$TFOTEST_WORLD" && echo "world unchanged: rollback converged"

step "the pre-apply backups of the failed deployment (encrypted in the store)"
"$tfo" backups list s3/acct-a/us-west-2/data-lake

step "where the audit landed (full output, encrypted; read it with: tfo audit show RUN_ID)"
run_id=$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$demo/apply-2.json")
find "$demo/repo/.tfo/store/audit" -path "*run_id=$run_id*" -name '*.json' ! -name '*.tfo-meta.json' | sort
echo
echo "reports: $demo/apply-2.json and $demo/apply-2.md (the PR-comment Markdown)"
echo "demo done (run $run_id)"
