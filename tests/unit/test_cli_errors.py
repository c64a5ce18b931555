"""The CLI's one error handler: a bug exits 3 with its traceback in a private file, Ctrl-C exits 130."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cli import main as cli_main
from cli.commands import discover as discover_cmd
from orchestrator.errors import EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_PLATFORM, UserError

TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
LINE = re.compile(r"^tfo: internal error: RuntimeError: (?P<msg>.*); traceback in (?P<path>\S+)$")


def _raise(exc: BaseException) -> Any:
    def command(*args: object, **kwargs: object) -> int:
        raise exc
    return command


def _bug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discover_cmd, "run_discover",
                        _raise(RuntimeError(f"boom: token {TOKEN}\nwith password=hunter2222 on a second line")))


def _one_line(err: str) -> re.Match[str]:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    m = LINE.match(lines[0])
    assert m, err
    return m


def test_a_bug_exits_3_with_one_redacted_line_and_a_private_traceback_in_the_workdir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _bug(monkeypatch)
    assert cli_main.main(["-C", str(tmp_path), "discover"]) == EXIT_PLATFORM
    err = capsys.readouterr().err
    m = _one_line(err)
    assert TOKEN not in err and "hunter2222" not in err and "[REDACTED]" in m["msg"]
    log = Path(m["path"])
    assert log.parent == tmp_path / ".tfo" / "work" and log.name.startswith("tfo-error-")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text
    assert "run_discover" in text or "command" in text  # the frames, down to the one that raised


def test_without_a_config_the_traceback_goes_to_dot_tfo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _bug(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.toml").write_text("[tfo\n")
    assert cli_main.main(["--config", "broken.toml", "discover"]) == EXIT_PLATFORM
    log = Path(_one_line(capsys.readouterr().err)["path"])
    assert log.parent == tmp_path / ".tfo" and stat.S_IMODE(log.stat().st_mode) == 0o600


def test_when_no_directory_takes_it_the_line_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _bug(monkeypatch)
    monkeypatch.setattr(cli_main, "_error_log_dirs", lambda g, redactor: iter([tmp_path / "file" / "sub"]))
    (tmp_path / "file").write_text("not a directory")
    assert cli_main.main(["-C", str(tmp_path), "discover"]) == EXIT_PLATFORM
    line = capsys.readouterr().err.strip()
    assert line.startswith("tfo: internal error: RuntimeError: boom") and "traceback not saved" in line
    assert "\n" not in line and TOKEN not in line


def test_ctrl_c_in_a_command_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(discover_cmd, "run_discover", _raise(KeyboardInterrupt()))
    assert cli_main.main(["-C", str(tmp_path), "discover"]) == EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert "tfo: interrupted" in err and "internal error" not in err
    assert not (tmp_path / ".tfo").exists()


def test_a_user_error_still_exits_2_without_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(discover_cmd, "run_discover", _raise(UserError(f"bad input, token {TOKEN}")))
    assert cli_main.main(["-C", str(tmp_path), "discover"]) == EXIT_INVALID_INPUT
    err = capsys.readouterr().err
    assert err.startswith("tfo: invalid input: bad input") and TOKEN not in err
    assert not (tmp_path / ".tfo").exists()


def _wait_until_blocked(pid: int) -> None:
    """Until the process sleeps without using CPU for half a second: done importing, waiting for input."""
    last, still = -1, 0
    deadline = time.monotonic() + 60
    while still < 5:
        assert time.monotonic() < deadline, "tfo never settled down to wait for its input"
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = int(fields[11]) + int(fields[12])  # utime + stime
        still = still + 1 if fields[0] == "S" and cpu == last else 0
        last = cpu
        time.sleep(0.1)


def test_sigint_to_a_real_tfo_process_exits_130(tmp_path: Path) -> None:
    """Ctrl-C while tfo waits for its input (`--changed-files -` reads stdin): 130, no traceback."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "discover", "--changed-files", "-"], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    _wait_until_blocked(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "tfo: interrupted" in err and "Traceback" not in err


def test_a_reader_that_goes_away_is_said_quietly_with_141(tmp_path: Path) -> None:
    """`tfo discover --json | head -0`: the pipe closes before tfo writes; not an internal error, no log."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "terraform").mkdir()
    (tmp_path / "terraform" / "main.tf").write_text("")
    (tmp_path / "Accounts" / "acct").mkdir(parents=True)
    (tmp_path / "Accounts" / "acct" / "p.tfvars").write_text("s3_buckets = { a = {} }\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before tfo writes a byte
    proc = subprocess.run([sys.executable, "-m", "cli.main", "discover", "--json"], cwd=tmp_path, stdout=write_end,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
                          timeout=60, check=False)
    os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert not list(tmp_path.rglob("tfo-error-*.log"))


def test_tables_named_in_the_environment_are_not_taken_for_values(tmp_path: Path) -> None:
    from orchestrator.config import load_config

    cfg = load_config(repo_root=tmp_path, environ={"TFO_POLICY": "x", "TFO_ACCOUNTS": "y", "TFO_MAX_WORKERS": "3"})
    assert cfg.max_workers == 3 and not cfg.policy.active and cfg.accounts == {}
