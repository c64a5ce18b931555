from __future__ import annotations

from pathlib import Path

from orchestrator.cache import cached, contents_digest, file_key
from orchestrator.modules import module_facts


def test_cached_value_is_reused_until_its_key_changes(tmp_path: Path) -> None:
    calls: list[int] = []

    def compute() -> list[int]:
        calls.append(1)
        return [len(calls)]

    assert cached(tmp_path, "x", "k1", compute) == [1]
    assert cached(tmp_path, "x", "k1", compute) == [1]  # from disk, not recomputed
    assert cached(tmp_path, "x", "k2", compute) == [2]  # another key is another entry
    assert len(calls) == 2


def test_values_the_caller_rejects_are_not_kept(tmp_path: Path) -> None:
    assert cached(tmp_path, "v", "k", lambda: "unknown", keep=lambda v: v != "unknown") == "unknown"
    assert cached(tmp_path, "v", "k", lambda: "1.0.3", keep=lambda v: v != "unknown") == "1.0.3"


def test_a_corrupt_entry_is_recomputed(tmp_path: Path) -> None:
    cached(tmp_path, "c", "k", lambda: 1)
    for f in tmp_path.glob("c-*.json"):
        f.write_text("{not json")
    assert cached(tmp_path, "c", "k", lambda: 2) == 2


def test_file_identity_changes_with_content(tmp_path: Path) -> None:
    f = tmp_path / "bin"
    f.write_text("a")
    first = file_key(str(f))
    f.write_text("bb")
    assert first is not None and file_key(str(f)) != first
    assert file_key(str(tmp_path / "missing")) is None


def sensitive_variables(module: Path, cache: Path) -> tuple[str, ...]:
    return module_facts(module, cache).sensitive


def test_sensitive_variables_cached_per_module_content(tmp_path: Path) -> None:
    module = tmp_path / "m"
    module.mkdir()
    (module / "main.tf").write_text('variable "a" {\n  sensitive = true\n}\nvariable "b" {}\n')
    work = tmp_path / "work"
    assert sensitive_variables(module, work) == ("a",)
    assert sensitive_variables(module, work) == ("a",)
    (module / "main.tf").write_text('variable "b" {\n  sensitive = true\n}\n')
    assert sensitive_variables(module, work) == ("b",)  # new content, new key: never stale
    (module / "main.tf").write_text('variable "b" {}\n')
    assert sensitive_variables(module, work) == ()
    assert contents_digest({"main.tf": (module / "main.tf").read_bytes()}) != contents_digest({})
