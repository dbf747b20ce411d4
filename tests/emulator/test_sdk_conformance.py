"""The official Python SDK doing its normal work against the emulator, checked by reading back
what the emulator stored: nested spans, a row over the request limit (the overflow path),
dataset pages and pinned versions, experiment and dataset summaries, and ``Eval``.

Every test starts the SDK afresh (its global state caches the login and the server's
request limit), fenced to loopback, with synchronous flushes so a failed write raises
instead of being dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import braintrust
import pytest
import requests
from braintrust import logger as sdk_logger

from pipeline.emulator.server import RunningServer, ServerConfig
from tests.conftest import Emulator, unique_name
from tests.emulator.test_sdk import point_sdk_at

#: The dedicated emulator's request limit: small, so a modest row takes the overflow path.
SMALL_LIMIT = 64 * 1024


def _fresh_sdk(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    point_sdk_at(monkeypatch, emulator.url, emulator.key)
    monkeypatch.setenv("BRAINTRUST_SYNC_FLUSH", "1")
    monkeypatch.setenv("BRAINTRUST_DISABLE_ATEXIT_FLUSH", "1")
    sdk_logger._internal_reset_global_state()


@pytest.fixture
def sdk(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    _fresh_sdk(monkeypatch, emulator)
    yield emulator
    sdk_logger._internal_reset_global_state()


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("overflow") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db), max_request_bytes=SMALL_LIMIT)) as server:
        yield server


def read_rows(emulator: Emulator, object_type: str, object_id: str) -> list[dict[str, Any]]:
    """Every row of an object, paged through ``/btql`` as the SDK's own fetcher does."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {
            "select": [{"op": "star"}],
            "from": {"op": "function", "name": {"op": "ident", "name": [object_type]},
                     "args": [{"op": "literal", "value": object_id}]},
            "limit": 500, "cursor": cursor,
        }  # fmt: skip
        resp = requests.post(f"{emulator.url}/btql", json={"query": query}, headers={"Authorization": f"Bearer {emulator.key}"}, timeout=30)  # fmt: skip
        assert resp.ok, resp.text
        body = resp.json()
        rows.extend(body["data"])
        cursor = body.get("cursor")
        if not cursor or not body["data"]:
            return rows


def test_user_info_pings_the_api(sdk: Emulator) -> None:
    """``braintrust.user_info()`` asks ``GET /ping`` of the API; a 404 there raised."""
    braintrust.login()
    info = braintrust.user_info()
    me = requests.post(
        f"{sdk.url}/api/self/me", headers={"Authorization": f"Bearer {sdk.key}"}, timeout=30
    ).json()
    assert info == me and info["id"] and info["email"]


def test_nested_spans_keep_their_tree(sdk: Emulator) -> None:
    logger = braintrust.init_logger(project=unique_name("py-spans"))
    with logger.start_span(name="root", input={"q": "why"}) as root:
        with root.start_span(name="child", input="sub") as child:
            with child.start_span(name="grandchild", type="llm") as grand:
                grand.log(output="leaf", scores={"leafy": 0.25}, metrics={"tokens": 7})
            child.log(output="sub answer")
        root.log(output="answer", metadata={"k": [1, 2]})
    logger.flush()

    spans = {r["span_attributes"]["name"]: r for r in read_rows(sdk, "project_logs", logger.project.id)}
    assert set(spans) == {"root", "child", "grandchild"}
    assert {name: row["id"] for name, row in spans.items()} == {
        "root": root.id, "child": child.id, "grandchild": grand.id,
    }  # fmt: skip
    assert spans["root"]["span_id"] == root.span_id
    assert (spans["root"]["span_parents"], spans["root"]["is_root"]) == (None, True)
    assert (spans["child"]["span_parents"], spans["child"]["is_root"]) == ([root.span_id], False)
    assert spans["grandchild"]["span_parents"] == [child.span_id]
    assert {row["root_span_id"] for row in spans.values()} == {root.root_span_id}
    assert (spans["root"]["input"], spans["root"]["output"], spans["root"]["metadata"]) == ({"q": "why"}, "answer", {"k": [1, 2]})  # fmt: skip
    assert (spans["grandchild"]["output"], spans["grandchild"]["scores"]) == ("leaf", {"leafy": 0.25})
    assert spans["grandchild"]["metrics"]["tokens"] == 7
    assert spans["grandchild"]["span_attributes"]["type"] == "llm"


def test_log_lines_and_feedback_with_a_comment_are_stored(sdk: Emulator) -> None:
    """``logger.info()`` writes a span of type ``log`` (the SDK's ``SpanType``, newer than the
    spec's); ``log_feedback`` merges the scores and sends the comment as a row of its own,
    which lands in the commented row's ``comments``. Either refused would lose the batch."""
    logger = braintrust.init_logger(project=unique_name("py-feedback"))
    with logger.start_span(name="answer", input="q") as span:
        span.log(output="a", scores={"good": 0.25})
    line = logger.info("disk almost full", metadata={"host": "h1"})
    logger.log_feedback(id=span.id, scores={"good": 1, "kind": 0.5}, comment="nice", source="app")
    logger.flush()

    rows = {r["id"]: r for r in read_rows(sdk, "project_logs", logger.project.id)}
    assert set(rows) == {span.id, line}
    assert rows[line]["span_attributes"]["type"] == "log"
    assert (rows[line]["output"], rows[line]["metadata"]) == ("disk almost full", {"host": "h1"})
    answer = rows[span.id]
    assert (answer["output"], answer["scores"]) == ("a", {"good": 1, "kind": 0.5})
    (comment,) = answer["comments"]
    assert (comment["origin"], comment["comment"], comment["source"]) == (
        {"id": span.id},
        {"text": "nice"},
        "app",
    )


def test_dataset_fetch_after_changes_reads_each_record_once(sdk: Emulator) -> None:
    """The SDK's ``dataset.fetch()`` joins legacy fetch pages as they come: after an update,
    one page must hold the record once, in its new version (the spec lets only a later page
    repeat an older one)."""
    project, name = unique_name("py-ds-once"), "changed"
    dataset = braintrust.init_dataset(project=project, name=name)
    ids = [dataset.insert(input={"n": n}, expected=n) for n in range(4)]
    dataset.flush()
    dataset.update(id=ids[0], expected=100)
    dataset.insert(id=ids[1], input={"n": 11}, expected=11)
    dataset.delete(ids[2])
    dataset.flush()

    fetched = list(braintrust.init_dataset(project=project, name=name).fetch())
    by_id = sorted(((r["id"], r["input"], r["expected"]) for r in fetched), key=lambda r: r[0])
    assert by_id == sorted(
        [(ids[0], {"n": 0}, 100), (ids[1], {"n": 11}, 11), (ids[3], {"n": 3}, 3)], key=lambda r: r[0]
    )


def test_feedback_after_a_flush_adds_tags_keeps_the_span_and_audits_its_metadata(sdk: Emulator) -> None:
    """The SDK merges a batch itself (tags joined as sets, the span's ids and ``created`` kept,
    ``MERGE_ROW_SKIP_FIELDS``); after a flush the server merges, and must do the same. The
    feedback's metadata and source are audit data of the row, not lost."""
    logger = braintrust.init_logger(project=unique_name("py-merge"))
    with logger.start_span(name="root", input="q", tags=["a", "x"]) as span:
        span.log(output="answer")
    logger.flush()
    before = {r["id"]: r for r in read_rows(sdk, "project_logs", logger.project.id)}[span.id]
    logger.log_feedback(id=span.id, tags=["b", "a"], scores={"ok": 1}, metadata={"by": "u-42"}, source="app")
    logger.flush()

    (row,) = read_rows(sdk, "project_logs", logger.project.id)
    assert row["tags"] == ["a", "x", "b"]
    assert (row["output"], row["scores"]) == ("answer", {"ok": 1})
    kept = ("span_id", "root_span_id", "span_parents", "is_root", "created")
    assert {k: row.get(k) for k in kept} == {k: before.get(k) for k in kept}
    (audit,) = row["audit_data"]
    assert (audit["source"], audit["metadata"], audit["update"]) == (
        "app",
        {"by": "u-42"},
        {"tags": ["b", "a"], "scores": {"ok": 1}},
    )


def test_dataset_records_without_expected_are_fetched(sdk: Emulator) -> None:
    """``dataset.fetch()`` reads every record's ``expected`` (or the legacy ``output``): a record
    never given one, or rebuilt by a merge after a delete, reads back with null."""
    project, name = unique_name("py-ds-noexp"), "partial"
    dataset = braintrust.init_dataset(project=project, name=name)
    first = dataset.insert(input="question only")
    second = dataset.insert(input="gone", expected="e")
    dataset.flush()
    dataset.delete(second)
    dataset.flush()
    dataset.update(id=second, metadata={"m": 1})
    dataset.flush()

    fetched = {r["id"]: r for r in braintrust.init_dataset(project=project, name=name).fetch()}
    assert {i: (r.get("input"), r["expected"], r.get("metadata")) for i, r in fetched.items()} == {
        first: ("question only", None, None),
        second: (None, None, {"m": 1}),
    }


def test_an_external_attachment_reads_from_its_url(sdk: Emulator) -> None:
    """The SDK asks ``GET /attachment?url=`` for an ``external_attachment`` (no key) and reads
    the bytes from the ``downloadUrl`` it gets back."""
    project = unique_name("py-ext")
    dataset = braintrust.init_dataset(project=project, name="d")
    link = braintrust.ExternalAttachment(url=f"{sdk.url}/version", filename="v.json", content_type="application/json")  # fmt: skip
    dataset.insert(input={"doc": link}, expected="x")
    dataset.flush()

    (row,) = list(braintrust.init_dataset(project=project, name="d").fetch())
    doc = row["input"]["doc"]
    assert doc.status() == {"upload_status": "done"}
    assert doc.data == requests.get(f"{sdk.url}/version", timeout=30).content


def test_a_row_over_the_request_limit_goes_through_overflow(small_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    emulator = Emulator(url=small_server.url, max_request_bytes=SMALL_LIMIT)
    _fresh_sdk(monkeypatch, emulator)
    logger = braintrust.init_logger(project=unique_name("py-overflow"))
    big = {"text": "é\u2028" * (SMALL_LIMIT // 2), "n": list(range(100))}  # ~3 bytes a pair over the cap
    with logger.start_span(name="big", input=big) as big_span:
        big_span.log(output="ok", metadata={"size": "large"})
    with logger.start_span(name="small", input="tiny") as small_span:
        pass
    logger.flush()

    rows = {r["id"]: r for r in read_rows(emulator, "project_logs", logger.project.id)}
    assert set(rows) == {big_span.id, small_span.id}
    assert (rows[big_span.id]["input"], rows[big_span.id]["output"]) == (big, "ok")
    assert rows[big_span.id]["metadata"] == {"size": "large"}
    assert rows[small_span.id]["input"] == "tiny"
    applied = "SELECT row_ids FROM overflow_uploads WHERE row_ids LIKE ?"
    uploads = small_server.store.read_sync(lambda c: c.execute(applied, (f'%"{big_span.id}"%',)).fetchall())
    assert [u[0] for u in uploads] == [f'["{big_span.id}"]']
    sdk_logger._internal_reset_global_state()


def test_dataset_pages_versions_and_summary(sdk: Emulator) -> None:
    project, name = unique_name("py-ds"), "paged"
    dataset = braintrust.init_dataset(project=project, name=name)
    records = {dataset.insert(input={"n": n}, expected=n % 7, metadata={"k": n}): n for n in range(1050)}
    dataset.flush()
    first_version = dataset.version

    def check(rows: list[dict[str, Any]], expected: dict[str, int]) -> None:
        assert sorted(row["id"] for row in rows) == sorted(expected)
        for row in rows:
            n = expected[row["id"]]
            assert (row["input"], row["expected"], row["metadata"]) == ({"n": n}, n % 7, {"k": n})

    check(list(braintrust.init_dataset(project=project, name=name)), records)  # pages of 1000
    check(list(braintrust.init_dataset(project=project, name=name).fetch(batch_size=150)), records)

    ids = list(records)
    dataset.delete(ids[0])
    dataset.insert(id=ids[1], input={"n": 10_000}, expected=10_000 % 7, metadata={"k": 10_000})
    added = dataset.insert(input={"n": 20_000}, expected=20_000 % 7, metadata={"k": 20_000})
    dataset.flush()

    latest = {i: n for i, n in records.items() if i != ids[0]} | {ids[1]: 10_000, added: 20_000}
    check(read_rows(sdk, "dataset", dataset.id), latest)
    # The SDK reads through the legacy fetch, which walks the version history: pinned before
    # the changes, it sees exactly the first state.
    pinned = braintrust.init_dataset(project=project, name=name, version=first_version)
    check(list(pinned.fetch(batch_size=400)), records)

    summary = braintrust.init_dataset(project=project, name=name).summarize()
    assert (summary.project_name, summary.dataset_name) == (project, name)
    assert summary.data_summary is not None and summary.data_summary.total_records == len(latest)


def _run_cases(experiment: Any, cases: list[tuple[str, float, float, int]]) -> None:
    """One trace per case: input, score ``acc``, duration in seconds, tokens."""
    for text, acc, duration, tokens in cases:
        span = experiment.start_span(name="case", start_time=1000.0, input={"case": text})
        span.log(output=text.upper(), scores={"acc": acc}, metrics={"tokens": tokens})
        span.end(end_time=1000.0 + duration)


def test_experiment_summary_against_its_base(sdk: Emulator) -> None:
    project = unique_name("py-exp")
    base = braintrust.init_experiment(project=project, experiment="base")
    _run_cases(base, [("a", 0.5, 2.0, 10), ("b", 1.0, 2.0, 10), ("c", 0.0, 2.0, 10)])
    base.flush()
    current = braintrust.init_experiment(project=project, experiment="current")
    _run_cases(current, [("a", 1.0, 1.0, 10), ("b", 0.5, 3.0, 20), ("c", 0.0, 2.0, 10), ("d", 1.0, 2.0, 10)])

    summary = current.summarize()
    assert (summary.experiment_name, summary.comparison_experiment_name) == ("current", "base")
    comparison = summary.comparison
    assert isinstance(comparison, sdk_logger.SummarySuccess)
    acc = comparison.scores["acc"]
    assert (acc.score, acc.diff, acc.improvements, acc.regressions) == (0.625, 0.125, 1, 1)
    assert set(comparison.metrics) == {"duration", "tokens"}
    duration, tokens = comparison.metrics["duration"], comparison.metrics["tokens"]
    assert (duration.metric, duration.unit, duration.diff, duration.improvements, duration.regressions) == (2.0, "s", 0.0, 1, 1)  # fmt: skip
    assert (tokens.metric, tokens.unit, tokens.diff, tokens.improvements, tokens.regressions) == (12.5, "tok", 0.25, 0, 1)  # fmt: skip

    alone = base.summarize()  # nothing older in the project: no comparison
    assert alone.comparison_experiment_name is None
    assert isinstance(alone.comparison, sdk_logger.SummarySuccess)
    assert alone.comparison.scores["acc"].score == 0.5
    assert (alone.comparison.scores["acc"].diff, alone.comparison.scores["acc"].improvements) == (None, 0)


def exact_match(input: int, output: int, expected: int) -> float:
    return 1.0 if output == expected else 0.0


def test_eval_runs_a_scorer_end_to_end(sdk: Emulator) -> None:
    project = unique_name("py-eval")
    result = braintrust.Eval(
        project,
        data=lambda: [braintrust.EvalCase(input=n, expected=n * 2) for n in range(5)],
        task=lambda input: 0 if input == 3 else input * 2,
        scores=[exact_match],
        experiment_name="doubling",
    )
    summary = result.summary
    assert summary.experiment_name == "doubling"
    assert isinstance(summary.comparison, sdk_logger.SummarySuccess)
    assert summary.comparison.scores["exact_match"].score == 0.8

    assert summary.experiment_id is not None
    rows = read_rows(sdk, "experiment", summary.experiment_id)
    roots = {r["root_span_id"]: r for r in rows if r["is_root"]}
    assert sorted((r["input"], r["output"], r["expected"]) for r in roots.values()) == [
        (n, 0 if n == 3 else n * 2, n * 2) for n in range(5)
    ]
    scored = {
        roots[r["root_span_id"]]["input"]: r["scores"]
        for r in rows
        if r["span_attributes"]["type"] == "score"
    }
    assert scored == {n: {"exact_match": 0.0 if n == 3 else 1.0} for n in range(5)}
    for row in rows:
        assert row["is_root"] or row["span_parents"] == [roots[row["root_span_id"]]["span_id"]]


def sentiment(input: int, output: int, expected: int) -> braintrust.score.Classification:
    return braintrust.score.Classification(id="even" if output % 2 == 0 else "odd", label="parity")


def test_eval_classifications_are_stored_on_the_root_spans(sdk: Emulator) -> None:
    """The SDK logs a classifier's results as ``classifications`` on each root span through
    ``/logs3`` (a field the spec's rows carry, its insert events do not list): they read back."""
    result = braintrust.Eval(
        unique_name("py-classify"),
        data=lambda: [braintrust.EvalCase(input=n, expected=n) for n in range(3)],
        task=lambda input: input,
        classifiers=[sentiment],
        experiment_name="parity",
    )
    assert result.summary.experiment_id is not None
    rows = read_rows(sdk, "experiment", result.summary.experiment_id)
    roots = {r["input"]: r["classifications"] for r in rows if r["is_root"]}
    assert {n: [(c["id"], c.get("label")) for c in found["sentiment"]] for n, found in roots.items()} == {
        0: [("even", "parity")], 1: [("odd", "parity")], 2: [("even", "parity")]
    }  # fmt: skip


def test_a_scorer_fetches_spans_by_list_valued_metadata(sdk: Emulator) -> None:
    """A scorer's ``trace.get_spans`` pushes each metadata filter down as ``eq`` with the
    value as a literal, lists included; the server compares it as JSON."""
    import asyncio

    from braintrust.trace import LocalTrace

    logger = braintrust.init_logger(project=unique_name("py-trace"))
    with logger.start_span(name="root") as root:
        with root.start_span(name="retrieve", type="tool") as found:
            found.log(metadata={"doc_ids": [1, 2], "opts": {"k": 3, "deep": {"on": True}}, "tags": []})
        with root.start_span(name="other", type="tool") as other:
            other.log(metadata={"doc_ids": [2, 1], "opts": {"k": 3, "deep": {"on": 1}}, "tags": ["x"]})
    logger.flush()
    state = sdk_logger._state
    state.span_cache.disable()  # so the spans come from the server, as for a remote scorer
    state.login()
    trace = LocalTrace("project_logs", logger.project.id, root.root_span_id, None, state)

    def ids(metadata: dict[str, Any]) -> set[str]:
        return {s.span_id for s in asyncio.run(trace.get_spans(filters={"metadata": metadata}))}

    assert ids({"doc_ids": [1, 2]}) == {found.span_id}
    assert ids({"doc_ids": [2, 1]}) == {other.span_id}
    assert ids({"tags": []}) == {found.span_id}
    assert ids({"opts": {"k": 3, "deep": {"on": True}}}) == {found.span_id}
    assert ids({"doc_ids": [1]}) == set()
