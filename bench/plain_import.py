"""The baseline: the walkthrough's first example, one insert request per event, sequential.

Usage: python bench/plain_import.py URL KEY INPUT_DIR PROJECT_NAME MAX_EVENTS
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path


def post(url: str, key: str, body: object) -> object:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def main() -> None:
    url, key, source, project_name, limit = sys.argv[1:6]
    project = post(f"{url}/v1/project", key, {"name": project_name})
    dataset = post(f"{url}/v1/dataset", key, {"project_id": project["id"], "name": "bench"})  # type: ignore[index]
    rows = 0
    for path in sorted(Path(source).rglob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if rows >= int(limit):
                    break
                post(f"{url}/v1/dataset/{dataset['id']}/insert", key, {"events": [json.loads(line)]})  # type: ignore[index]
                rows += 1
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
