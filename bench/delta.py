"""The Delta export: a full run of the sample project's logs, then incremental runs of changed rows.

On a copy of the cached sample database (the cache stays as it is), with no added latency:

1. ``btpipe export --format parquet`` of the logs, the reference;
2. ``btpipe export --format delta --incremental`` of the same logs: the table is created;
3. ``runs`` times: ``changed`` rows change at the source (updates of existing ids, new ids
   and a few deletes, through the insert endpoint), then the same Delta export applies them
   in one merge commit.

Reported: each run's seconds, whether the incremental runs stay flat as the table grows (the
mean of the last three within 1.5x the mean of the first three), and the full Delta run's time
against the Parquet export's (target: within 1.5x).

    python -m bench.delta [--spans 200000] [--runs 10] [--changed 2000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds

from bench.run import DATA, KEY, PY, Measured, emulator, measure, project_logs_id, sample_db, table

#: Of each run's changed rows: the share updating existing ids, and deleting them; the rest are new ids.
UPDATES = 0.75
DELETES = 0.05
_BATCH = 500  # events per insert request


def _insert(url: str, project_id: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), _BATCH):
        req = urllib.request.Request(
            f"{url}/v1/project_logs/{project_id}/insert",
            data=orjson.dumps({"events": events[start : start + _BATCH]}),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as resp:
            resp.read()


def _changes(
    ids: list[str], run: int, changed: int, rng: random.Random
) -> tuple[list[dict[str, Any]], set[str]]:
    """``changed`` events: updates of ids in ``ids``, new ids, deletes; the ids deleted."""
    n_update, n_delete = int(changed * UPDATES), int(changed * DELETES)
    picked = rng.sample(ids, n_update + n_delete)
    events: list[dict[str, Any]] = [
        {"id": i, "output": {"revised": run}, "metadata": {"bench": "delta"}} for i in picked[:n_update]
    ]
    events += [{"id": i, "_object_delete": True} for i in picked[n_update:]]
    events += [{"id": f"bench-delta-{run}-{n}", "input": {"run": run, "n": n}, "output": n}
               for n in range(changed - n_update - n_delete)]  # fmt: skip
    return events, set(picked[n_update:])


def section(
    work: Path,
    targets: list[tuple[str, str, bool]],
    *,
    spans: int = 200_000,
    runs: int = 10,
    changed: int = 2_000,
) -> list[str]:
    """The Delta scenario: its report lines (Markdown); its targets appended to ``targets``."""
    db = work / "delta-source.db"
    cached = sample_db(spans)
    for suffix in ("", "-wal"):  # the write-ahead log may hold committed pages
        if Path(f"{cached}{suffix}").exists():
            shutil.copyfile(f"{cached}{suffix}", f"{db}{suffix}")
    rng = random.Random(17)

    def export(fmt: str, out: Path, name: str, *extra: str) -> Measured:
        measured, _ = measure(
            name,
            [PY, "-m", "pipeline", "export", "--project", "sample-project", "--objects", "logs",
             "--format", fmt, "--out", str(out), "--json", "--quiet", *extra],
            {"BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": KEY},
        )  # fmt: skip
        return measured

    with emulator(db, 0) as url:
        project_id = project_logs_id(url)
        parquet = export("parquet", work / "delta-parquet", "btpipe export --format parquet (full)")
        full = export("delta", work / "delta-out", "btpipe export --format delta (full, table created)",
                      "--incremental")  # fmt: skip
        ids = ds.dataset(work / "delta-parquet", format="parquet").to_table(columns=["id"])["id"].to_pylist()
        incremental: list[Measured] = []
        for run in range(1, runs + 1):
            events, deleted = _changes(ids, run, changed, rng)
            _insert(url, project_id, events)
            ids = [i for i in ids if i not in deleted] + [
                e["id"] for e in events if e["id"].startswith("bench-")
            ]
            name = f"incremental run {run} ({changed:,} changed rows)"
            incremental.append(export("delta", work / "delta-out", name, "--incremental"))
    ratio = full.seconds / parquet.seconds
    seconds = [m.seconds for m in incremental]
    head, tail = seconds[:3], seconds[-3:]
    growth = (sum(tail) / len(tail)) / (sum(head) / len(head))
    title = (
        f"## Delta export of {parquet.rows:,} project-log spans, then {runs} incremental runs (latency 0 ms)"
    )
    body = table([parquet, full, *incremental], parquet, "Parquet")
    notes = (
        f"full Delta run: {ratio:.2f}x the Parquet export's time; incremental runs: "
        + ", ".join(f"{s:.2f}" for s in seconds)
        + f" s (last three {growth:.2f}x the first three)"
    )
    print(title, body, notes, sep="\n", flush=True)
    targets.append((f"Delta full export within 1.5x the Parquet export, {parquet.rows:,} spans",
                    f"{ratio:.2f}x", ratio <= 1.5))  # fmt: skip
    targets.append((f"Delta incremental runs flat ({changed:,} changed rows each, {runs} runs)",
                    f"{growth:.2f}x", growth <= 1.5))  # fmt: skip
    return [title, "", body, "", notes, ""]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--changed", type=int, default=2_000)
    args = parser.parse_args()
    targets: list[tuple[str, str, bool]] = []
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        lines = section(Path(tmp), targets, spans=args.spans, runs=args.runs, changed=args.changed)
    print("\n".join(lines))
    for name, figure, met in targets:
        print(f"{'met' if met else 'MISSED'}: {name}: {figure}")


if __name__ == "__main__":
    main()
