"""Reading Terraform state documents: their serial and the resource addresses they track."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.store.base import Store


def parse_state(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        state = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) else None


def state_serial(store: Store, state_key: str) -> int | None:
    state = parse_state(store.read_state(state_key))
    serial = state.get("serial") if state else None
    return serial if isinstance(serial, int) else None


def state_addresses(data: bytes | None) -> set[str]:
    state = parse_state(data)
    out: set[str] = set()
    for res in (state or {}).get("resources", []):
        prefix = f"{res['module']}." if res.get("module") else ""
        kind = "data." if res.get("mode") == "data" else ""
        for inst in res.get("instances", []):
            key = inst.get("index_key")
            index = "" if key is None else (f"[{key}]" if isinstance(key, int) else f'["{key}"]')
            out.add(f"{prefix}{kind}{res['type']}.{res['name']}{index}")
    return out
