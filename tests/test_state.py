"""StateStore: atomic canonical JSON, clear errors for corrupt files, no credentials."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.common.errors import UsageError
from pipeline.common.state import StateStore
from pipeline.common.storage import open_storage


def test_save_and_load(tmp_path: Path) -> None:
    store = StateStore(open_storage(str(tmp_path)), "state/export.json")
    assert store.load() is None
    state = {"objects": {"d1": {"cursor": "abc", "rows": 10, "done": False}}, "big": 2**63 + 5}
    store.save(state)
    assert store.load() == state
    text = (tmp_path / "state" / "export.json").read_bytes()
    assert text.index(b'"big"') < text.index(b'"objects"')  # sorted keys
    store.save({"objects": {}})
    assert store.load() == {"objects": {}}
    assert os.listdir(tmp_path / "state") == ["export.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b'{"objects": ', "corrupt state file ("), (b"[1, 2]", "corrupt state file (expected a JSON object)")],
)
def test_corrupt_state_names_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    storage = open_storage(str(tmp_path))
    storage.write_bytes("s.json", content)
    with pytest.raises(UsageError) as info:
        StateStore(storage, "s.json").load()
    assert str(info.value).startswith(f"{tmp_path}/s.json: {reason}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["api_key", "API-KEY", "secret", "auth_token", "password"])
def test_refuses_to_store_credentials(tmp_path: Path, key: str) -> None:
    store = StateStore(open_storage(str(tmp_path)), "s.json")
    with pytest.raises(ValueError, match="must not store credentials"):
        store.save({"source": [{key: "x"}]})
    assert store.load() is None
    store.save({"prompt_tokens": 3, "cursor": "c"})  # ordinary names are fine
