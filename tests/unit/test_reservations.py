"""Pull request reservations of deployments, on a real local store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator import keys, reservations
from orchestrator.reservations import Reservation
from orchestrator.store.local import LocalStore
from tests.unit.test_report_bundle import spec

ROOT = Path(__file__).resolve().parents[2]


def test_a_deployment_is_reserved_for_the_first_open_pull_request_that_plans_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    lake, kms = spec(), spec(1)
    first = Reservation("org/infra", 41, "a" * 40, "run-1")
    assert reservations.reserve(store, [lake, kms], first, lambda h: True) == {}
    assert reservations.held(store, lake) == Reservation("org/infra", 41, "a" * 40, "run-1",
                                                         reservations.held(store, lake).at)  # type: ignore[union-attr]
    # another pull request: refused while the holder is open; its own new commit: taken again
    second = Reservation("org/infra", 42, "b" * 40, "run-2")
    refused = reservations.reserve(store, [lake], second, lambda h: True)
    assert list(refused) == [lake.id] and str(refused[lake.id]) == "org/infra#41"
    again = reservations.reserve(store, [lake], Reservation("ORG/infra", 41, "c" * 40, "run-3"), lambda h: True)
    assert again == {} and reservations.held(store, lake).sha == "c" * 40  # type: ignore[union-attr]
    # a holder that is no longer open (its close event was missed) gives way
    assert reservations.reserve(store, [lake], second, lambda h: h.pr != 41) == {}
    assert reservations.held(store, lake).pr == 42  # type: ignore[union-attr]
    # closing a pull request frees what it holds, and only that
    assert reservations.release(store, "org/infra", 41) == [keys.reservation(kms.id)]
    assert reservations.held(store, kms) is None and reservations.held(store, lake).pr == 42  # type: ignore[union-attr]
    assert reservations.unlock(store, lake.id).pr == 42  # type: ignore[union-attr]
    assert reservations.unlock(store, lake.id) is None
    note = reservations.note({lake.id: "org/infra#41"})
    assert f"`{lake.id}`: reserved by org/infra#41" in note and "tfo unlock" in note


def test_namespaced_deployments_are_reserved_apart(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    plain, namespaced = spec(), spec(namespace="repos/org/other")
    assert keys.reservation(namespaced.id, namespaced.namespace).startswith("reservations/repos/org/other/")
    reservations.reserve(store, [plain], Reservation("org/infra", 1), lambda h: True)
    assert reservations.reserve(store, [namespaced], Reservation("org/other", 2), lambda h: True) == {}


def test_tfo_unlock_releases_a_reservation_and_checks_the_id(tmp_path: Path) -> None:
    (tmp_path / "tfo.toml").write_text('[tfo.store]\nkind = "local"\npath = "store"\n')
    store = LocalStore(tmp_path / "store")
    lake = spec()
    reservations.reserve(store, [lake], Reservation("org/infra", 41, "d" * 40), lambda h: True)

    def tfo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", "-C", str(tmp_path), *args], capture_output=True,
                              text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                            "HOME": str(tmp_path)}, timeout=60)

    r = tfo("unlock", lake.id)
    assert r.returncode == 0 and "was reserved by org/infra#41" in r.stdout, r.stdout + r.stderr
    assert reservations.held(store, lake) is None
    r = tfo("unlock", lake.id)
    assert r.returncode == 0 and "not reserved" in r.stdout
    bad = tfo("unlock", "../../etc")
    assert bad.returncode == 2 and "expected SERVICE/ACCOUNT/REGION/PROJECT" in bad.stderr
