"""A scheduled backup to s3:// carries on from the state in the bucket, and imports back from it.

The S3 server is moto in server mode on a free loopback port; btpipe reaches it through the
usual AWS environment variables, exactly as it would reach a real bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from click.testing import CliRunner

from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.cli.jobs import run
from pipeline.common.progress import Progress
from pipeline.emulator.sample import generate_traces
from pipeline.load.importer import ImportJob, ImportOptions
from pipeline.load.run import LoadOptions
from tests.helpers import all_rows, insert, moto_s3, post, s3_client, unique

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "nightly-backup.toml"
BUCKET = "backups"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with moto_s3(BUCKET) as env:
        yield env


def bucket_keys(env: dict[str, str], prefix: str) -> list[str]:
    """The objects under ``prefix``, without the empty directory markers pyarrow leaves for the
    parent of an object it deletes (the run's lease, deleted when the run ends)."""
    s3 = s3_client(env)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = (o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", []))
    return sorted(k for k in keys if k and not k.endswith("/"))


def backup(emulator: Any, s3_env: dict[str, str], project: str, out: str) -> dict[str, Any]:
    env = {
        **s3_env,
        "BRAINTRUST_API_URL": emulator.url,
        "BRAINTRUST_API_KEY": emulator.key,
        "BTPIPE_OUT": out,
    }
    result = CliRunner().invoke(run, [str(CONFIG), "--json", "--set", f"projects={project}"], env=env)
    assert result.exit_code == 0, result.stderr
    (job,) = orjson.loads(result.stdout)
    return dict(job)


def import_back(emulator: Any, source: str, to_project: str, state_dir: Path) -> None:
    options = ImportOptions(input=source, to_project=to_project, create_project=True,
                            load=LoadOptions(state_dir=str(state_dir)))  # fmt: skip

    async def body() -> None:
        async with BraintrustClient(ClientSettings(api_url=emulator.url, api_key=emulator.key)) as client:
            await ImportJob(client, options, Progress()).run()

    anyio.run(body)


def test_s3_backup_resumes_from_bucket_state_and_imports_back(
    emulator: Any, s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj = post(emulator.url, emulator.key, "/v1/project", {"name": unique("s3")})
    first_events = list(generate_traces(seed=5, n_traces=30))
    insert(emulator.url, emulator.key, "project_logs", proj["id"], first_events)
    prefix = unique("nightly")
    out = f"s3://{BUCKET}/{prefix}"

    first = backup(emulator, s3_env, proj["name"], out)
    assert first["out"] == out and first["rows"] == len({e["id"] for e in first_events})

    # A fresh machine: nothing local, the state comes from the bucket.
    new_events = list(generate_traces(seed=6, n_traces=8))
    insert(emulator.url, emulator.key, "project_logs", proj["id"], new_events)
    second = backup(emulator, s3_env, proj["name"], out)
    assert second["rows"] == len({e["id"] for e in new_events})

    keys = bucket_keys(s3_env, f"{prefix}/")
    runs = [first["runs"][0]["run_id"], second["runs"][0]["run_id"]]
    assert keys == sorted(
        [f"_manifests/{r}.json" for r in runs]
        + [f"_state/export-{proj['id']}.json"]
        + [f"object_type=project_logs/object_id={proj['id']}/run={r}/r00-part-00000.parquet" for r in runs]
        + [f"_tombstones/object_type=project_logs/object_id={proj['id']}/run={runs[1]}/tombstones.jsonl"]
    )

    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    target = unique("restored")
    import_back(emulator, out, target, tmp_path)
    restored_project = post(emulator.url, emulator.key, "/v1/project", {"name": target})  # existing: returned
    restored = all_rows(emulator.url, emulator.key, "project_logs", restored_project["id"])
    source = all_rows(emulator.url, emulator.key, "project_logs", proj["id"])
    assert sorted(restored) == sorted(source)
    assert {k: (v["input"], v["output"]) for k, v in restored.items()} == {
        k: (v["input"], v["output"]) for k, v in source.items()
    }


def test_a_bucket_that_does_not_exist_is_named_not_taken_for_an_empty_root(s3_env: dict[str, str]) -> None:
    """``runs`` and ``import`` of a missing bucket say so (exit 2), as for a missing directory,
    instead of "no runs yet" with exit 0 or "no files found"."""
    from pipeline.cli import main

    listed = CliRunner().invoke(main, ["runs", "s3://no-such-bucket/x"], env=s3_env)
    assert (
        listed.exit_code == 2
        and listed.stderr.strip() == "btpipe: error: s3://no-such-bucket/x: no such bucket"
    )
    env = {**s3_env, "BRAINTRUST_API_URL": "http://127.0.0.1:9", "BRAINTRUST_API_KEY": "k"}
    imported = CliRunner().invoke(
        main, ["import", "--in", "s3://no-such-bucket/x", "--to-project", "p"], env=env
    )
    assert imported.exit_code == 2 and "s3://no-such-bucket/x: no such bucket" in imported.stderr
    listed = CliRunner().invoke(main, ["runs", f"s3://{BUCKET}/nothing-yet"], env=s3_env)
    assert listed.exit_code == 0, listed.output
