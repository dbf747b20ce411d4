"""The baseline: the public walkthrough's pagination loop, written as a user would script it.

Sequential requests, one page at a time, every row parsed and written back as JSON.
Usage: python bench/plain_export.py URL KEY OBJECT_TYPE OBJECT_ID OUT.jsonl
"""

from __future__ import annotations

import json
import sys
import urllib.request


def main() -> None:
    url, key, object_type, object_id, out = sys.argv[1:6]
    cursor = None
    rows = 0
    with open(out, "w", encoding="utf-8") as fh:
        while True:
            body = json.dumps(
                {
                    "query": {
                        "from": {
                            "op": "function",
                            "name": {"op": "ident", "name": [object_type]},
                            "args": [{"op": "literal", "value": object_id}],
                        },
                        "select": [{"op": "star"}],
                        "limit": 1000,
                        "cursor": cursor,
                    },
                    "fmt": "jsonl",
                }
            ).encode()
            request = urllib.request.Request(
                url + "/btql",
                data=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request) as response:
                cursor = response.headers.get("x-bt-cursor") or response.headers.get("x-amz-meta-bt_cursor")
                text = response.read().decode("utf-8")
            count = 0
            for line in text.split("\n"):
                if not line.strip():
                    continue
                fh.write(json.dumps(json.loads(line)) + "\n")
                count += 1
            rows += count
            if count == 0:
                break
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
