"""The official SDK's way to load rows: ``init_dataset().insert`` for every event, then ``flush``.

Usage: python bench/sdk_import.py URL KEY INPUT_DIR PROJECT_NAME
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import braintrust


def main() -> None:
    url, key, source, project = sys.argv[1:5]
    braintrust.login(app_url=url, api_key=key, force_login=True)
    dataset = braintrust.init_dataset(project=project, name="bench")
    rows = 0
    for path in sorted(Path(source).rglob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                dataset.insert(
                    input=record.get("input"),
                    expected=record.get("expected"),
                    metadata=record.get("metadata"),
                    tags=record.get("tags"),
                    id=record["id"],
                )
                rows += 1
    dataset.flush()
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
