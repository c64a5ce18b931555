from collections.abc import Callable
from typing import Any

Attribute = tuple[str, int, int, Any, list[Any]]  # name, start, end, value, [] (file references: none)

def read(text: str, number: Callable[[str], Any], /) -> tuple[list[Attribute], set[str]] | None: ...
