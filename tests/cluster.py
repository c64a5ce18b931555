"""A real redis-server and real `tfo worker` processes for the distributed tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import Repo, free_port

# Every test broker needs a password, as production's does, so that tests see where it could leak.
REDIS_PASSWORD = "redis-pass-Xq7v2"


class RedisServer:
    """redis-server on a free loopback port with AOF on, so a restart keeps the queues (as in production)."""

    def __init__(self, directory: Path, password: str = REDIS_PASSWORD) -> None:
        self.password = password
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server")
        self.exe = exe
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.dir), "--maxmemory-policy", "noeviction",
             "--requirepass", self.password],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        deadline = time.monotonic() + 20
        while not self.ping():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.dir / 'redis.log').read_text()[-1000:]}")
            time.sleep(0.1)

    def ping(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while b"\r\n" not in reply[5:] and len(reply) < 64:  # "+OK\r\n" then the PING's answer
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    reply += chunk
                return reply.startswith(b"+OK\r\n+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def configure_celery(repo: Repo, broker_url: str, plugin_cache: Path, soft_s: int = 30, hard_s: int = 35,
                     visibility_s: int = 40) -> None:
    """The repo on the celery executor (local store shared by the workers), with its time limits."""
    repo.config(extra=f'plugin_cache_dir = "{plugin_cache}"', store=f"""
[tfo.store]
kind = "local"
path = ".tfo/store"

[tfo.celery]
broker_url = "{broker_url}"
worker_concurrency = 1
soft_time_limit_s = {soft_s}
time_limit_s = {hard_s}
visibility_timeout_s = {visibility_s}
dag_watch_s = 3
""")


def parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces


class Workers:
    """`tfo worker` processes, each in its own process group so a test can SIGKILL one whole worker."""

    def __init__(self, repo: Repo, log_dir: Path) -> None:
        self.repo = repo
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, concurrency: int = 1, env: dict[str, str] | None = None) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "-n", f"{name}@%h", "-c", str(concurrency),
             "--loglevel", "INFO"],
            cwd=self.repo.root, env={**self.repo.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.wait_ready(name)

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "ready." not in self.log(name):
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)

    def log(self, name: str) -> str:
        p = self.log_dir / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def owner_of(self, pid: int) -> tuple[str, int] | None:
        """(worker name, pool child pid) of the worker a process descends from, walking up /proc."""
        mains = {proc.pid: name for name, proc in self.procs.items() if proc.poll() is None}
        child = None
        while pid > 1:
            if pid in mains:
                return (mains[pid], child) if child is not None else None
            child, pid = pid, parent_pid(pid)
        return None

    def kill(self, name: str) -> None:
        """SIGKILL the whole worker: main process and pool children, no goodbye."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a process started in its own session (warm shutdown), SIGKILL if it will not go."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def two_workers(repo: Repo, broker_url: str, tmp_path: Path, *, soft_s: int, hard_s: int,
                visibility_s: int) -> Iterator[Workers]:
    """Workers w1 and w2 on the repo's celery executor with these time limits, stopped afterwards."""
    configure_celery(repo, broker_url, tmp_path / "plugin-cache", soft_s=soft_s, hard_s=hard_s,
                     visibility_s=visibility_s)
    workers = Workers(repo, tmp_path)
    try:
        workers.start("w1")
        workers.start("w2")
        yield workers
    finally:
        workers.stop_all()
