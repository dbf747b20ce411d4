from pathlib import Path
from typing import Any
import orjson
from tests.attachments.seed import PDF, PNG, upload, sha
from tests.helpers import btpipe, insert, post, unique

def test_smoke(emulator: Any, tmp_path: Path) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("att")})
    png = upload(emulator.url, emulator.key, PNG, "a.png", "image/png")
    pdf = upload(emulator.url, emulator.key, PDF, "b.pdf", "application/pdf")
    insert(emulator.url, emulator.key, "project_logs", project["id"], [
        {"id": "r1", "input": {"img": png}, "output": "x"},
        {"id": "r2", "metadata": {"deep": [{"doc": pdf}]}, "expected": {"again": png}},
        {"id": "r3", "input": "plain"},
    ])
    out = tmp_path / "backup"
    res = btpipe(emulator, "export", "--project", project["name"], "--out", str(out), "--format", "jsonl")
    print(res.output)
    assert res.exit_code == 0
    print(sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()))
    m = next((out / "_manifests").glob("*.json"))
    print(orjson.loads(m.read_bytes())["attachments"])
    assert (out / "_attachments" / f"sha256={sha(PNG)}").read_bytes() == PNG
