"""``btpipe doctor`` against real emulators: every check answered exactly under the default and
the conservative profiles, a rejected key, a refused project, rate-limit headers, the write
test (the row is gone afterwards, as ``/btql`` shows), the JSON report, and the key never
printed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from click.testing import Result

from pipeline.emulator.faults import FaultConfig
from pipeline.emulator.server import RunningServer, ServerConfig
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, unique

SERVED = [
    "xact_filters: yes -> ranges split by _pagination_key (by _xact_id where keys cannot be split), incremental runs by _xact_id",
    "count_at_version: yes -> each export checked against the exact row count at its version",
]
FALLBACKS = [
    "xact_filters: no -> ranges split by _pagination_key (by created where keys cannot be split), incremental runs by _pagination_key",
    "count_at_version: no -> completeness proven page by page, no count check",
]
READS = [
    "read: sort on _pagination_key",
    "read: version pinning",
    "read: cursor inside the query",
    "read: filter on created",
    "read: keyset on _pagination_key",
    "read: count(1)",
]


@pytest.fixture(scope="module")
def conservative() -> Iterator[Emulator]:
    with RunningServer(ServerConfig(port=0, profile="conservative")) as server:
        yield Emulator(url=server.url)


@pytest.fixture(scope="module")
def version_limited() -> Iterator[Emulator]:
    """Every ``GET /version`` answered 429 with ``Retry-After: 0``; everything else served."""
    faults = FaultConfig(rate=1.0, kinds=("429",), retry_after=0, exempt=("/v1", "/btql", "/api", "/logs3"))
    with RunningServer(ServerConfig(port=0, faults=faults)) as server:
        yield Emulator(url=server.url)


@pytest.fixture(scope="module")
def listing_down() -> Iterator[Emulator]:
    """Every request but the key's lookup answered 503: the server gives up mid-way."""
    faults = FaultConfig(rate=1.0, kinds=("503",), retry_after=0, exempt=("/api/apikey", "/api/self", "/v1/user", "/v1/organization", "/v1/acl"))  # fmt: skip
    with RunningServer(ServerConfig(port=0, faults=faults)) as server:
        yield Emulator(url=server.url)


def project_with_rows(emulator: Emulator, rows: int = 3) -> dict[str, Any]:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("doctor")})
    events = [{"id": f"r{i}", "input": i, "created": f"2026-01-0{i + 1}T00:00:00Z"} for i in range(rows)]
    insert(emulator.url, emulator.key, "project_logs", project["id"], events)
    post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": "golden"})
    return project


def report(result: Result) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


def checks(result: Result) -> dict[str, tuple[str, str]]:
    return {c["check"]: (c["status"], c["answer"]) for c in report(result)["checks"]}


def assert_key_hidden(result: Result, key: str) -> None:
    assert key not in result.stdout
    assert key not in result.stderr


def test_default_profile_serves_everything(emulator: Emulator) -> None:
    project = project_with_rows(emulator)
    result = btpipe(emulator, "doctor", "--project", project["name"], "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    found = report(result)
    assert found["ok"] is True and found["error"] is None and found["exit_code"] == 0
    assert found["api_url"] == emulator.url
    assert found["capabilities"] == {"xact_filters": True, "count_at_version": True}
    assert found["plan"] == SERVED
    lines = checks(result)
    assert list(lines) == [
        "key", "user", "role", "projects", "project", "version", "insert limits", *READS,
        "probe: xact_filters", "probe: count_at_version", "realtime reads", "rate limits",
    ]  # fmt: skip
    assert lines["key"][0] == "ok" and lines["key"][1].endswith("(POST /api/apikey/login)")
    assert lines["user"][0] == "ok" and lines["user"][1].startswith("owner@local.test (id ")
    assert lines["project"] == (
        "ok",
        f"{project['name']} (id {project['id']}): logs, 1 datasets, 0 experiments",
    )
    limit = emulator.max_request_bytes
    assert lines["version"][0] == "ok" and f"logs3_payload_max_bytes {limit}" in lines["version"][1]
    assert lines["insert limits"] == (
        "ok",
        f"requests of at most {limit:,} bytes (the server's logs3_payload_max_bytes) and 1,000 rows",
    )
    assert all(lines[name][0] == "ok" for name in READS), lines
    assert lines["read: count(1)"] == ("ok", "served; 3 rows now")
    assert lines["read: cursor inside the query"] == (
        "ok",
        "served; page 2 read through the cursor of page 1 (1 row)",
    )
    assert lines["probe: xact_filters"] == ("ok", "served")
    assert lines["probe: count_at_version"] == ("ok", "served")
    assert lines["realtime reads"][0] == "ok"
    assert lines["rate limits"] == (
        "ok",
        "none seen; 0 retries, 0 waits on 429 while other requests went through",
    )
    assert_key_hidden(result, emulator.key)


def test_text_report_ends_with_the_plan_and_the_verdict(emulator: Emulator) -> None:
    project = project_with_rows(emulator)
    result = btpipe(emulator, "doctor", "--project", project["name"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"btpipe doctor: {emulator.url}"
    assert lines[-4:] == ["what btpipe will do:", *(f"  {line}" for line in SERVED), "btpipe can work here"]
    assert any(line.split() == ["ok", "probe:", "xact_filters", "served"] for line in lines), lines
    assert_key_hidden(result, emulator.key)


def test_conservative_profile_names_the_fallbacks_and_still_passes(conservative: Emulator) -> None:
    project = project_with_rows(conservative)
    result = btpipe(conservative, "doctor", "--project", project["name"], "--json")
    assert result.exit_code == 0, result.stderr
    found = report(result)
    assert found["ok"] is True
    assert found["capabilities"] == {"xact_filters": False, "count_at_version": False}
    assert found["plan"] == FALLBACKS
    lines = checks(result)
    assert lines["probe: xact_filters"] == ("no", "not served (HTTP 400)")
    assert lines["probe: count_at_version"] == ("no", "not served (HTTP 400)")
    # what btpipe falls back to is served, and checked as needed
    assert all(lines[name][0] == "ok" for name in READS), lines
    text = btpipe(conservative, "doctor", "--project", project["name"])
    assert text.exit_code == 0, text.stderr
    assert text.stdout.splitlines()[-4:] == [
        "what btpipe will do:",
        *(f"  {line}" for line in FALLBACKS),
        "btpipe can work here",
    ]


def test_a_rejected_key_is_one_line_and_exit_3(emulator: Emulator) -> None:
    key = "bt-wrong-secret-0123456789"
    result = btpipe(emulator, "doctor", key=key)
    assert result.exit_code == 3
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(
        "btpipe: error: the API key was rejected (POST /api/apikey/login -> HTTP 401"
    )
    assert_key_hidden(result, key)
    as_json = btpipe(emulator, "doctor", "--json", key=key)  # the error as JSON too
    assert (as_json.exit_code, len(as_json.stderr.splitlines())) == (3, 1)
    assert json.loads(as_json.stdout) == {
        "ok": False,
        "error": as_json.stderr.strip().removeprefix("btpipe: error: "),
        "exit_code": 3,
    }
    assert_key_hidden(as_json, key)


def test_a_member_key_has_an_unknown_role_and_still_passes(emulator: Emulator) -> None:
    project = project_with_rows(emulator)
    result = btpipe(emulator, "doctor", "--project", project["name"], "--json", key=emulator.member_key)
    assert result.exit_code == 0, result.stderr
    lines = checks(result)
    assert lines["user"][1].startswith("member@local.test (id ")
    assert lines["role"][0] == "unknown"
    assert lines["role"][1].startswith("the key may not read the ACLs of org ")
    assert_key_hidden(result, emulator.member_key)


def test_a_missing_project_prints_the_report_and_exits_4(emulator: Emulator) -> None:
    name = unique("no-such-project")
    result = btpipe(emulator, "doctor", "--project", name)
    assert result.exit_code == 4
    assert result.stderr == f"btpipe: error: project {name!r} not found\n"
    assert "  failed   project" in result.stdout
    assert result.stdout.splitlines()[-1] == f"btpipe cannot work here: project {name!r} not found"
    found = btpipe(emulator, "doctor", "--project", name, "--json")
    assert report(found)["ok"] is False and report(found)["exit_code"] == 4
    assert checks(found)["reads"] == ("skipped", "the project could not be read; name one with --project")


def test_write_test_leaves_no_row(emulator: Emulator) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("doctor-write")})
    result = btpipe(emulator, "doctor", "--write-test", project["name"], "--json")
    assert result.exit_code == 0, result.stderr
    lines = checks(result)
    steps = ["write: insert", "write: read back", "write: delete", "write: gone"]
    assert [name for name in lines if name.startswith("write:")] == steps
    assert all(lines[name][0] == "ok" for name in steps), lines
    row_id = lines["write: insert"][1].split()[1]
    assert row_id.startswith("btpipe-doctor-")
    assert lines["write: gone"] == ("ok", f"row {row_id} no longer read")
    assert lines["write: delete"] == ("ok", "deleted with _object_delete")
    assert all_rows(emulator.url, emulator.key, "project_logs", project["id"]) == {}
    assert_key_hidden(result, emulator.key)


def test_quiet_prints_nothing_when_all_is_well(emulator: Emulator) -> None:
    project = project_with_rows(emulator)
    result = btpipe(emulator, "doctor", "--project", project["name"], "--quiet")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_rate_limit_headers_are_reported(version_limited: Emulator) -> None:
    project = project_with_rows(version_limited)
    # a short patience: 429s soon spend attempts, though other requests went through
    flags = ["--max-retries", "2", "--throttle-patience", "0.01", "--json"]
    result = btpipe(version_limited, "doctor", "--project", project["name"], *flags)
    assert result.exit_code == 0, result.stderr
    found = report(result)
    assert found["rate_limit_headers"] == {"Retry-After": "0 (HTTP 429 to GET /version)"}
    lines = checks(result)
    assert lines["version"][0] == "unknown"
    assert lines["insert limits"] == (
        "ok",
        "requests of at most 5,000,000 bytes (btpipe's fallback: the server reports no limit) and 1,000 rows",
    )
    assert lines["rate limits"][0] == "ok"
    assert lines["rate limits"][1].startswith("Retry-After: 0 (HTTP 429 to GET /version); 1 retries, ")


def test_a_server_that_gives_up_still_gets_its_report(listing_down: Emulator) -> None:
    """Retries running out is a failed check like any other: the report up to it is printed
    (``--json`` too), the error line names it, and the exit is 1."""
    result = btpipe(listing_down, "doctor", "--max-retries", "2", "--max-backoff", "0.01", "--json")
    assert result.exit_code == 1, result.output
    found = report(result)
    assert found["ok"] is False and found["exit_code"] == 1
    failed = [c for c in found["checks"] if c["status"] == "failed"]
    assert failed and "gave up after 2 attempts" in failed[0]["answer"], found["checks"]
    assert result.stderr.startswith("btpipe: error: ") and "gave up after 2 attempts" in result.stderr
    text = btpipe(listing_down, "doctor", "--max-retries", "2", "--max-backoff", "0.01")
    assert text.exit_code == 1 and "btpipe cannot work here: " in text.stdout
