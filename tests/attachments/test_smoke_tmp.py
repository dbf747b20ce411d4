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

def test_smoke_load(emulator: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from tests.attachments.seed import read
    from tests.helpers import all_rows
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("att")})
    png = upload(emulator.url, emulator.key, PNG, "a.png", "image/png")
    insert(emulator.url, emulator.key, "project_logs", project["id"], [{"id": "r1", "input": {"img": png}}])
    out = tmp_path / "backup"
    assert btpipe(emulator, "export", "--project", project["name"], "--out", str(out)).exit_code == 0
    target = unique("att-dst")
    res = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--create-project", "--state-dir", str(tmp_path / "s"), key=emulator.other_org_key)
    print(res.output)
    assert res.exit_code == 0
    dst = post(emulator.url, emulator.other_org_key, "/v1/project", {"name": target})
    rows = all_rows(emulator.url, emulator.other_org_key, "project_logs", dst["id"])
    ref = rows["r1"]["input"]["img"]
    assert ref["key"] != png["key"]
    assert read(emulator.url, emulator.other_org_key, ref) == PNG
    res = btpipe(emulator, "import", "--in", str(out), "--to-project", target, "--state-dir", str(tmp_path / "s"), key=emulator.other_org_key)
    print(res.output)
    monkeypatch.setenv("OTHER", emulator.other_org_key)
    t2 = unique("att-mig")
    res = btpipe(emulator, "migrate", "--from-project", project["name"], "--to-project", t2, "--create-project", "--to-api-key-env", "OTHER", "--state-dir", str(tmp_path / "s"))
    print(res.output)
    assert res.exit_code == 0
