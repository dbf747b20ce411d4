"""Every failure a user met as a traceback, a hang or a wrong count is one line with its exit code.

Each case runs ``btpipe`` as a separate process against the emulator over loopback (or, where
a failure has to be injected, in process) and checks the exit code, that stderr is exactly
one line naming the problem and where, that no traceback and no secret was printed, and that
what was written is exact: a run that fails part way and is run again ends with every row
once, every skipped event in the error file once, and ``skipped`` counting each once.

A full disk is a real one where this machine lets the tests mount a small tmpfs (root), and
an injected ENOSPC otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.common.checkpoint import Ledger
from pipeline.common.errors import BtpipeError
from pipeline.common.state import LoadState, ObjectProgress, StateStore
from pipeline.common.storage import open_storage
from pipeline.emulator.server import spawn_emulator
from pipeline.load import errorlog
from pipeline.load.batcher import Batcher
from pipeline.load.insert import ByteBudget, InsertOptions, InsertPool
from pipeline.load.migrate import page_items
from pipeline.load.transform import MAX_NESTING_DEPTH, SourceObject
from pipeline.sources import iter_rows
from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, moto_s3, post, send, unique
from tests.reliability.support import cli_env, command, free_port, record, run_cli
from tests.test_sinks_full_disk import FullDisk

SECRET = "s3cret-pa55word"


def one_line(result: Any, code: int, *naming: str) -> str:
    """The single stderr line of a failed run, after checking its exit code and content.
    ``result`` is a ``CompletedProcess`` or a click ``Result``."""
    rc = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert rc == code, result.stderr
    assert len(lines) == 1, result.stderr
    for text in naming:
        assert text in lines[0], lines[0]
    record("one-line failures checked", 1)
    return lines[0]


def jsonl(path: Path, rows: list[dict[str, Any]] | list[bytes]) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows))
    return path


def nested(event_id: str, levels: int) -> bytes:
    """An event whose ``input`` makes it nest ``levels`` levels of objects (itself the first)."""
    return b'{"id":"%s","input":' % event_id.encode() + b'{"a":' * (levels - 1) + b"1" + b"}" * levels


def project_rows(emulator: Emulator, name: str) -> dict[str, dict[str, Any]]:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": name})  # existing: returned
    return all_rows(emulator.url, emulator.key, "project_logs", project["id"])


def import_cmd(source: Path | str, to_project: str, state: Path, *more: str) -> list[str]:
    return ["import", "--in", str(source), "--to-project", to_project, "--create-project", "--to-object",
            "logs", "--state-dir", str(state), "--quiet", *more]  # fmt: skip


@pytest.fixture(scope="module")
def source(emulator: Emulator) -> dict[str, Any]:
    """A small project to export from."""
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("one-line")})
    insert(
        emulator.url,
        emulator.key,
        "project_logs",
        project["id"],
        [{"id": f"r{i}", "input": i} for i in range(30)],
    )
    return dict(project)


# -- settings: refused before any request -------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "naming"),
    [
        (lambda url: ["--api-url", url.removeprefix("http://")], ["--api-url", "http://"]),
        (
            lambda url: ["--api-url", url.replace("http://", f"http://user:{SECRET}@")],
            ["user name or password"],
        ),
        (lambda url: ["--api-url", f"{url}?api_key={SECRET}"], ["query"]),
        (lambda url: ["--api-url", f"{url}/#{SECRET}"], ["fragment"]),
        (lambda url: ["--api-key", "bt-local-key\n"], ["API key", "line break"]),
    ],
    ids=["no scheme", "user info", "query", "fragment", "key with a newline"],
)
def test_bad_url_or_key_is_refused_before_any_request(
    emulator: Emulator,
    source: dict[str, Any],
    tmp_path: Path,
    flags: Callable[[str], list[str]],
    naming: list[str],
) -> None:
    out = tmp_path / "out"
    result = run_cli(cli_env(emulator.url, emulator.key), "export", "--project", source["name"], "--out", str(out),
                     *flags(emulator.url))  # fmt: skip
    one_line(result, 2, *naming)
    assert SECRET not in result.stderr + result.stdout and "bt-local-key" not in result.stderr
    assert not out.exists()


def test_the_destination_url_and_key_are_checked_the_same_way(
    emulator: Emulator, source: dict[str, Any]
) -> None:
    env = cli_env(emulator.url, emulator.key, DEST_KEY="bt-local-key\r\n")
    migrate = ["migrate", "--from-project", source["name"], "--to-project", unique("never")]
    one_line(run_cli(env, *migrate, "--to-api-url", "127.0.0.1:1"), 2, "destination: --to-api-url")
    one_line(run_cli(env, *migrate, "--to-api-key-env", "DEST_KEY"), 2, "destination: the key in DEST_KEY")
    # the key itself where its variable's name belongs, an easy slip: never echoed
    given = run_cli(env, *migrate, "--to-api-key-env", f"sk-{SECRET}")
    one_line(given, 3, "--to-api-key-env", "not a variable name")
    assert SECRET not in given.stderr + given.stdout
    query = run_cli(env, *migrate, "--to-api-url", f"http://127.0.0.1:1/?k={SECRET}")
    one_line(query, 2, "destination: --to-api-url", "query")
    assert SECRET not in query.stderr + query.stdout


def test_a_job_file_url_with_user_info_is_refused_when_the_file_is_read(
    emulator: Emulator, tmp_path: Path
) -> None:
    job = tmp_path / "job.toml"
    job.write_text(f'[source]\napi_url = "http://me:{SECRET}@127.0.0.1:1"\n'
                   '[job.j]\nkind = "export"\nprojects = ["p"]\nout = "o"\n')  # fmt: skip
    env = {k: v for k, v in cli_env(emulator.url, emulator.key).items() if k != "BRAINTRUST_API_URL"}
    for args in (["validate", str(job)], ["run", str(job), "--quiet"]):
        result = run_cli(env, *args)
        one_line(result, 2, "job.toml:source.api_url", "user name or password")
        assert SECRET not in result.stderr + result.stdout
    job.write_text(f'[source]\napi_url = "http://127.0.0.1:1/?token={SECRET}"\n'
                   '[job.j]\nkind = "export"\nprojects = ["p"]\nout = "o"\n')  # fmt: skip
    result = run_cli(env, "validate", str(job))
    one_line(result, 2, "job.toml:source.api_url", "query")
    assert SECRET not in result.stderr + result.stdout
    job.write_text(f'[source]\napi_key_env = "sk-{SECRET}"\n'
                   '[job.j]\nkind = "export"\nprojects = ["p"]\nout = "o"\n')  # fmt: skip
    result = run_cli(env, "validate", str(job))
    one_line(result, 2, "job.toml:source.api_key_env", "not a variable name")
    assert SECRET not in result.stderr + result.stdout


def test_an_emulator_that_cannot_start_says_why(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("not a database")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        one_line(run_cli(os.environ, "emulator", "--port", port, timeout=60), 1, f"--port {port}", "in use")
    one_line(
        run_cli(os.environ, "emulator", "--port", "0", "--db", str(not_a_db), timeout=60), 2, "--db", "SQLite"
    )
    one_line(
        run_cli(os.environ, "emulator", "--port", "0", "--db", str(tmp_path), timeout=60), 2, "--db", "SQLite"
    )
    one_line(run_cli(os.environ, "emulator", "--port", "70000", timeout=60), 2, "--port")


def test_values_no_header_or_file_can_hold_are_refused(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    env = cli_env(emulator.url, emulator.key)
    export = ["export", "--project", source["name"], "--out", str(tmp_path / "out")]
    one_line(run_cli(env, *export, "--impersonate", "me@x\nX-Other: 1"), 2, "--impersonate", "line break")
    one_line(run_cli(env, *export, "--encoders", "5000"), 2, "--encoders", "64")
    bad_ray = run_cli(env, *export, "--engine", "ray", "--ray-address", "notanaddr")
    one_line(bad_ray, 2, "--ray-address notanaddr", "Invalid address format")
    job = tmp_path / "job.toml"
    job.write_bytes(b'[job.j]\nkind = "export"\nprojects = ["\xff"]\nout = "o"\n')
    one_line(run_cli(env, "validate", str(job)), 2, "job.toml", "not UTF-8")
    job.write_text(
        '[source]\nimpersonate = "me@x\\r\\nX: 1"\n[job.j]\nkind = "export"\nprojects = ["p"]\nout = "o"\n'
    )
    one_line(run_cli(env, "validate", str(job)), 2, "job.toml:source.impersonate", "line break")
    job.write_text(
        '[source]\napi_key_env = "BAD_KEY"\n[job.j]\nkind = "export"\nprojects = ["p"]\nout = "o"\n'
    )
    bad_key = run_cli({**env, "BAD_KEY": "a\nb"}, "validate", str(job))
    one_line(bad_key, 2, "job.toml:source.api_key_env: the key in BAD_KEY", "line break")
    assert not (tmp_path / "out").exists()


def test_a_filter_out_of_range_or_not_utf8_is_refused_and_deletes_nothing(
    emulator: Emulator, source: dict[str, Any]
) -> None:
    """``1e400`` once became infinity, sent as null: ``metadata.x = 1e400`` deleted every row
    without ``metadata.x``. Bytes that are not UTF-8 (a Latin-1 terminal's "é") ended in a
    traceback."""
    env = cli_env(emulator.url, emulator.key)
    delete = ["delete", "--project", source["name"], "--yes", "--filter"]
    one_line(run_cli(env, *delete, "metadata.x = 1e400"), 2, "--filter", "1e400", "64-bit float")
    one_line(run_cli(env, *delete, "input = 'Caf\udce9'"), 2, "--filter", "UTF-8")
    assert len(project_rows(emulator, source["name"])) == 30


def test_an_incremental_filtered_read_of_whole_traces_is_refused(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    """A trace is selected by a span matching the filter; incrementally, only by a new span
    matching it, so a matching trace's new spans that do not match themselves were never read
    again (exit 0). Refused on the command line and in a job file, before anything is written."""
    env = cli_env(emulator.url, emulator.key)
    out = tmp_path / "out"
    for shape in ("traces", "summary"):
        export = ["export", "--project", source["name"], "--out", str(out), "--incremental",
                  "--filter", "input = 1", "--shape", shape]  # fmt: skip
        one_line(run_cli(env, *export), 2, "--incremental", f"--shape {shape}", "--filter")
    assert not out.exists()
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job.j]\nkind = "export"\nprojects = ["{source["name"]}"]\nout = "{out}"\n'
        'incremental = true\nfilter = "input = 1"\nshape = "traces"\n'
    )
    one_line(run_cli(env, "validate", str(job)), 2, "job.toml:job.j", "--shape traces")
    assert run_cli(env, *export[:-2], "--shape", "spans").returncode == 0  # spans: fine


def test_a_root_whose_manifests_cannot_be_read_takes_no_new_run(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    """Every reader of the root refuses a file in ``_manifests/`` that is no manifest, so the
    export refuses it too, before it writes anything: a backup nothing can restore is no backup."""
    out = tmp_path / "out"
    (out / "_manifests").mkdir(parents=True)
    (out / "_manifests" / "notes.json").write_text('{"todo": "check the backups"}')
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = run_cli(
        cli_env(emulator.url, emulator.key), "export", "--project", source["name"], "--out", str(out)
    )
    one_line(result, 2, "_manifests/notes.json", "not a btpipe manifest")
    assert sorted(p.relative_to(out) for p in out.rglob("*") if not p.name.startswith(".")) == before


def test_a_file_outside_a_manifest_is_read_through_before_any_row_is_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A bad row deep in a loose JSONL file, or a Parquet file whose middle is damaged, stops
    the import before anything reaches the destination, even the project it was to create (a
    file a manifest lists is checked against its SHA-256 the same way)."""
    rows = [{"id": f"r{i}", "input": i} for i in range(3000)]
    broken = jsonl(tmp_path / "loose.jsonl", [*rows, b'{"id": "r3000", "input": ', *rows[:5]])
    env = cli_env(emulator.url, emulator.key)
    target = unique("never-half")
    result = run_cli(env, *import_cmd(broken, target, tmp_path / "state"))
    one_line(result, 2, "loose.jsonl:3001")
    assert not send("GET", emulator.url, emulator.key, "/v1/project", params={"project_name": target})[
        "objects"
    ]
    from tests.test_sinks_parquet import page_of

    storage = open_storage(str(tmp_path / "pq"))
    from pipeline.sinks.parquet import ParquetSink

    sink = ParquetSink(storage, directory="d", object_type="project_logs", prefix="r", row_group_rows=500)
    for start in range(0, 3000, 500):
        sink.write_page(page_of(rows[start : start + 500]))
    (written,) = sink.close()
    path = tmp_path / "pq" / written.path
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    target = unique("never-half")
    result = run_cli(env, *import_cmd(path, target, tmp_path / "state-pq"))
    assert result.returncode in (1, 2) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and path.name in result.stderr
    assert not send("GET", emulator.url, emulator.key, "/v1/project", params={"project_name": target})[
        "objects"
    ]


def test_an_api_url_with_a_wrong_path_is_a_usage_error_not_a_missing_project(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    env = cli_env(f"{emulator.url}/typo", emulator.key)
    result = run_cli(env, "export", "--project", source["name"], "--out", str(tmp_path / "out"))
    one_line(result, 2, "/typo/v1/project", "check the URL's path")
    result = run_cli(env, "query", f"select: * | from: project_logs('{source['id']}')")
    one_line(result, 2, "/typo/btql", "check the URL's path")
    result = run_cli(env, "doctor")
    one_line(result, 2, "/typo/v1/organization", "check the URL's path")


@contextlib.contextmanager
def answering(body: bytes, content_type: str) -> Iterator[str]:
    """A server on loopback answering every request with HTTP 200 and ``body``: a sign-in page,
    or JSON of another shape than the API's."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Sign in</body></html>", "text/html"),
        (b"{}", "application/json"),
        (b"[]", "application/json"),
        (b'{"objects":[{"name":"p"}]}', "application/json"),
        (b'{"objects":"x"}', "application/json"),
    ],
)
def test_an_answer_that_is_not_the_apis_is_one_line(body: bytes, content_type: str, tmp_path: Path) -> None:
    """A URL that answers 200 with a web page, or with JSON of another shape, is one line and
    exit 1 for every command, never a traceback."""
    with answering(body, content_type) as url:
        env = cli_env(url, "bt-local-key")
        for args in (
            ["export", "--project", "p", "--out", str(tmp_path / "out")],
            ["query", "select: * | from: project_logs('p')"],
            ["migrate", "--from-project", "p", "--to-project", "q", "--state-dir", str(tmp_path / "m")],
            ["delete", "--project", "p", "--filter", "id = 'x'", "--yes"],
        ):
            result = run_cli(env, *args, timeout=120)
            one_line(result, 1, "btpipe: error:")
    assert not (tmp_path / "out").exists()


def test_a_failure_under_json_prints_json_too(emulator: Emulator, tmp_path: Path) -> None:
    """A script reading ``--json`` gets JSON whatever happened: the error and its exit code
    beside the one line on stderr (a bad flag, a missing project, a job file's failed job)."""
    env = cli_env(emulator.url, emulator.key)
    missing = run_cli(env, "export", "--project", "no-such-project", "--out", str(tmp_path / "o"), "--json")
    line = one_line(missing, 4, "not found")
    assert orjson.loads(missing.stdout) == {
        "ok": False,
        "error": line.removeprefix("btpipe: error: "),
        "exit_code": 4,
    }
    bad_flag = run_cli(
        env, "import", "--json", "--batch-rows", "0", "--in", str(tmp_path), "--to-project", "p"
    )
    one_line(bad_flag, 2, "--batch-rows")
    assert orjson.loads(bad_flag.stdout)["exit_code"] == 2
    no_such_option = run_cli(env, "query", "--json", "select: *")  # query takes no --json
    one_line(no_such_option, 2, "No such option '--json'")
    assert no_such_option.stdout == ""
    job = tmp_path / "jobs.toml"
    job.write_text('[job.a]\nkind = "export"\nprojects = ["no-such-project"]\nout = "o"\n')
    failed = run_cli(env, "run", str(job), "--json")
    assert failed.returncode == 4, failed.stderr
    [report] = orjson.loads(failed.stdout)
    assert (report["name"], report["ok"], report["exit_code"]) == ("a", False, 4)


def test_an_out_that_is_a_file_is_named_as_such(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    env = cli_env(emulator.url, emulator.key)
    for out in (afile, afile / "sub"):
        result = run_cli(env, "export", "--project", source["name"], "--out", str(out))
        one_line(result, 2, f"{afile} is a file, not a directory")
    assert afile.read_text() == "mine"


def test_a_failed_export_leaves_no_empty_root_behind(emulator: Emulator, tmp_path: Path) -> None:
    env = cli_env(emulator.url, emulator.key)
    new_root = tmp_path / "new"
    one_line(run_cli(env, "export", "--project", unique("missing"), "--out", str(new_root)), 4, "not found")
    assert not new_root.exists()
    wrong_key = cli_env(emulator.url, "bt-wrong")
    one_line(run_cli(wrong_key, "export", "--project", "p", "--out", str(new_root)), 3, "rejected")
    assert not new_root.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    one_line(run_cli(env, "export", "--project", unique("missing"), "--out", str(kept)), 4, "not found")
    assert kept.is_dir()  # a root that was there before stays


def test_an_empty_out_is_refused_not_the_current_directory(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(command("export", "--project", source["name"], "--out", ""), cwd=cwd, capture_output=True,
                            text=True, timeout=120, env=cli_env(emulator.url, emulator.key))  # fmt: skip
    one_line(result, 2, "empty path")
    assert list(cwd.iterdir()) == []


# -- object storage: unreachable, bounded by the retry settings ---------------------------


@pytest.fixture(scope="module")
def moto_env() -> Iterator[dict[str, str]]:
    with moto_s3("present") as env:
        yield env


@pytest.mark.parametrize("where", ["missing bucket", "closed endpoint"])
def test_an_unreachable_s3_bucket_is_one_line(
    emulator: Emulator, source: dict[str, Any], moto_env: dict[str, str], where: str
) -> None:
    storage_env = dict(moto_env)
    bucket = "no-such-bucket" if where == "missing bucket" else "present"
    if where == "closed endpoint":
        storage_env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    env = cli_env(emulator.url, emulator.key, **storage_env)
    out = f"s3://{bucket}/{unique('p')}"
    result = run_cli(
        env, "export", "--project", source["name"], "--out", out, "--max-retries", "1", timeout=240
    )
    one_line(result, 1, out)


def test_a_gs_output_that_does_not_answer_gives_up_within_the_retry_settings(
    emulator: Emulator, source: dict[str, Any]
) -> None:
    """Without a bound, the GCS client retries for a quarter of an hour; ``--max-retries 1``
    must bound it (the timeout here only keeps a hang from stalling the suite)."""
    env = cli_env(emulator.url, emulator.key, STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{free_port()}")
    result = run_cli(env, "export", "--project", source["name"], "--out", "gs://bucket/p", "--max-retries", "1",
                     "--max-backoff", "1", timeout=240)  # fmt: skip
    one_line(result, 1, "gs://bucket/p")


# -- input files --------------------------------------------------------------------------


def test_a_part_file_the_manifest_lists_but_is_gone(
    emulator: Emulator, source: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = cli_env(emulator.url, emulator.key)
    exported = run_cli(env, "export", "--project", source["name"], "--objects", "logs", "--out", str(out),
                       "--format", "jsonl", "--file-rows", "10", "--quiet")  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    parts = sorted(out.rglob("*.jsonl*"))
    assert len(parts) >= 2
    parts[1].unlink()
    result = run_cli(env, "import", "--in", str(out), "--to-project", unique("gone"), "--create-project",
                     "--state-dir", str(tmp_path / "state"), "--quiet")  # fmt: skip
    one_line(result, 1, parts[1].name, "missing")


def test_a_file_deleted_after_the_input_was_listed(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    for name in ("gone.jsonl", "gone.parquet"):
        with pytest.raises(
            BtpipeError,
            match=rf"^{re.escape(str(tmp_path))}/{name}: missing \(the input names it, but it is not there\)",
        ):
            next(iter_rows(storage, name))


def test_a_400_in_the_middle_of_a_batch_names_the_file_line_and_id(
    emulator: Emulator, tmp_path: Path
) -> None:
    rows = [{"id": f"e{i}", "input": i, "scores": {"a": "bad" if i == 6 else 0.5}} for i in range(10)]
    path = jsonl(tmp_path / "scores.jsonl", rows)
    result = run_cli(cli_env(emulator.url, emulator.key), *import_cmd(path, unique("s400"), tmp_path / "st"))
    one_line(result, 2, f"{path}:7", "'e6'", "scores.a")


def test_a_400_during_a_migration_names_the_page_row_and_id(emulator: Emulator) -> None:
    """Migrate's items carry their page row; the same mapping names it."""
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("m400")})
    page = b"".join(orjson.dumps(r) + b"\n" for r in
                    [{"id": "p1", "scores": {"a": 1}}, {"id": "p2", "scores": {"a": 7}}, {"id": "p3"}])  # fmt: skip
    items = page_items(page, SourceObject("project_logs", project["id"]), "cursor-1", "logs")

    async def load() -> None:
        async with BraintrustClient(ClientSettings(api_url=emulator.url, api_key=emulator.key)) as client:
            pool = InsertPool(client, InsertOptions(), max_request_bytes=10**6)
            batcher = Batcher(f"/v1/project_logs/{project['id']}", max_rows=10, max_bytes=10**6,
                              ledger=Ledger(ObjectProgress(project["id"])))  # fmt: skip

            async def produce() -> None:
                for item in items:
                    for batch in batcher.add(item):
                        await pool.submit(batch)
                for batch in batcher.flush():
                    await pool.submit(batch)

            await pool.run(produce)

    with pytest.raises(
        BtpipeError, match=r"^event 'p2' at logs page row 2 was refused: .*events\[1\]\.scores\.a"
    ):
        anyio.run(load)
    record("one-line failures checked", 1)


@pytest.mark.parametrize("levels", [260, 990], ids=["260 levels", "990 levels (beyond the encoder)"])
def test_a_row_nested_too_deep_names_file_line_and_limit_or_is_skipped(
    emulator: Emulator, tmp_path: Path, levels: int
) -> None:
    path = jsonl(
        tmp_path / "deep.jsonl", [b'{"id":"a","input":1}', nested("deep", levels), b'{"id":"b","input":2}']
    )
    env = cli_env(emulator.url, emulator.key)
    dest = unique("deep")
    failed = run_cli(env, *import_cmd(path, dest, tmp_path / "st"))
    one_line(failed, 1, f"{path}:2", "'deep'", f"deeper than {MAX_NESTING_DEPTH} levels", "--on-error skip")
    errors = tmp_path / "errors.jsonl"
    skipped = run_cli(env, *import_cmd(path, dest, tmp_path / "st", "--on-error", "skip", "--error-file",
                                       str(errors), "--json"))  # fmt: skip
    assert skipped.returncode == 1 and "Traceback" not in skipped.stderr, skipped.stderr
    assert orjson.loads(skipped.stdout)["skipped"] == 1
    (line,) = errors.read_bytes().splitlines()
    entry = orjson.loads(line)
    assert (entry["id"], entry["where"]) == ("deep", f"{path}:2")
    assert sorted(project_rows(emulator, dest)) == ["a", "b"]


# -- a full disk ----------------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Callable[[str], None]]:
    """A tmpfs of ``size`` mounted at ``path`` (skips where mounting is not allowed); yields
    a function that resizes it, and always unmounts it."""
    path.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the injected full disk covers this")

    def resize(new: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new}", str(path)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


#: Events the service would refuse among twice as many it takes, each refused one a batch of
#: its own, so workers finish them out of order around the checkpoint.
DEEP, GOOD = 600, 1200


def mixed_input(path: Path) -> tuple[Path, set[str]]:
    """Every third row nested too deep; returns the file and the ids of the good rows."""
    rows: list[bytes] = []
    good: set[str] = set()
    for i in range(DEEP + GOOD):
        if i % 3 == 0:
            rows.append(nested(f"d{i}", 260))
        else:
            rows.append(orjson.dumps({"id": f"g{i}", "input": i}))
            good.add(f"g{i}")
    return jsonl(path, rows), good


def check_error_file(errors: Path) -> None:
    """Every line whole, every deep event once."""
    lines = errors.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in lines)
    keys = [(e["id"], e["where"]) for e in map(orjson.loads, lines)]
    assert len(keys) == len(set(keys)) == DEEP
    assert {k[0] for k in keys} == {f"d{i}" for i in range(0, DEEP + GOOD, 3)}


def test_a_full_disk_under_the_error_file_and_a_resume_count_each_event_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    path, good = mixed_input(tmp_path / "mixed.jsonl")
    env = cli_env(emulator.url, emulator.key)
    dest = unique("full")
    with tmpfs(tmp_path / "disk", "64k") as resize:
        errors = tmp_path / "disk" / "errors.jsonl"
        cmd = import_cmd(path, dest, tmp_path / "st", "--on-error", "skip", "--error-file", str(errors),
                         "--batch-rows", "50", "--workers", "4", "--json")  # fmt: skip
        full = run_cli(env, *cmd)
        one_line(full, 1, f"cannot write error file {errors}: No space left on device")
        assert all(line.endswith(b"\n") for line in errors.read_bytes().splitlines(keepends=True))
        resize("16m")
        resumed = run_cli(env, *cmd)
        assert resumed.returncode == 1 and "Traceback" not in resumed.stderr, resumed.stderr
        summary = orjson.loads(resumed.stdout)
        assert summary["resumed"] and summary["skipped"] == DEEP and summary["rows"] == DEEP + GOOD
        check_error_file(errors)
    assert set(project_rows(emulator, dest)) == good
    record("skipped events counted once across a full disk", DEEP)


def test_an_error_file_on_a_device_that_is_always_full(emulator: Emulator, tmp_path: Path) -> None:
    """``/dev/full`` refuses every write with ENOSPC, and is no file to read back or cut."""
    path = jsonl(tmp_path / "deep.jsonl", [nested("deep", 260)])
    result = run_cli(cli_env(emulator.url, emulator.key),
                     *import_cmd(path, unique("dev-full"), tmp_path / "st", "--on-error", "skip", "--error-file",
                                 "/dev/full"), timeout=120)  # fmt: skip
    one_line(result, 1, "cannot write error file /dev/full: No space left on device")


class EventualENOSPC:
    """``os`` for the error log, whose ``write`` puts half a line on disk and fails with
    ENOSPC once ``room`` bytes are written: a disk filling up in the middle of a line."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, fd: int, data: bytes) -> int:
        if len(data) > self.room:
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return os.write(fd, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_an_injected_full_disk_under_the_error_file_leaves_whole_lines(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, good = mixed_input(tmp_path / "mixed.jsonl")
    errors = tmp_path / "errors.jsonl"
    dest = unique("enospc")
    cmd = import_cmd(path, dest, tmp_path / "st", "--on-error", "skip", "--error-file", str(errors),
                     "--batch-rows", "50", "--workers", "4", "--json")  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(errorlog, "os", EventualENOSPC(room=150_000))
        full = btpipe(emulator, *cmd)
    one_line(full, 1, f"cannot write error file {errors}: No space left on device")
    with errors.open("ab") as fh:  # as a process killed mid-write would leave it
        fh.write(nested("d0", 260)[:700])
    resumed = btpipe(emulator, *cmd)
    assert resumed.exit_code == 1, resumed.output
    summary = orjson.loads(resumed.stdout)
    assert summary["skipped"] == DEEP and summary["rows"] == DEEP + GOOD
    check_error_file(errors)
    assert set(project_rows(emulator, dest)) == good


def test_a_full_disk_under_the_state_is_one_line_and_the_rerun_is_exact(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = jsonl(tmp_path / "rows.jsonl", [{"id": f"s{i}", "input": i} for i in range(2000)])
    env = cli_env(emulator.url, emulator.key)
    dest = unique("state-full")
    with tmpfs(tmp_path / "disk", "64k"):
        filler = tmp_path / "disk" / "filler"
        with filler.open("wb", buffering=0) as fh, pytest.raises(OSError, match="No space"):
            while True:
                fh.write(b"x" * 4096)
        cmd = import_cmd(path, dest, tmp_path / "disk" / "state", "--batch-rows", "100")
        full = run_cli(env, *cmd)
        one_line(full, 1, "cannot write", "No space left on device")
        filler.unlink()
        again = run_cli(env, *cmd)
        assert again.returncode == 0, again.stderr
    assert set(project_rows(emulator, dest)) == {f"s{i}" for i in range(2000)}


class FullStateDisk(FullDisk):
    """A disk with ``room`` bytes left, for a state file."""

    def write_bytes(self, relpath: str, data: bytes) -> None:
        with self.open_atomic(relpath) as fh:
            fh.write(data)


def test_a_state_write_that_fails_is_one_error_and_publishes_nothing(tmp_path: Path) -> None:
    store = StateStore(FullStateDisk(tmp_path, room=10), "job.json", LoadState)  # type: ignore[arg-type]
    full = rf"^cannot write {re.escape(str(tmp_path))}/job.json: No space left on device$"
    with pytest.raises(BtpipeError, match=full):
        store.save(LoadState({"input": "x"}, {"o": ObjectProgress("d", rows=5)}))
    assert list(tmp_path.iterdir()) == []


# -- Ctrl-C ---------------------------------------------------------------------------------


def test_the_byte_budget_is_returned_inside_a_cancelled_scope() -> None:
    """A worker stopped by Ctrl-C returns its bytes from a ``finally`` in a cancelled scope:
    nothing there may wait, or the cancellation would be retried on every loop turn."""

    async def scenario() -> int:
        budget = ByteBudget(100)
        await budget.acquire(80)
        with anyio.CancelScope() as scope:
            scope.cancel()
            budget.release(80)
        async with anyio.create_task_group() as tg:  # a waiter is woken by a release
            tg.start_soon(budget.acquire, 90)
            await budget.acquire(90)
            budget.release(90)
        return budget.in_flight

    assert anyio.run(scenario) == 90


def state_files(state: Path) -> list[Path]:
    """The job's state file once saved (not its lease beside it)."""
    return [p for p in state.glob("import-*.json") if not p.name.endswith(".lease.json")]


def test_ctrl_c_during_an_import_exits_5_with_state_saved_and_resumes_exactly(tmp_path: Path) -> None:
    rows = [{"id": f"c{i}", "input": {"i": i, "text": "x" * 100}} for i in range(20_000)]
    path = jsonl(tmp_path / "rows.jsonl", rows)
    state = tmp_path / "state"
    with spawn_emulator(tmp_path / "emulator.db", "--latency-ms", "100") as url:
        env = cli_env(url, "bt-local-key")
        dest = unique("ctrl-c")
        cmd = command(*import_cmd(path, dest, state, "--batch-rows", "100", "--json"))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not state_files(state) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the import ended before the interrupt"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # a spin would outlast this
        one_line(subprocess.CompletedProcess(cmd, proc.returncode, "", err), 5, "interrupted", "state saved")
        (saved,) = state_files(state)
        progress = next(iter(orjson.loads(saved.read_bytes())["objects"].values()))
        assert 0 < progress["rows"] < len(rows)
        resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert orjson.loads(resumed.stdout)["resumed"] is True
        copied = project_rows(Emulator(url), dest)
    assert {k: v["input"] for k, v in copied.items()} == {r["id"]: r["input"] for r in rows}
    assert state_files(state) == []
    record("interrupts resumed exactly", 1)
