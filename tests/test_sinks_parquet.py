"""The Arrow schema, its encoders and decoder, and ParquetSink: exact round trips, typed columns,
row groups, parts, aborts."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.common.arrow_schema import EXTRA_COLUMN, JSON_TYPE, NULLS_COLUMN, schema_for
from pipeline.common.errors import BtpipeError, UsageError
from pipeline.common.jsoncodec import dumps, parse_page
from pipeline.common.rows import OBJECT_TYPES
from pipeline.common.storage import open_storage
from pipeline.sinks.encode import fast_page_table, page_to_table, rows_to_table
from pipeline.sinks.parquet import ParquetSink
from pipeline.sources import iter_rows
from pipeline.sources.decode import table_to_rows

# -- row generation (shared with the JSONL tests) ------------------------------------------------
_edge_ints = st.sampled_from([2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 2**70])
_ints = st.integers(min_value=-(2**70), max_value=2**70) | _edge_ints
_floats = st.floats(allow_nan=False, allow_infinity=False)
_scalars = st.none() | st.booleans() | _ints | _floats | st.text()
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _created_texts() -> st.SearchStrategy[Any]:
    moments = st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    )
    return st.one_of(
        moments.map(lambda d: d.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
        moments.map(lambda d: d.isoformat().replace("+00:00", "Z")),
        moments.map(lambda d: d.isoformat()),
        st.text(max_size=10),
        st.none(),
        _ints,
    )


_numbers = st.none() | _ints | _floats | st.sampled_from([0, 1, 0.0, 1.0, -0.0, 0.25])
_number_maps = st.dictionaries(st.text(max_size=8), _numbers, max_size=4) | st.dictionaries(
    st.text(max_size=4), json_values, max_size=2
)
_string_lists = st.lists(st.text(max_size=8), max_size=3) | json_values

_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": st.text(max_size=12) | json_values,
    "_xact_id": st.integers(min_value=0, max_value=2**64 - 1).map(str) | json_values,
    "_pagination_key": st.text(max_size=12),
    "created": _created_texts(),
    "org_id": st.text(max_size=8),
    "project_id": st.uuids().map(str),
    "log_id": st.just("g"),
    "dataset_id": st.uuids().map(str),
    "experiment_id": st.uuids().map(str),
    "span_id": st.text(max_size=8),
    "root_span_id": st.text(max_size=8),
    "span_parents": _string_lists,
    "is_root": st.booleans() | json_values,
    "tags": _string_lists,
    "scores": _number_maps,
    "metrics": _number_maps,
    **dict.fromkeys(
        ("input", "output", "expected", "error", "metadata", "context", "span_attributes", "origin"),
        json_values,
    ),
    "dataset_record_id": st.text(max_size=8) | json_values,
    "comments": json_values,
}

rows_strategy = st.builds(
    lambda known, odd: {**odd, **known},
    st.fixed_dictionaries({}, optional=_FIELDS),
    st.dictionaries(st.text(max_size=10), json_values, max_size=3),
)


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    """A spelling that tells 1 from 1.0 and True from 1, which ``==`` does not."""
    return [json.dumps(row, sort_keys=True) for row in rows]


def page_of(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(dumps(row) + b"\n" for row in rows)


def read_all(storage: Any, paths: list[str]) -> list[dict[str, Any]]:
    return [source.row for path in paths for batch in iter_rows(storage, path) for source in batch]


# -- round trips ---------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(rows=st.lists(rows_strategy, max_size=6), object_type=st.sampled_from(OBJECT_TYPES))
def test_table_round_trip_is_exact(rows: list[dict[str, Any]], object_type: Any) -> None:
    table = rows_to_table(rows, object_type)
    assert table.schema == schema_for(object_type)
    decoded = table_to_rows(table, object_type)
    assert decoded == rows
    assert canonical(decoded) == canonical(rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages=st.lists(st.lists(rows_strategy, max_size=5), max_size=4))
def test_sink_to_source_round_trip(tmp_path: Any, pages: list[list[dict[str, Any]]]) -> None:
    storage = open_storage(str(tmp_path / uuid.uuid4().hex))
    published = []
    with ParquetSink(storage, "logs", "project_logs", row_group_rows=3) as sink:
        for i, page in enumerate(pages):
            sink.write_page(page_of(page))
            if i % 2:  # the caller ends a part every second page
                published += sink.flush()
        published += sink.close()
    expected = [row for page in pages for row in page]
    assert [f.path for f in published] == storage.list_files()
    assert sum(f.rows for f in published) == len(expected)
    decoded = read_all(storage, [f.path for f in published])
    assert canonical(decoded) == canonical(expected)


# -- pages: the fast path ------------------------------------------------------------------------
_canonical_created = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(
    lambda d: d.isoformat(timespec="microseconds" if d.microsecond % 1000 else "milliseconds").replace(
        "+00:00", "Z"
    )
)
_ids = st.text(max_size=12)
_string_list_or_null = st.none() | st.lists(st.text(max_size=8), max_size=3)
_plain_numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
_number_map_or_null = st.none() | st.dictionaries(st.text(max_size=8), st.none() | _plain_numbers, max_size=4)

#: Rows as the server writes them: known fields, typed fields of their usual types (maps may
#: hold integral floats and any 64-bit int), JSON nulls anywhere a field may be null.
typical_rows = st.fixed_dictionaries(
    {"id": _ids},
    optional={
        "_xact_id": st.integers(min_value=0, max_value=2**64 - 1).map(str),
        "created": _canonical_created,
        "project_id": st.uuids().map(str),
        "log_id": st.just("g"),
        "org_id": _ids,
        "_pagination_key": _ids,
        "span_id": _ids,
        "root_span_id": _ids,
        "span_parents": _string_list_or_null,
        "is_root": st.booleans(),
        "tags": _string_list_or_null,
        "scores": _number_map_or_null,
        "metrics": _number_map_or_null,
        **dict.fromkeys(
            ("input", "output", "expected", "error", "metadata", "context", "span_attributes", "origin"),
            json_values,
        ),
    },
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(typical_rows, min_size=1, max_size=8), compact=st.booleans())
def test_typical_pages_take_the_fast_path_and_round_trip_exactly(
    rows: list[dict[str, Any]], compact: bool
) -> None:
    if compact:
        page = page_of(rows)
    else:  # spaced JSON, as another server might write it: values still come back exactly
        page = b"".join(
            json.dumps(row, indent=None, separators=(", ", " : ")).encode() + b"\r\n" for row in rows
        )
    table = fast_page_table(page, "project_logs")
    assert table is not None
    assert table.schema == schema_for("project_logs")
    assert table.column(EXTRA_COLUMN).null_count == len(rows)  # every value has a typed home
    assert canonical(table_to_rows(table)) == canonical(rows)
    assert canonical(table_to_rows(table)) == canonical(parse_page(page))


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(rows_strategy, min_size=1, max_size=6), object_type=st.sampled_from(OBJECT_TYPES))
def test_any_page_round_trips_exactly_whichever_path_it_takes(
    rows: list[dict[str, Any]], object_type: Any
) -> None:
    assert canonical(table_to_rows(page_to_table(page_of(rows), object_type))) == canonical(rows)


def test_free_form_fields_keep_the_server_text_and_typed_fields_their_types() -> None:
    page = (
        b'{"id":"a","created":"2024-05-01T12:30:00.123Z","input":{"n": 123456789012345678901234567890},'
        b'"metrics":{"start":1.5,"tokens":7},"span_parents":null,"is_root":true}\n'
    )
    table = fast_page_table(page, "project_logs")
    assert table is not None
    assert table.schema.field("input").type == JSON_TYPE
    assert table.column("input").to_pylist() == ['{"n": 123456789012345678901234567890}']
    assert table.column("metrics").to_pylist() == [[("start", 1.5), ("tokens", 7.0)]]
    assert table.column("metrics_int").to_pylist() == [[("tokens", 7)]]
    assert table.column("created").to_pylist() == [datetime(2024, 5, 1, 12, 30, 0, 123000, tzinfo=UTC)]
    # A JSON null is a null in its column, named in _nulls: _extra is not needed for it.
    assert table.column("span_parents").to_pylist() == [None]
    assert table.column(NULLS_COLUMN).to_pylist() == [["span_parents"]]
    assert table.column(EXTRA_COLUMN).to_pylist() == [None]
    assert table_to_rows(table) == parse_page(page)


def test_json_nulls_are_sql_nulls_named_in_nulls_on_both_paths() -> None:
    page = b'{"id":"a","input":null,"output":1}\n{"id":"b","output":null,"tags":null}\n{"id":"c"}\n'
    general = rows_to_table(parse_page(page), "project_logs")
    fast = fast_page_table(page, "project_logs")
    assert fast is not None
    for table in (fast, general):
        assert table.column("input").to_pylist() == [None, None, None]
        assert table.column("output").to_pylist() == ["1", None, None]
        assert table.column(NULLS_COLUMN).to_pylist() == [["input"], ["output", "tags"], []]
        assert table.column(NULLS_COLUMN).null_count == 0
        assert table.column(EXTRA_COLUMN).to_pylist() == [None, None, None]
        assert table_to_rows(table) == parse_page(page)


def test_number_maps_keep_integers_exact_beside_the_doubles() -> None:
    lines = [
        b'{"id":"a","metrics":{"start":1.5,"tokens":7}}',  # exact: a fraction and a small int
        b'{"id":"b","metrics":{"start":2.0}}',  # an integral float stays a float
        b'{"id":"c","metrics":{"tokens":9007199254740992}}',  # 2**53: an int
        b'{"id":"d","metrics":{"start":null,"end":-0.5}}',  # a null inside a map is kept
        b'{"id":"e","metrics":{}}',
        b'{"id":"f"}',
        b'{"id":"g","metrics":null}',  # an explicit null, unlike an absent map
    ]
    page = b"\n".join(lines) + b"\n"
    table = fast_page_table(page, "project_logs")
    assert table is not None
    extras = [None if e is None else json.loads(e) for e in table.column(EXTRA_COLUMN).to_pylist()]
    assert extras == [None] * 7
    assert table.column(NULLS_COLUMN).to_pylist() == [[]] * 6 + [["metrics"]]
    assert table.column("metrics").to_pylist()[:5] == [
        [("start", 1.5), ("tokens", 7.0)],
        [("start", 2.0)],
        [("tokens", 9007199254740992.0)],
        [("start", None), ("end", -0.5)],
        [],
    ]
    assert table.column("metrics").to_pylist()[5:] == [None, None]
    assert table.column("metrics_int").to_pylist() == [
        [("tokens", 7)],
        [],
        [("tokens", 9007199254740992)],
        [],
        [],
        None,
        None,
    ]
    assert canonical(table_to_rows(table)) == canonical(parse_page(page))
    beyond = b'{"id":"h","metrics":{"tokens":9007199254740993,"start":0.5}}\n'  # Arrow will not round it
    table = page_to_table(beyond, "project_logs")
    assert table.column("metrics").to_pylist() == [[("tokens", 9007199254740992.0), ("start", 0.5)]]
    assert table.column("metrics_int").to_pylist() == [[("tokens", 9007199254740993)]]
    assert table.column(EXTRA_COLUMN).to_pylist() == [None]
    assert table_to_rows(table) == parse_page(beyond)
    past_int64 = b'{"id":"i","metrics":{"tokens":18446744073709551616,"start":0.5,"n":3}}\n'
    table = page_to_table(past_int64, "project_logs")  # the typed views keep every entry they can
    assert table.column("metrics").to_pylist() == [[("tokens", 2.0**64), ("start", 0.5), ("n", 3.0)]]
    assert table.column("metrics_int").to_pylist() == [[("n", 3)]]
    assert table.column(NULLS_COLUMN).to_pylist() == [[]]
    assert json.loads(table.column(EXTRA_COLUMN)[0].as_py()) == {
        "metrics": {"tokens": 18446744073709551616, "start": 0.5, "n": 3}
    }
    assert table_to_rows(table) == parse_page(past_int64)
    past_doubles = b'{"id":"j","scores":{"s":-1' + b"0" * 400 + b"}}\n"
    table = page_to_table(past_doubles, "project_logs")
    assert table.column("scores").to_pylist() == [[("s", -math.inf)]]
    assert table_to_rows(table) == parse_page(past_doubles)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"id":"a","custom":1}', "a field the schema does not know"),
        (b'{"id":null}', "an explicit null in a scalar typed field"),
        (b'{"id":5}', "a typed field of another type"),
        (b'{"id":"a","tags":[1]}', "a list that is not of strings"),
        (b'{"id":"a","created":"yesterday"}', "a created text Arrow cannot parse"),
    ],
)
def test_pages_the_fast_path_cannot_hold_take_the_general_path(line: bytes, why: str) -> None:
    page = line + b"\n"
    assert fast_page_table(page, "project_logs") is None or why.startswith("a created"), why
    assert table_to_rows(page_to_table(page, "project_logs")) == parse_page(page)


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":"a","input":"\xff\xfe"}',  # invalid UTF-8 in a free-form field
        b'{"id":"\xff"}',  # ... in a typed one
        b'{"id":"a","tags":["\xff"]}',
        b'{"id":"a","scores":{"s":1e400}}',  # a typed number beyond the double range
    ],
)
def test_pages_no_path_can_hold_are_one_line_errors(line: bytes) -> None:
    page = line + b"\n"
    assert fast_page_table(page, "project_logs") is None
    with pytest.raises(BtpipeError, match="page is not valid JSONL"):
        page_to_table(page, "project_logs")


def test_deep_nesting_round_trips_in_a_worker_thread_too() -> None:
    """orjson reads about 1,000 levels; msgspec may give up earlier (RecursionError), and the
    page then takes the general path rather than failing."""
    from concurrent.futures import ThreadPoolExecutor

    page = b'{"id":"a","input":' + b"[" * 990 + b"]" * 990 + b"}\n"
    with ThreadPoolExecutor(1) as pool:
        table = pool.submit(page_to_table, page, "project_logs").result()
    assert table.column("input").to_pylist() == ["[" * 990 + "]" * 990]
    assert table.column("id").to_pylist() == ["a"]


def test_a_free_form_number_beyond_doubles_is_kept_as_text_and_named_when_read() -> None:
    """The server's text is kept; reading it back names the column and row it cannot decode."""
    table = page_to_table(b'{"id":"a"}\n{"id":"b","input":{"x":1e400}}\n', "project_logs")
    assert table.column("input").to_pylist() == [None, '{"x":1e400}']
    with pytest.raises(BtpipeError, match="column 'input', row 1: not JSON"):
        table_to_rows(table)


# -- the typed view ------------------------------------------------------------------------------
def test_typed_columns_hold_analysable_values() -> None:
    row = {
        "id": "r1",
        "_xact_id": "1000192656880881099",
        "created": "2024-05-01T12:30:00.123Z",
        "is_root": True,
        "tags": ["a", "b"],
        "scores": {"accuracy": 0.5, "missing": None, "count": 3},
        "metadata": {"n": 2**64 - 1},
    }
    table = rows_to_table([row], "experiment")
    assert table.column("_xact_id").to_pylist() == [Decimal("1000192656880881099")]
    assert table.column("created").to_pylist() == [datetime(2024, 5, 1, 12, 30, 0, 123000, tzinfo=UTC)]
    assert table.column("scores").to_pylist() == [[("accuracy", 0.5), ("missing", None), ("count", 3.0)]]
    assert table.column("scores_int").to_pylist() == [[("count", 3)]]
    assert table.column("metadata").to_pylist() == ['{"n":18446744073709551615}']
    assert table.column(EXTRA_COLUMN).to_pylist() == [None]
    assert table_to_rows(table) == [row]


def test_values_the_typed_column_cannot_reproduce_go_to_extra() -> None:
    row = {
        "created": "2024-05-01T12:30:00+00:00",
        "scores": {"exact": 1.0, "big": 2**60 + 1},
        "output": None,
        "custom": {"x": 1},
    }
    table = rows_to_table([row], "project_logs")
    assert table.column("created").to_pylist() == [datetime(2024, 5, 1, 12, 30, tzinfo=UTC)]
    assert table.column("scores").to_pylist() == [[("exact", 1.0), ("big", float(2**60 + 1))]]
    assert table.column("scores_int").to_pylist() == [[("big", 2**60 + 1)]]
    assert table.column("output").to_pylist() == [None]
    assert table.column(NULLS_COLUMN).to_pylist() == [["output"]]
    assert table.column("input").to_pylist() == [None]
    assert json.loads(table.column(EXTRA_COLUMN)[0].as_py()) == {
        "custom": {"x": 1},
        "created": "2024-05-01T12:30:00+00:00",
    }
    assert canonical(table_to_rows(table)) == canonical([row])


@pytest.mark.parametrize("fast", [True, False])
def test_xact_ids_are_decimals_and_other_spellings_stay_text(fast: bool) -> None:
    ids = ["0", "1000192656880881099", "18446744073709551616", "9" * 20, "007", "-1", "1e5", "9" * 21, " 1"]
    rows: list[dict[str, Any]] = [{"id": str(i), "_xact_id": x} for i, x in enumerate(ids)] + [{"id": "n"}]
    if not fast:  # a number where the server writes text: only the general path takes it
        rows.append({"id": "m", "_xact_id": 5})
    page = page_of(rows)
    table = fast_page_table(page, "dataset") if fast else rows_to_table(parse_page(page), "dataset")
    assert table is not None
    assert table.schema.field("_xact_id").type == pa.decimal128(20, 0)
    assert table.column("_xact_id").to_pylist() == [Decimal(x) for x in ids[:4]] + [None] * (len(rows) - 4)
    extras = [None if e is None else json.loads(e) for e in table.column(EXTRA_COLUMN).to_pylist()]
    assert extras == [None] * 4 + [{"_xact_id": x} for x in ids[4:]] + [None] + [{"_xact_id": 5}] * (not fast)
    assert table_to_rows(table) == rows


def test_schema_metadata_and_dataset_fields() -> None:
    schema = schema_for("dataset")
    assert schema.metadata == {b"btpipe.schema_version": b"2", b"btpipe.object_type": b"dataset"}
    assert "dataset_id" in schema.names
    assert "scores" not in schema.names  # datasets have none; a stray one lands in _extra
    assert schema.field("_xact_id").type == pa.decimal128(20, 0)
    assert schema.field("input").type == JSON_TYPE
    assert schema.names[-2:] == [NULLS_COLUMN, EXTRA_COLUMN]
    logs = schema_for("project_logs")
    assert logs.names[logs.get_field_index("metrics") + 1] == "metrics_int"


def test_row_fields_named_like_auxiliary_columns_stay_row_fields() -> None:
    row = {"id": "a", "metrics_int": {"x": 1}, "_nulls": ["id"], "_extra": "x", "scores": {"s": 1}}
    table = rows_to_table([row], "experiment")
    assert table.column("metrics_int").to_pylist() == [None]
    assert table.column("scores_int").to_pylist() == [[("s", 1)]]
    assert json.loads(table.column(EXTRA_COLUMN)[0].as_py()) == {
        "metrics_int": {"x": 1},
        "_nulls": ["id"],
        "_extra": "x",
    }
    assert table_to_rows(table) == [row]


def test_table_to_rows_refuses_another_object_type() -> None:
    with pytest.raises(UsageError, match="holds dataset rows, not experiment"):
        table_to_rows(rows_to_table([{"id": "a"}], "dataset"), "experiment")


# -- files ---------------------------------------------------------------------------------------
def _row_groups(path: Any) -> list[int]:
    meta = pq.ParquetFile(str(path)).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def test_parts_end_only_where_the_caller_flushes(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    rows = [{"id": f"r{i}", "input": i} for i in range(25)]
    with ParquetSink(storage, "d", "dataset", prefix="rows", first_part=4, row_group_rows=4) as sink:
        sink.write_page(page_of(rows[:6]))
        sink.write_page(page_of(rows[6:10]))
        assert storage.list_files() == []  # full row groups are written, but no part ends on its own
        published = sink.flush()
        sink.write_page(page_of(rows[10:]))
        published += sink.close()
    assert [(f.path, f.rows) for f in published] == [
        ("d/rows-00004.parquet", 10),
        ("d/rows-00005.parquet", 15),
    ]
    assert _row_groups(tmp_path / "d" / "rows-00004.parquet") == [4, 4, 2]  # the flush wrote the rest
    assert _row_groups(tmp_path / "d" / "rows-00005.parquet") == [4, 4, 4, 3]
    assert read_all(storage, [f.path for f in published]) == rows


def test_row_groups_end_at_the_byte_limit(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    rows = [{"id": f"r{i}", "input": "x" * 2000 + str(i)} for i in range(6)]
    with ParquetSink(storage, "d", "dataset", row_group_bytes=1, compression=None) as sink:
        sink.write_page(page_of(rows[:2]))
        sink.write_page(page_of(rows[2:]))
        (info,) = sink.close()
    assert _row_groups(tmp_path / info.path) == [2, 4]
    assert read_all(storage, [info.path]) == rows


def test_file_info_matches_published_bytes(tmp_path: Any) -> None:
    import hashlib

    storage = open_storage(str(tmp_path))
    with ParquetSink(storage, "", "project_logs") as sink:
        sink.write_page(b'{"id":"a"}\n')
        (info,) = sink.flush()
        assert sink.flush() == []
    data = storage.read_bytes(info.path)
    assert (info.path, info.rows, info.bytes, info.sha256) == (
        "part-00000.parquet",
        1,
        len(data),
        hashlib.sha256(data).hexdigest(),
    )


def test_abort_publishes_nothing_and_leaves_no_temp(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    with pytest.raises(RuntimeError), ParquetSink(storage, "d", "dataset", row_group_rows=1) as sink:
        sink.write_page(b'{"id":"a"}\n{"id":"b"}\n')
        assert storage.list_files() == []  # row groups written, nothing published
        raise RuntimeError("stop")
    assert storage.list_files() == []
    assert list((tmp_path / "d").iterdir()) == []
    assert sink.close() == []


def test_empty_pages_publish_nothing(tmp_path: Any) -> None:
    storage = open_storage(str(tmp_path))
    with ParquetSink(storage, "d", "dataset") as sink:
        sink.write_page(b"")
        sink.write_page(b"\n")
        assert sink.close() == []
        assert sink.close() == []
    assert storage.list_files() == []


def test_malformed_page_is_one_line_error(tmp_path: Any) -> None:
    with ParquetSink(open_storage(str(tmp_path)), "d", "dataset") as sink, pytest.raises(BtpipeError) as info:
        sink.write_page(b'{"id":"a"}\n[1]\n')
    assert str(info.value) == "page is not valid JSONL (a line is not a JSON object)"


@pytest.mark.parametrize("limit", ["row_group_rows", "row_group_bytes"])
def test_row_group_limits_must_be_positive(tmp_path: Any, limit: str) -> None:
    with pytest.raises(UsageError, match="row group limits must be positive"):
        ParquetSink(open_storage(str(tmp_path)), "d", "dataset", **{limit: 0})
