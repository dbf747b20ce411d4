"""The bad-input catalogue: each case gets its documented exit code, exactly one stderr line
naming the problem, no partial output, and no loss of what the destination already held.

Every case runs against the same prepared world (:class:`World`): a source project, a valid
JSONL export of it, an export root already holding a finished run plus a file of its own,
and a destination project already holding one row. After each case the export root and the
destination project must be exactly as they were (unless the case is a success).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import Emulator
from tests.helpers import all_rows, btpipe, insert, post, read_export_files, unique
from tests.reliability.support import record

PRECIOUS = {"id": "kept", "input": "precious"}


@dataclass
class World:
    emulator: Emulator
    root: Path  # everything a case may touch lives under here
    project: dict[str, Any]
    export: Path  # a valid JSONL export of ``project`` (read-only for cases)
    out: Path  # an export root that already holds a finished run
    dest: dict[str, Any]  # a destination project already holding PRECIOUS

    def scratch(self, name: str) -> Path:
        path = self.root / "scratch" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def import_dir(self, name: str, filename: str, data: bytes) -> str:
        """An export-shaped directory holding one data file with ``data``."""
        run = self.scratch(name) / "object_type=dataset" / "object_id=d-bad" / "run=R"
        run.mkdir(parents=True, exist_ok=True)
        (run / filename).write_bytes(data)
        return str(self.scratch(name))

    def import_args(self, source: str, *more: str) -> list[str]:
        return ["import", "--in", source, "--to-project", self.dest["name"], "--state-dir",
                str(self.scratch("state")), "--restart", "--into-existing", *more]  # fmt: skip

    def migrate_args(self, state: str, *more: str, source: str | None = None) -> list[str]:
        return ["migrate", "--from-project", source or self.project["name"], "--to-project", self.dest["name"],
                "--state-dir", str(self.scratch(state)), *more]  # fmt: skip

    def export_args(self, *more: str) -> list[str]:
        return ["export", "--project", self.project["name"], "--objects", "logs", "--out", str(self.out),
                "--format", "jsonl", *more]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[World], list[str]]
    code: int
    message: str
    key: str | None = None


def jsonl(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


GOOD = orjson.dumps({"id": "g1", "input": 1})


def other_schema() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": [1, 2], "y": ["a", "b"]}), sink)
    return bytes(sink.getvalue().to_pybytes())


def write(world: World, name: str, text: str) -> str:
    path = world.scratch("files") / name
    path.write_text(text)
    return str(path)


def toml_job(world: World, body: str) -> list[str]:
    return ["run", write(world, unique("job") + ".toml", body), "--quiet"]


VALID_JOB = '[job.j]\nkind = "export"\nprojects = ["{p}"]\nobjects = ["logs"]\nout = "{o}"\n'

CASES = [
    # --- credentials and names
    Case("export wrong key", lambda w: w.export_args(), 3, "API key was rejected", key="bt-wrong-key-123"),
    Case("import wrong key", lambda w: w.import_args(str(w.export)), 3, "API key", key="bt-wrong-key-123"),
    Case("migrate wrong key", lambda w: w.migrate_args("st-m"), 3, "API key", key="bt-wrong-key-123"),
    Case(
        "export unknown project",
        lambda w: ["export", "--project", "no-such-project", "--out", str(w.out)],
        4,
        "project 'no-such-project' not found",
    ),
    Case(
        "import unknown project",
        lambda w: [
            "import",
            "--in",
            str(w.export),
            "--to-project",
            "no-such-dest",
            "--state-dir",
            str(w.scratch("st-u")),
        ],
        4,
        "no-such-dest",
    ),
    Case("migrate unknown source", lambda w: w.migrate_args("st-m2", source="no-such-src"), 4, "no-such-src"),
    Case(
        "export unknown dataset",
        lambda w: w.export_args("--objects", "dataset:missing"),
        4,
        "dataset 'missing' not found",
    ),
    Case(
        "query unknown project",
        lambda w: ["query", "select * from project_logs('no-such-id')"],
        2,
        "unknown project id 'no-such-id'",
    ),
    # --- filters and flags
    Case("export filter syntax", lambda w: w.export_args("--filter", "metadata.x = = 1"), 2, "--filter"),
    Case("export filter unclosed quote", lambda w: w.export_args("--filter", "input = 'abc"), 2, "--filter"),
    Case(
        "delete filter syntax",
        lambda w: ["delete", "--project", w.dest["name"], "--filter", "id ==== 'x'", "--yes"],
        2,
        "filter",
    ),
    Case("query syntax", lambda w: ["query", "select from where"], 2, "query"),
    Case("export bogus objects", lambda w: w.export_args("--objects", "bogus"), 2, "--objects"),
    Case(
        "import to-object bogus",
        lambda w: w.import_args(str(w.export), "--to-object", "bogus"),
        2,
        "--to-object",
    ),
    Case(
        "import objects not in input",
        lambda w: w.import_args(str(w.export), "--objects", "dataset:nope"),
        2,
        "nope",
    ),
    Case(
        "migrate key env unset",
        lambda w: w.migrate_args("st-m3", "--to-api-key-env", "BTPIPE_NO_SUCH_VAR"),
        3,
        "BTPIPE_NO_SUCH_VAR",
    ),
    # --- input files
    Case(
        "truncated gzip",
        lambda w: w.import_args(w.import_dir("tg", "p.jsonl.gz", gzip.compress(jsonl(GOOD) * 200)[:-30])),
        2,
        "truncated or corrupt",
    ),
    Case(
        "malformed JSONL line",
        lambda w: w.import_args(w.import_dir("mj", "p.jsonl", jsonl(GOOD, b'{"id": '))),
        2,
        "p.jsonl:2: malformed JSON",
    ),
    Case(
        "JSONL line not an object",
        lambda w: w.import_args(w.import_dir("na", "p.jsonl", jsonl(GOOD, b"[1, 2]"))),
        2,
        "p.jsonl:2: expected a JSON object",
    ),
    Case(
        "non-UTF-8 bytes",
        lambda w: w.import_args(
            w.import_dir("nu", "p.jsonl", jsonl(GOOD, b'{"id": "x", "input": "\xff\xfe"}'))
        ),
        2,
        "p.jsonl:2",
    ),
    Case(
        "parquet of another schema",
        lambda w: w.import_args(w.import_dir("ps", "p.parquet", other_schema())),
        2,
        "p.parquet",
    ),
    Case(
        "parquet garbage",
        lambda w: w.import_args(w.import_dir("pg", "p.parquet", b"PAR1 garbage")),
        2,
        "not a btpipe Parquet file",
    ),
    Case(
        "truncated zstd",
        lambda w: w.import_args(
            w.import_dir("tz", "p.jsonl.zst", pa.compress(jsonl(GOOD) * 500, "zstd", asbytes=True)[:-20])
        ),
        2,
        "p.jsonl.zst",
    ),
    Case(
        "only an unknown file type",
        lambda w: w.import_args(w.import_dir("ft", "p.csv", b"a,b\n")),
        2,
        "no JSONL or Parquet files",
    ),
    Case("empty directory", lambda w: w.import_args(str(w.scratch("empty"))), 2, "no JSONL or Parquet files"),
    Case("missing input", lambda w: w.import_args(str(w.root / "absent")), 2, "absent"),
    Case(
        "unknown object type dir",
        lambda w: w.import_args(str(Path(w.import_dir("ot", "p.jsonl", jsonl(GOOD))).parent / "weird")),
        2,
        "weird",
    ),
    Case("broken manifest", lambda w: w.import_args(write(w, "m.json", "{not json")), 2, "m.json"),
    # --- outputs
    Case(
        "output parent is a file",
        lambda w: ["export", "--project", w.project["name"], "--out", write(w, "blocker", "x") + "/sub"],
        2,
        "cannot write",
    ),
    # --- job files
    Case("job file missing", lambda w: ["run", str(w.root / "nope.toml")], 2, "nope.toml"),
    Case("job file broken TOML", lambda w: toml_job(w, "[job.x\nkind = "), 2, ".toml"),
    Case(
        "job file unknown key",
        lambda w: toml_job(w, VALID_JOB.format(p=w.project["name"], o=w.out) + "colour = 'blue'\n"),
        2,
        "colour",
    ),
    Case(
        "job file wrong type",
        lambda w: toml_job(w, '[job.j]\nkind = "export"\nprojects = "p"\nobjects = 3\nout = "x"\n'),
        2,
        "objects",
    ),
    Case("job file unknown kind", lambda w: toml_job(w, '[job.j]\nkind = "teleport"\n'), 2, "teleport"),
]


#: Flag values click itself rejects: exit 2, but click prints its usage block around the
#: one line (four lines in all); one line needs a hook in the CLI entry point.
CLICK_CASES = [
    Case("export page limit zero", lambda w: w.export_args("--page-limit", "0"), 2, "--page-limit"),
    Case("export unknown format", lambda w: w.export_args("--format", "csv"), 2, "--format"),
]
ALL_CASES = [pytest.param(c, id=c.name) for c in CASES] + [pytest.param(c, id=c.name) for c in CLICK_CASES]


@pytest.fixture(scope="module")
def world(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("bad-src")})
    insert(emulator.url, emulator.key, "project_logs", project["id"],
           [{"id": f"r{i}", "input": {"i": i}, "metadata": {"who": "it's' OR '1'='1" if i == 3 else "x"}}
            for i in range(40)])  # fmt: skip
    for name in ("../../etc", "a/b\\c", ".."):
        ds = post(emulator.url, emulator.key, "/v1/dataset", {"project_id": project["id"], "name": name})
        insert(emulator.url, emulator.key, "dataset", ds["id"], [{"id": "x", "input": name}])
    dest = post(emulator.url, emulator.key, "/v1/project", {"name": unique("bad-dest")})
    insert(emulator.url, emulator.key, "project_logs", dest["id"], [PRECIOUS])
    world = World(emulator, root, project, root / "export", root / "out", dest)
    for target in (world.export, world.out):
        result = invoke(world, ["export", "--project", project["name"], "--out", str(target), "--format",
                                "jsonl", "--compression", "gzip", "--quiet"])  # fmt: skip
        assert result.exit_code == 0, result.output
    return world


def invoke(world: World, args: list[str], key: str | None = None) -> Any:
    return btpipe(world.emulator, *args, key=key)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and "scratch" not in p.relative_to(root).parts
    }


@pytest.mark.parametrize("case", ALL_CASES)
def test_bad_input(world: World, case: Case) -> None:
    before = snapshot(world.root)
    args = case.args(world)
    result = invoke(world, args, key=case.key)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == case.code, result.output
    assert len(lines) == 1 and case.message in lines[0], result.stderr
    if case.key:
        assert case.key not in result.output
    assert snapshot(world.root) == before, "the destination or a source changed"
    dest_rows = all_rows(world.emulator.url, world.emulator.key, "project_logs", world.dest["id"])
    assert list(dest_rows) == ["kept"] and dest_rows["kept"]["input"] == "precious"
    record("bad inputs tried", 1)


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_filter_value_with_quotes_keeps_its_meaning(world: World) -> None:
    out = world.scratch("quotes")
    result = invoke(world, ["export", "--project", world.project["name"], "--objects", "logs", "--format",
                            "jsonl", "--out", str(out), "--quiet", "--filter",
                            "metadata.who = 'it''s'' OR ''1''=''1'"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_export_files(out, "project_logs", world.project["id"])] == ["r3"]
    record("bad inputs tried", 1)


def test_object_names_with_separators_stay_inside_the_output_root(world: World) -> None:
    """Datasets named ``../../etc``, ``a/b\\c`` and ``..``: exported and imported back by name,
    nothing written outside the output root."""
    base = world.scratch("names")
    out = base / "deep" / "out"
    outside = snapshot(world.root)
    result = invoke(world, ["export", "--project", world.project["name"], "--objects", "datasets", "--out",
                            str(out), "--format", "jsonl", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert snapshot(world.root) == outside
    assert sorted(p.name for p in base.iterdir()) == ["deep"] and sorted(
        p.name for p in out.parent.iterdir()
    ) == ["out"]
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())
    dest = unique("names-dest")
    back = invoke(world, ["import", "--in", str(out), "--to-project", dest, "--create-project", "--state-dir",
                          str(base / "state"), "--quiet", "--json"])  # fmt: skip
    assert back.exit_code == 0, back.output
    names = sorted(o["source"] for o in orjson.loads(back.stdout)["objects"])
    assert names == ["dataset:..", "dataset:../../etc", "dataset:a/b\\c"]
    shutil.rmtree(base)
    record("bad inputs tried", 3)
