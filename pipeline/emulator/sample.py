"""Deterministic sample data, and a bulk loader that writes it straight into the store.

Everything derives from one seed, so the same seed always yields the same ids, text and
numbers (``created`` timestamps included: they count up from 2024-01-01T00:00:00Z).

Project logs (:func:`generate_traces`), per trace:
  * one root span, ``span_attributes.type = "task"``, with input/output/expected,
    ``scores`` (accuracy, relevance: uniform 0..1, ~10% null), ``tags`` (0-2 of 5),
    ``metadata`` {orgName: one of 6 incl. "qawolf", user_id: "u1".."u50", model: one of 4};
  * 1-4 child spans: ~70% ``llm`` spans (messages in, text out, ``metrics`` with
    prompt_tokens, completion_tokens, tokens, start, end) and ~30% ``tool`` spans;
  * text mixes ASCII, accents, CJK and emoji; a typical span serializes to 0.6-1.5 KB;
  * about 1 span in 200 carries an output of 100-400 KB (the "huge payload" case).
Dataset (:func:`generate_dataset`): records with input {question}, expected {answer},
metadata {category, difficulty}, tags. Experiment (:func:`generate_experiment`): one row
per dataset record with input, output, expected, scores, and ``origin`` pointing at the
dataset record. The sample project's prompts, functions, scores, tags, view, span iframe and
automation: ``sample_config.py``.

Attachments (:func:`load_attachment_sample`) live in a project of their own,
``sample-attachments``, so the rows of ``sample-project`` (which benchmarks cache and time
by their parameters) are the same with or without them: a few traces whose input, output and
metadata refer to two PNG images and a PDF (:mod:`pipeline.emulator.sample_files`), one image
referred to twice, and one ``external_attachment``.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Final

import orjson

from pipeline.emulator import attachments, objects, sample_files
from pipeline.emulator.rowwrite import Target, insert_records, stored_row
from pipeline.emulator.sample_config import load_config_sample
from pipeline.emulator.store import Store, next_row_seq, next_xact_id

ORG_NAMES: Final = ("qawolf", "acme", "globex", "initech", "umbrella", "hooli")
MODELS: Final = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3-70b")
TAGS: Final = ("prod", "beta", "regression", "flaky", "vip")
TOOLS: Final = ("search", "calculator", "browser", "sql")
WORDS: Final = (
    "the", "test", "page", "login", "button", "checkout", "flow", "user", "click", "wait",
    "assert", "visible", "café", "naïve", "résumé", "東京", "データ", "테스트", "🚀", "✅", "Ωmega",
)  # fmt: skip
HUGE_PAYLOAD_RATE: Final = 1 / 200
#: Mean spans per generated trace (one root, 1-4 children), for sizing a sample by spans.
SPANS_PER_TRACE: Final = 3.5
BASE_TIME: Final = datetime(2024, 1, 1, tzinfo=UTC)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choices(WORDS, k=n_words))


def _created(i: int) -> str:
    return (BASE_TIME + timedelta(seconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _output(rng: random.Random) -> str:
    if rng.random() < HUGE_PAYLOAD_RATE:
        block = _text(rng, 1000)  # repeated: cheap to generate, still ~100-400 KB
        return " ".join([block] * rng.randint(15, 60))
    return _text(rng, rng.randint(15, 60))


def _child(rng: random.Random, root: str, parent: str, t: float, i: int) -> dict[str, Any]:
    span: dict[str, Any] = {
        "id": _uuid(rng), "span_id": _uuid(rng), "root_span_id": root, "span_parents": [parent],
        "created": _created(i),
    }  # fmt: skip
    if rng.random() < 0.7:
        prompt, completion = rng.randint(50, 2000), rng.randint(10, 800)
        span.update(
            span_attributes={"name": "chat completion", "type": "llm"},
            input=[{"role": "system", "content": _text(rng, 12)}, {"role": "user", "content": _text(rng, 25)}],
            output=_output(rng),
            metrics={"prompt_tokens": prompt, "completion_tokens": completion, "tokens": prompt + completion,
                     "start": t, "end": t + rng.uniform(0.2, 8.0)},
            metadata={"model": rng.choice(MODELS)},
        )  # fmt: skip
    else:
        tool = rng.choice(TOOLS)
        span.update(
            span_attributes={"name": tool, "type": "tool"},
            input={"tool": tool, "args": {"query": _text(rng, 8)}},
            output=_output(rng),
            metrics={"start": t, "end": t + rng.uniform(0.01, 2.0)},
        )
    return span


def generate_traces(seed: int, n_traces: int) -> Iterator[dict[str, Any]]:
    """Insert events for ``n_traces`` project-log traces (root first, then its children)."""
    rng = random.Random(seed)
    i = 0
    for _ in range(n_traces):
        root_span = _uuid(rng)
        t = (BASE_TIME + timedelta(seconds=i)).timestamp() + rng.random()  # like time.time()
        yield {
            "id": _uuid(rng), "span_id": root_span, "root_span_id": root_span, "created": _created(i),
            "span_attributes": {"name": "task", "type": "task"},
            "input": {"question": _text(rng, rng.randint(8, 30))},
            "output": {"answer": _output(rng)},
            "expected": {"answer": _text(rng, 10)},
            "scores": {k: None if rng.random() < 0.1 else round(rng.random(), 4) for k in ("accuracy", "relevance")},
            "tags": rng.sample(TAGS, rng.randint(0, 2)),
            "metadata": {"orgName": rng.choice(ORG_NAMES), "user_id": f"u{rng.randint(1, 50)}",
                         "model": rng.choice(MODELS)},
            "metrics": {"start": t, "end": t + rng.uniform(1, 30)},
        }  # fmt: skip
        i += 1
        for _ in range(rng.randint(1, 4)):
            yield _child(rng, root_span, root_span, t, i)
            i += 1


def generate_dataset(seed: int, n_records: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed + 1)
    for i in range(n_records):
        yield {
            "id": _uuid(rng), "created": _created(i),
            "input": {"question": _text(rng, rng.randint(5, 20))},
            "expected": {"answer": _text(rng, rng.randint(3, 12))},
            "metadata": {"category": rng.choice(("nav", "forms", "auth", "search")),
                         "difficulty": rng.randint(1, 5)},
            "tags": rng.sample(TAGS, rng.randint(0, 2)),
        }  # fmt: skip


def generate_experiment(
    seed: int, dataset_id: str, records: Iterable[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed + 2)
    for i, record in enumerate(records):
        span = _uuid(rng)
        yield {
            "id": _uuid(rng), "span_id": span, "root_span_id": span, "created": _created(i),
            "span_attributes": {"name": "eval", "type": "eval"},
            "input": record["input"], "expected": record["expected"],
            "output": {"answer": _text(rng, rng.randint(3, 12))},
            "scores": {"accuracy": round(rng.random(), 4), "exact_match": float(rng.random() < 0.4)},
            "metadata": {"model": rng.choice(MODELS)},
            "origin": {"object_type": "dataset", "object_id": dataset_id, "id": record["id"]},
        }  # fmt: skip


def bulk_load(db: Store, target: Target, events: Iterable[dict[str, Any]], batch_size: int = 5000) -> int:
    """Write new rows (ids not yet in the object) straight into the store, one transaction
    id per batch; far faster than the HTTP path, for building benchmark databases."""
    it = iter(events)
    total = 0
    while batch := list(islice(it, batch_size)):

        def write(conn: sqlite3.Connection, batch: list[dict[str, Any]] = batch) -> None:
            xact, seq = next_xact_id(conn), next_row_seq(conn)
            records = []
            for n, event in enumerate(batch):
                row = stored_row(target, event, xact, seq + n)
                records.append((seq + n, target.object_type, target.object_id, row["id"], xact, 0,
                                row["root_span_id"], orjson.dumps(row).decode()))  # fmt: skip
            insert_records(conn, records)

        db.write_sync(write)
        total += len(batch)
    return total


def _is_empty(db: Store, target: Target) -> bool:
    return db.read_sync(
        lambda c: (
            c.execute(
                "SELECT 1 FROM rows WHERE object_type = ? AND object_id = ? LIMIT 1",
                (target.object_type, target.object_id),
            ).fetchone()
            is None
        )
    )


def load_sample(db: Store, org_name: str, email: str, n_traces: int, seed: int = 0) -> dict[str, str]:
    """Create ``sample-project`` with ``sample-dataset``, ``sample-experiment`` and its
    configuration objects in ``org_name`` and fill them (only when empty, so a restart does not
    duplicate rows).
    Returns the object ids by name."""

    def create(conn: sqlite3.Connection) -> dict[str, str]:
        org_id, user_id = conn.execute(
            "SELECT o.id, u.id FROM orgs o, users u WHERE o.name = ? AND u.email = ?", (org_name, email)
        ).fetchone()
        project, _ = objects.create_project(conn, {"name": "sample-project"}, org_id, user_id)
        dataset, _ = objects.create_dataset(conn, {"project_id": project["id"], "name": "sample-dataset"}, [org_id], user_id)  # fmt: skip
        experiment, _ = objects.create_experiment(
            conn, {"project_id": project["id"], "name": "sample-experiment", "dataset_id": dataset["id"]},
            [org_id], user_id,
        )  # fmt: skip
        return {"org_id": org_id, "project_id": project["id"], "dataset_id": dataset["id"], "experiment_id": experiment["id"]}  # fmt: skip

    ids = db.write_sync(create)
    org_id, project_id = ids["org_id"], ids["project_id"]
    n_records = max(1, n_traces // 10)
    records = list(generate_dataset(seed, n_records))
    loads: list[tuple[Target, Iterable[dict[str, Any]]]] = [
        (Target("project_logs", project_id, project_id, org_id), generate_traces(seed, n_traces)),
        (Target("dataset", ids["dataset_id"], project_id, org_id), records),
        (
            Target("experiment", ids["experiment_id"], project_id, org_id),
            generate_experiment(seed, ids["dataset_id"], records),
        ),
    ]
    for target, events in loads:
        if _is_empty(db, target):
            bulk_load(db, target, events)
    # After the rows, so their transaction ids are the same with or without configuration objects.
    db.write_sync(lambda conn: load_config_sample(conn, project_id, org_name, email))
    load_attachment_sample(db, org_id, seed)
    return ids


def attachment_sample(seed: int) -> tuple[list[tuple[dict[str, str], bytes]], list[dict[str, Any]]]:
    """The sample's attachments (reference, bytes) and the log events referring to them."""
    rng = random.Random(seed + 3)
    files = [
        ("screenshot-1.png", "image/png", sample_files.png(seed)),
        ("screenshot-2.png", "image/png", sample_files.png(seed + 1, 96, 64)),
        ("report.pdf", "application/pdf", sample_files.pdf(f"btpipe sample report {seed}")),
    ]
    refs = [
        ({"type": "braintrust_attachment", "key": _uuid(rng), "filename": name, "content_type": kind}, data)
        for name, kind, data in files
    ]
    (shot, other, report) = (ref for ref, _ in refs)
    external = {"type": "external_attachment", "url": "https://example.com/logo.svg", "filename": "logo.svg",
                "content_type": "image/svg+xml"}  # fmt: skip
    inputs: list[dict[str, Any]] = [
        {"input": {"question": "what does the page show?", "screenshot": shot}, "output": {"answer": "a login form"}},
        {"input": {"question": "summarise the report", "document": report},
         "output": {"answer": "all checks passed"}, "metadata": {"attachments": [shot, other]}},
        {"input": {"question": "which logo?", "logo": external}, "output": {"answer": "the site's"}},
    ]  # fmt: skip
    events = []
    for i, fields in enumerate(inputs):
        span = _uuid(rng)
        events.append({"id": _uuid(rng), "span_id": span, "root_span_id": span, "created": _created(i),
                       "span_attributes": {"name": "look", "type": "task"}, **fields})  # fmt: skip
    return refs, events


def load_attachment_sample(db: Store, org_id: str, seed: int) -> None:
    """``sample-attachments``: a small project whose logs refer to PNG and PDF attachments
    (only when empty, as the rest of the sample)."""
    refs, events = attachment_sample(seed)

    def create(conn: sqlite3.Connection) -> str:
        owner = conn.execute("SELECT user_id FROM members WHERE org_id = ? LIMIT 1", (org_id,)).fetchone()[0]
        project_id: str = objects.create_project(conn, {"name": "sample-attachments"}, org_id, owner)[0]["id"]
        for ref, data in refs:
            attachments.store_bytes(conn, org_id, ref["key"], ref["filename"], ref["content_type"], data)
        return project_id

    project_id = db.write_sync(create)
    target = Target("project_logs", project_id, project_id, org_id)
    if _is_empty(db, target):
        bulk_load(db, target, events)
