"""Checkpoint and watermark files: small JSON documents written atomically through Storage.

A run saves its state after each durable step, so a killed run resumes from the last save. The
file is canonical JSON (sorted keys) so successive saves diff cleanly. State must never carry a
credential: ``save`` refuses keys that name one, wherever they are nested.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from pipeline.common.errors import UsageError
from pipeline.common.storage import Storage, location

_SECRET_KEY = re.compile(
    r"(^|[_-])(api[_-]?key|secret|password|token|authorization|credentials?)$", re.IGNORECASE
)


class StateStore:
    """One state file at ``relpath`` under ``storage``."""

    def __init__(self, storage: Storage, relpath: str) -> None:
        self.storage = storage
        self.relpath = relpath

    @property
    def location(self) -> str:
        return location(self.storage, self.relpath)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when nothing was saved yet."""
        try:
            data = self.storage.read_bytes(self.relpath)
        except FileNotFoundError:
            return None
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"{self.location}: corrupt state file ({exc})") from exc
        if not isinstance(state, dict):
            raise UsageError(f"{self.location}: corrupt state file (expected a JSON object)")
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Replace the state file atomically."""
        _refuse_secrets(state, "")
        self.storage.write_bytes(
            self.relpath, orjson.dumps(state, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
        )


def _refuse_secrets(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)):
                raise ValueError(f"state must not store credentials (key {where!r})")
            _refuse_secrets(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_secrets(item, f"{path}[{index}]")
