"""The Parquet files as other engines read them: DuckDB, polars, pyarrow and Spark.

One export of sample data (project logs, a dataset, an experiment, plus rows with the edge
cases: a JSON null beside an absent field, an integer metric beyond 2**53, an integral float
score) and a second, incremental run whose rows lack most fields. Each engine must see the
types the schema promises (JSON, timestamps, maps, a numeric ``_xact_id``), tell a JSON null
from an absent field, order by ``_xact_id`` without a cast, count every type's rows through
one glob per type, and run the cross-type union ``docs/parquet-schema.md`` shows.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.common.arrow_schema import JSON_TYPE
from pipeline.emulator.sample import generate_dataset, generate_experiment, generate_traces
from tests.helpers import all_rows, btpipe, insert, make_project

TYPES = ("project_logs", "dataset", "experiment")
BIG = 2**53 + 1  # a token count a double would round


@pytest.fixture(scope="module")
def export(emulator: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two runs of one project into one root; the source rows by type and id."""
    records = list(generate_dataset(5, 12))
    logs = list(generate_traces(5, 8))
    logs += [
        {"id": "null-input", "input": None, "output": {"n": 1}, "metrics": {"tokens": BIG, "start": 0.5}},
        {"id": "absent-input", "output": None, "scores": {"exact": 1.0, "pass": 1}},
    ]
    objects = make_project(
        emulator.url, emulator.key, "readers",
        logs=logs,
        dataset_rows=records,
        experiment_name="readers-experiment",
        experiment_rows=[],
    )  # fmt: skip
    experiment_rows = list(generate_experiment(5, objects["dataset"]["id"], records))
    insert(emulator.url, emulator.key, "experiment", objects["experiment"]["id"], experiment_rows)
    ids = {"project_logs": objects["project"]["id"], "dataset": objects["dataset"]["id"],
           "experiment": objects["experiment"]["id"]}  # fmt: skip
    root = tmp_path_factory.mktemp("readers") / "root"
    for run in range(2):
        if run:  # rows with almost no fields: the files keep every column all the same
            insert(
                emulator.url, emulator.key, "project_logs", ids["project_logs"], [{"id": "bare", "input": 1}]
            )
            insert(emulator.url, emulator.key, "dataset", ids["dataset"], [{"id": "bare-record"}])
        result = btpipe(emulator, "export", "--project", objects["project"]["name"], "--out", str(root),
                        "--format", "parquet", "--incremental")  # fmt: skip
        assert result.exit_code == 0, result.output
    source = {t: all_rows(emulator.url, emulator.key, t, ids[t]) for t in TYPES}
    return {"root": root, "source": source}


def _glob(root: Path, object_type: str = "*") -> str:
    return f"{root}/object_type={object_type}/*/*/*.parquet"


def test_every_file_of_a_type_has_the_same_schema(export: dict[str, Any]) -> None:
    for object_type in TYPES:
        files = sorted(export["root"].glob(f"object_type={object_type}/*/*/*.parquet"))
        assert len(files) == 2 if object_type != "experiment" else len(files) == 1
        schemas = {pq.read_schema(f) for f in files}
        assert len(schemas) == 1, object_type
    # In the Parquet footer itself: the JSON logical type, a decimal version.
    parquet_schema = pq.ParquetFile(files[0]).schema
    logical = {
        parquet_schema.column(i).name: parquet_schema.column(i).logical_type.type
        for i in range(len(parquet_schema))
    }
    assert logical["input"] == logical["metadata"] == "JSON"
    assert logical["_xact_id"] == "DECIMAL"
    assert logical["created"] == "TIMESTAMP"


# -- pyarrow -------------------------------------------------------------------------------------
def test_pyarrow_types_values_and_union(export: dict[str, Any]) -> None:
    root, source = export["root"], export["source"]
    logs = ds.dataset(root / "object_type=project_logs", format="parquet", partitioning="hive").to_table()
    assert logs.schema.field("input").type == JSON_TYPE
    assert logs.schema.field("created").type == pa.timestamp("us", tz="UTC")
    assert logs.schema.field("metrics").type == pa.map_(pa.string(), pa.float64())
    assert logs.schema.field("metrics_int").type == pa.map_(pa.string(), pa.int64())
    assert logs.schema.field("_xact_id").type == pa.decimal128(20, 0)
    by_id = {row["id"]: row for row in logs.to_pylist()}
    assert set(by_id) == set(source["project_logs"])
    assert by_id["null-input"]["input"] is None and "input" in by_id["null-input"]["_nulls"]
    assert by_id["absent-input"]["input"] is None and "input" not in by_id["absent-input"]["_nulls"]
    assert dict(by_id["null-input"]["metrics_int"]) == {"tokens": BIG}
    for row_id, row in source["project_logs"].items():
        assert by_id[row_id]["created"] == datetime.fromisoformat(row["created"])
        assert by_id[row_id]["_xact_id"] == Decimal(row["_xact_id"])

    schemas = [pq.read_schema(next(root.glob(f"object_type={t}/*/*/*.parquet"))) for t in TYPES]
    union = ds.dataset(
        root, format="parquet", partitioning="hive", schema=_with_partitions(pa.unify_schemas(schemas))
    )
    counts = union.to_table(columns=["object_type"]).group_by("object_type").aggregate([([], "count_all")])
    assert _counts(counts) == {t: len(source[t]) for t in TYPES}


def _with_partitions(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field("object_type", pa.string()))


def _counts(table: pa.Table) -> dict[str, int]:
    columns = table.to_pydict()
    return dict(zip(columns["object_type"], columns["count_all"], strict=True))


# -- DuckDB --------------------------------------------------------------------------------------
def test_duckdb_types_values_and_union(export: dict[str, Any]) -> None:
    root, source = export["root"], export["source"]
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW logs AS SELECT * FROM read_parquet('{_glob(root, 'project_logs')}', hive_partitioning = true)"
    )
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE logs)").fetchall())
    assert types["input"] == "JSON"
    assert types["created"] == "TIMESTAMP WITH TIME ZONE"
    assert types["metrics"] == "MAP(VARCHAR, DOUBLE)"
    assert types["metrics_int"] == "MAP(VARCHAR, BIGINT)"
    assert types["_xact_id"] == "DECIMAL(20,0)"
    assert types["_nulls"] == "VARCHAR[]"
    # JSON null vs absent, without reading text: IS NULL is both, _nulls says which.
    assert con.execute(
        "SELECT id, list_contains(_nulls, 'input') FROM logs WHERE input IS NULL AND id LIKE '%-input' ORDER BY id"
    ).fetchall() == [("absent-input", False), ("null-input", True)]
    assert con.execute(
        "SELECT metrics_int['tokens'], metrics['start'] FROM logs WHERE id = 'null-input'"
    ).fetchall() == [(BIG, 0.5)]
    assert con.execute(
        "SELECT scores['exact'], scores_int['pass'] FROM logs WHERE id = 'absent-input'"
    ).fetchall() == [(1.0, 1)]
    # _xact_id orders and aggregates as a number; created is a timestamp.
    ordered = [r[0] for r in con.execute("SELECT _xact_id FROM logs ORDER BY _xact_id").fetchall()]
    assert ordered == sorted(Decimal(r["_xact_id"]) for r in source["project_logs"].values())
    newest = max(source["project_logs"].values(), key=lambda r: int(r["_xact_id"]))
    assert con.execute("SELECT arg_max(id, _xact_id) FROM logs").fetchone() == (newest["id"],)
    rows = dict(con.execute("SELECT id, created FROM logs").fetchall())
    assert rows == {i: datetime.fromisoformat(r["created"]) for i, r in source["project_logs"].items()}
    assert con.execute("SELECT count(*) FROM logs WHERE input->>'$.question' IS NOT NULL").fetchone() == (
        sum(
            1
            for r in source["project_logs"].values()
            if isinstance(r.get("input"), dict) and "question" in r["input"]
        ),
    )
    union = con.execute(
        f"SELECT object_type, count(*) FROM read_parquet('{_glob(root)}', hive_partitioning = true, "
        "union_by_name = true) GROUP BY ALL"
    ).fetchall()
    assert dict(union) == {t: len(source[t]) for t in TYPES}
    # docs/jobs.md's view of the latest version of each span, and its query
    con.execute(f"""
        CREATE VIEW spans AS
        SELECT * EXCLUDE (rn) FROM (
          SELECT *, row_number() OVER (PARTITION BY object_id, id ORDER BY _xact_id DESC) AS rn
          FROM read_parquet('{_glob(root, "project_logs")}', hive_partitioning = true)
        ) WHERE rn = 1""")
    orgs = dict(
        con.execute(
            "SELECT metadata->>'$.orgName' AS org, count(*) FROM spans WHERE is_root GROUP BY 1"
        ).fetchall()
    )
    expected: dict[str | None, int] = {}
    for row in source["project_logs"].values():
        if row.get("is_root"):
            org = (row.get("metadata") or {}).get("orgName")
            expected[org] = expected.get(org, 0) + 1
    assert orgs == expected
    # docs/parquet-schema.md: a JSON null and an absent field counted apart
    assert con.execute(f"""
        SELECT count(*) FILTER (WHERE input IS NULL AND list_contains(_nulls, 'input')),
               count(*) FILTER (WHERE input IS NULL AND NOT list_contains(_nulls, 'input'))
        FROM read_parquet('{_glob(root, "project_logs")}')""").fetchone() == (
        1, sum(1 for r in source["project_logs"].values() if "input" not in r),
    )  # fmt: skip
    for object_type in TYPES:  # one glob per type needs no union
        count = con.execute(f"SELECT count(*) FROM read_parquet('{_glob(root, object_type)}')").fetchone()
        assert count == (len(source[object_type]),)


# -- polars --------------------------------------------------------------------------------------
def test_polars_types_values_and_union(export: dict[str, Any]) -> None:
    root, source = export["root"], export["source"]
    logs = pl.read_parquet(_glob(root, "project_logs"), hive_partitioning=True)
    assert logs.schema["created"] == pl.Datetime("us", "UTC")
    assert logs.schema["_xact_id"] == pl.Decimal(20, 0)
    assert logs.schema["metrics_int"] == pl.Map(pl.String, pl.Int64)
    assert str(logs.schema["input"]) == str(pl.read_parquet(_glob(root, "dataset")).schema["input"])
    assert "arrow.json" in str(logs.schema["input"])
    nulls = logs.filter(pl.col("id").str.ends_with("-input")).sort("id")
    assert nulls.select(pl.col("input").is_null(), pl.col("_nulls").list.contains("input")).rows() == [
        (True, False), (True, True),
    ]  # fmt: skip
    tokens = logs.filter(pl.col("id") == "null-input").select(pl.col("metrics_int").map.get("tokens"))
    assert tokens.item() == BIG
    ordered = logs.sort("_xact_id")["_xact_id"].to_list()
    assert ordered == sorted(Decimal(r["_xact_id"]) for r in source["project_logs"].values())
    union = pl.concat(
        [pl.read_parquet(_glob(root, t), hive_partitioning=True) for t in TYPES], how="diagonal"
    )
    assert dict(union.group_by("object_type").len().rows()) == {t: len(source[t]) for t in TYPES}


# -- Spark ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None and not _java_home():
        pytest.skip("no Java runtime found (java on PATH or JAVA_HOME): Spark cannot start")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("btpipe-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _java_home() -> bool:
    import os

    home = os.environ.get("JAVA_HOME")
    return bool(home) and Path(home, "bin", "java").exists()


@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
def test_spark_types_values_and_union(export: dict[str, Any], spark: Any) -> None:
    from functools import reduce

    from pyspark.sql import functions as F

    root, source = export["root"], export["source"]
    logs = spark.read.parquet(str(root / "object_type=project_logs"))
    types = dict(logs.dtypes)
    assert types["input"] == "string"  # Spark reads Parquet's JSON type as text
    assert types["created"] == "timestamp"
    assert types["metrics"] == "map<string,double>"
    assert types["metrics_int"] == "map<string,bigint>"
    assert types["_xact_id"] == "decimal(20,0)"
    nulls = logs.where(F.col("id").endswith("-input")).orderBy("id")
    assert [tuple(r) for r in nulls.select(F.col("input").isNull(), F.array_contains("_nulls", "input")).collect()] == [
        (True, False), (True, True),
    ]  # fmt: skip
    assert logs.where("id = 'null-input'").select(F.col("metrics_int")["tokens"]).first()[0] == BIG
    ordered = [r[0] for r in logs.orderBy("_xact_id").select("_xact_id").collect()]
    assert ordered == sorted(Decimal(r["_xact_id"]) for r in source["project_logs"].values())
    created = {r["id"]: r["created"] for r in logs.select("id", "created").collect()}
    assert created == {
        i: datetime.fromisoformat(r["created"]).replace(tzinfo=None)
        for i, r in source["project_logs"].items()
    }
    questions = logs.where(F.get_json_object("input", "$.question").isNotNull()).count()
    assert questions == sum(
        1
        for r in source["project_logs"].values()
        if isinstance(r.get("input"), dict) and "question" in r["input"]
    )
    frames = [spark.read.option("basePath", str(root)).parquet(str(root / f"object_type={t}")) for t in TYPES]
    union = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    assert {r[0]: r[1] for r in union.groupBy("object_type").count().collect()} == {
        t: len(source[t]) for t in TYPES
    }
