"""`btpipe query`: text queries as the server parses them, --all paging, --table, walkthrough examples."""

from __future__ import annotations

from typing import Any

import orjson

from tests.helpers import btpipe, insert, post, unique


def lines(output: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in output.splitlines() if line.strip()]


def test_all_follows_cursors_to_every_row(emulator: Any) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("query-all")})
    insert(
        emulator.url,
        emulator.key,
        "project_logs",
        project["id"],
        [{"id": f"q{i:04d}", "input": i} for i in range(2500)],
    )
    text = f"select: id | from: project_logs('{project['id']}')"
    first = btpipe(emulator, "query", text)
    assert first.exit_code == 0, first.output
    assert len(lines(first.stdout)) == 1000  # one page without --all
    every = btpipe(emulator, "query", text, "--all")
    assert every.exit_code == 0, every.output
    assert sorted(r["id"] for r in lines(every.stdout)) == [f"q{i:04d}" for i in range(2500)]
    sorted_text = f"select: id | from: project_logs('{project['id']}') | sort: id desc | limit: 3"
    one_page = btpipe(emulator, "query", sorted_text, "--all")  # a sorted query is one page
    assert one_page.exit_code == 0 and len(lines(one_page.stdout)) == 3
    assert one_page.stderr.strip() == (
        "btpipe: warning: --all: a query with sort or aggregates is answered in one page, "
        "its limit capping the rows"
    )


def test_walkthrough_review_status_and_span_durations(emulator: Any) -> None:
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("query-walk")})
    experiment = post(
        emulator.url, emulator.key, "/v1/experiment", {"project_id": project["id"], "name": "e"}
    )
    insert(emulator.url, emulator.key, "experiment", experiment["id"], [
        {"id": "r1", "span_id": "r1", "root_span_id": "r1", "scores": {"response quality": 1}},
        {"id": "r2", "span_id": "r2", "root_span_id": "r2", "scores": {"response quality": None}},
        {"id": "r3", "span_id": "r3", "root_span_id": "r3", "scores": {}},
        {"id": "c1", "span_id": "c1", "root_span_id": "r1", "span_parents": ["r1"], "scores": {"response quality": 0.5}},
    ])  # fmt: skip
    review = btpipe(emulator, "query", f"""
      SELECT
        sum(CASE WHEN scores."response quality" IS NOT NULL THEN 1 ELSE 0 END) AS reviewed,
        sum(CASE WHEN is_root THEN 1 ELSE 0 END) AS total
      FROM experiment('{experiment["id"]}')
    """)  # fmt: skip
    assert review.exit_code == 0, review.output
    assert lines(review.stdout) == [{"reviewed": 2, "total": 3}]

    insert(emulator.url, emulator.key, "project_logs", project["id"], [
        {"id": "a", "span_id": "a", "root_span_id": "a", "metadata": {"orgName": "qawolf"},
         "span_attributes": {"name": "root"}, "metrics": {"start": 1.0, "end": 4.5}},
        {"id": "a1", "span_id": "a1", "root_span_id": "a", "span_parents": ["a"],
         "span_attributes": {"name": "llm"}, "metrics": {"start": 2.0, "end": 3.0}},
        {"id": "b", "span_id": "b", "root_span_id": "b", "metadata": {"orgName": "acme"},
         "span_attributes": {"name": "root"}, "metrics": {"start": 0.0, "end": 9.0}},
    ])  # fmt: skip
    spans = btpipe(emulator, "query", f"""
      SELECT span_attributes, metrics
      FROM project_logs('{project["id"]}', shape => 'traces')
      WHERE metadata.orgName = 'qawolf'
      LIMIT 10
    """, "--table")  # fmt: skip
    assert spans.exit_code == 0, spans.output
    table = spans.stdout.splitlines()
    assert table[0].split() == ["span_attributes", "metrics"] and len(table) == 3
    assert sorted(line.split()[0] for line in table[1:]) == ['{"name":"llm"}', '{"name":"root"}']
