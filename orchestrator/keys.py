"""The store's key layout: every key tfo reads or writes is made here, and so is what each key's namespace
means (encrypted at rest, kept in the audit bucket). Callers never choose either.

  [{namespace}/]{service}/{account}/{region}/{project}/terraform.tfstate
                                                              state (Terraform's backend writes it)
  backups/{state_key}.{UTC timestamp}                         pre-apply copies of a state           encrypted
  bundles/sha256/{digest}.tar.gz                              a deployment's inputs, tfvars included encrypted
  last-good/[{namespace}/]{deployment id}.json                pointer to the last applied bundle
  runs/{run_id}.json                                          the run's redacted summary
  runs/{run_id}/results.json                                  its redacted per-deployment results
  runs/{run_id}/spec.json, head.json, specs/{slug}.json       the run as prepared (variables)       encrypted
  runs/{run_id}/deployments/{slug}[.{stage}].json             checkpoints (a done one: the result)  encrypted
  runs/{run_id}/plans/{slug}.tfplan, .json, .applied.json     a plan run's saved plans: the file, what encrypted
                                                              it was made against, who applied it
  runs/{run_id}/graph.json                                    its dependency graph (ids, queues)
  runs/{run_id}/card.json, progress/{slug}.json               what it is and where each deployment is
                                                              (ids, phases, hosts: for the dashboard)
  runs/{run_id}/cancel                                        `tfo runs cancel` was asked
  pulls/{owner}/{name}/{pr}/{sha}.json                        the plan run of a pull request's commit
  reservations/[{namespace}/]{deployment id}.json             the pull request a deployment is reserved for
  drift/[{namespace}/]{deployment id}.json                    its drift history (names, never values)
  drift-runs/[{namespace}/]scheduled.json                     the last scheduled drift run (its slot)
  audit/year=YYYY/month=MM/day=DD/run_id={id}/...             full, unredacted records (audit bucket) encrypted
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

BACKUPS = "backups/"
BUNDLES = "bundles/sha256/"
LAST_GOOD = "last-good/"
RUNS = "runs/"
AUDIT = "audit/"
PULLS = "pulls/"
RESERVATIONS = "reservations/"
DRIFT = "drift/"
DRIFT_RUNS = "drift-runs/"

# A run id is the UTC time it was made plus a random suffix: `YYYYMMDDTHHMMSSZ-xxxxxx`.
RUN_ID = re.compile(r"(\d{4})(\d{2})(\d{2})T\d{6}Z-[0-9a-f]{6}")


def slug(deployment_id: str) -> str:
    """A deployment id as one path segment (directories, object names)."""
    return deployment_id.replace("/", "__")


def utc_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")


# --- state backups -------------------------------------------------------------------------------
def backup(state_key: str, now: datetime | None = None) -> str:
    return f"{BACKUPS}{state_key}.{utc_stamp(now)}"


def backups_of(state_key: str) -> str:
    """The prefix under which every backup of one state lies."""
    return f"{BACKUPS}{state_key}."


# --- bundles -------------------------------------------------------------------------------------
def bundle(digest: str) -> str:
    return f"{BUNDLES}{digest}.tar.gz"


def bundle_digest(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".tar.gz")


# --- the last applied configuration of each deployment -----------------------------------------
def last_good(deployment_id: str, namespace: str = "") -> str:
    return f"{LAST_GOOD}{namespace + '/' if namespace else ''}{deployment_id}.json"


# --- runs ----------------------------------------------------------------------------------------
def run_summary(run_id: str) -> str:
    return f"{RUNS}{run_id}.json"


def run_results(run_id: str) -> str:
    return f"{RUNS}{run_id}/results.json"


def run_spec(run_id: str) -> str:
    return f"{RUNS}{run_id}/spec.json"


def run_head(run_id: str) -> str:
    """The run without its deployments: what each deploy task reads beside its own spec."""
    return f"{RUNS}{run_id}/head.json"


def deployment_spec(run_id: str, deployment_id: str) -> str:
    return f"{RUNS}{run_id}/specs/{slug(deployment_id)}.json"


def checkpoint(run_id: str, deployment_id: str, stage: str = "") -> str:
    """Where a deployment of a run got to; `stage` names another one (the rollback's)."""
    return f"{RUNS}{run_id}/deployments/{slug(deployment_id)}{'.' + stage if stage else ''}.json"


def saved_plan(run_id: str, deployment_id: str, part: str = "tfplan") -> str:
    """A plan run's saved plan of one deployment: `tfplan` (terraform's plan file), `json` (what it was
    made against), `applied.json` (the apply that used it: a plan is applied once)."""
    return f"{RUNS}{run_id}/plans/{slug(deployment_id)}.{part}"


def pull_plan(repo: str, pr: int, sha: str) -> str:
    """Which run planned a pull request's commit (the webhook): what `/tfo apply` on it applies."""
    return f"{PULLS}{repo.lower()}/{pr}/{sha}.json"


def pull_comment(repo: str, pr: int, comment_id: int) -> str:
    """A `/tfo apply` comment that started an apply: each is used once."""
    return f"{PULLS}{repo.lower()}/{pr}/comments/{comment_id}.json"


def reservation(deployment_id: str, namespace: str = "") -> str:
    return f"{RESERVATIONS}{namespace + '/' if namespace else ''}{deployment_id}.json"


def drift_record(deployment_id: str, namespace: str = "") -> str:
    """A deployment's drift history: when it drifted, what, when it was fixed."""
    return f"{DRIFT}{namespace + '/' if namespace else ''}{deployment_id}.json"


def drift_schedule(namespace: str = "") -> str:
    """The last scheduled drift run of a namespace: which firing of the schedule it was, how it ended."""
    return f"{DRIFT_RUNS}{namespace + '/' if namespace else ''}scheduled.json"


def drift_lock(namespace: str = "") -> str:
    """The lease key (not a store key) one drift run of a namespace holds from detection to its alerts."""
    return f"{DRIFT_RUNS}{namespace + '/' if namespace else ''}lock"


def cancel(run_id: str) -> str:
    return f"{RUNS}{run_id}/cancel"


def run_card(run_id: str) -> str:
    """A run's public face from its start: action, actor, commit, deployments (ids and names only)."""
    return f"{RUNS}{run_id}/card.json"


def progress(run_id: str, deployment_id: str) -> str:
    """Where one deployment of a run is: its phases so far (live.Progress)."""
    return f"{RUNS}{run_id}/progress/{slug(deployment_id)}.json"


def progress_prefix(run_id: str) -> str:
    return f"{RUNS}{run_id}/progress/"


def run_id_of(key: str) -> str:
    """The run a key under runs/ belongs to ("" if none)."""
    rest = key.removeprefix(RUNS)
    head = rest.split("/", 1)[0].removesuffix(".json")
    return head if RUN_ID.fullmatch(head) else ""


def run_graph(run_id: str) -> str:
    """A run's dependency graph for its Celery tasks (which deployment sends which): ids only."""
    return f"{RUNS}{run_id}/graph.json"


# --- audit ---------------------------------------------------------------------------------------
def audit_run_prefix(run_id: str, started_at: str = "") -> str:
    """The run's audit records, partitioned by day (Athena-friendly): the day in its id, else `started_at`."""
    m = RUN_ID.fullmatch(run_id)
    if m:
        year, month, day = m.groups()
    else:
        when = datetime.fromisoformat(started_at) if started_at else datetime.now(UTC)
        year, month, day = f"{when:%Y}", f"{when:%m}", f"{when:%d}"
    return f"{AUDIT}year={year}/month={month}/day={day}/run_id={run_id}/"


def audit_run(run_id: str, started_at: str = "") -> str:
    return f"{audit_run_prefix(run_id, started_at)}run.json"


def audit_deployment(run_id: str, started_at: str, deployment_id: str, kind: str = "deploy") -> str:
    return f"{audit_run_prefix(run_id, started_at)}deployments/{slug(deployment_id)}.{kind}.json"


# --- what a key's namespace means ----------------------------------------------------------------
_RUN_PRIVATE = re.compile(r"runs/[^/]+/(spec\.json|head\.json|specs/|deployments/|plans/)")


def is_audit(key: str) -> bool:
    """Kept in the audit bucket (S3), apart from everything else. `audit/year=`, not `audit/`: a service
    named "audit" has its state under `audit/...` in the state bucket."""
    return key.startswith(AUDIT + "year=")


def encrypted_at_rest(key: str) -> bool:
    """Whether objects under `key` hold variable values or command output, and so are encrypted by every
    store (S3 encrypts every object server-side anyway; the local store encrypts exactly these)."""
    return key.startswith((BACKUPS, BUNDLES)) or is_audit(key) or _RUN_PRIVATE.match(key) is not None
