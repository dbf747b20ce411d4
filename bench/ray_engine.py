"""The Ray engine beside the local engine: the same export of the 200,000-span sample, run
by ``btpipe export`` in this process and with ``--engine ray`` on a local Ray (which the
command starts itself, on 127.0.0.1), at 0 ms and at 100 ms of emulator latency; then a short
model of how the figure scales with more nodes.

    python -m bench.ray_engine [--spans 200000] [--latencies 0,100]

:func:`section` is what ``bench.run`` includes: it returns the report's Markdown lines and
appends its checks to ``targets``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.run import KEY, PY, Measured, emulator, measure, sample_db, table

#: A local Ray started and stopped as ``--engine ray`` does, and nothing else: its fixed cost.
RAY_START_STOP = "import ray; from pipeline.ray import cluster; cluster.start(); ray.shutdown(); print('{}')"
#: Rows a /btql page holds (btpipe's default --page-limit): what one request brings.
PAGE_ROWS = 1000


def _export(name: str, url: str, out: Path, *engine: str) -> Measured:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [PY, "-m", "pipeline", "export", "--project", "sample-project", "--objects", "logs",
           "--out", str(out), "--json", *engine]  # fmt: skip
    result, summary = measure(name, cmd, {"BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": KEY})
    return Measured(result.name, int(summary["rows"]), result.seconds, result.cpu, result.rss_mb,
                    sum(o["bytes"] for o in summary["objects"]))  # fmt: skip


def _model(latency_ms: float, local: Measured, on_ray: Measured) -> str:
    """How the Ray figure would grow with nodes, from what was measured here."""
    per_request = max(latency_ms, 1.0) / 1000
    range_rate = PAGE_ROWS / per_request  # one range: one page in flight at a time
    return (
        f"At {latency_ms:g} ms a range reads at most {PAGE_ROWS:,} rows per {per_request * 1000:g} ms, "
        f"{range_rate:,.0f} rows/s; a node with c cores runs up to 4c range tasks at once (each reserves "
        f"a quarter of a CPU), so N nodes read about N x 4c x {range_rate:,.0f} rows/s while the Parquet "
        "encoding keeps up "
        f"(measured here: {local.rows_per_s:,.0f} rows/s for one local process, {on_ray.rows_per_s:,.0f} "
        "rows/s for the local Ray on the same 2 cores). The ceiling is the API's rate limit: at R "
        f"requests/s the cluster reads at most R x {PAGE_ROWS:,} rows/s whatever N (the shared budget, "
        "--ray-request-rate, keeps it there instead of a storm of 429s), and a single object reads "
        "no faster than its --ranges-per-object ranges allow."
    )


def section(work: Path, targets: list[tuple[str, str, bool]], spans: int = 200_000,
            latencies: tuple[float, ...] = (0.0, 100.0)) -> list[str]:  # fmt: skip
    """The Ray engine's report lines; a check per latency appended to ``targets`` (both engines
    export every row of the sample)."""
    db = sample_db(spans)
    startup = measure("Ray start and stop", [PY, "-c", RAY_START_STOP])[0].seconds
    lines: list[str] = []
    for latency in latencies:
        with emulator(db, latency) as url:
            local = _export("btpipe export (local engine)", url, work / "local")
            on_ray = _export(
                "btpipe export --engine ray (local Ray, 2 CPUs)", url, work / "ray", "--engine", "ray"
            )
        title = f"## Ray engine: export of {local.rows:,} project-log spans, emulator latency {latency:g} ms"
        body = table([local, on_ray], local, "local engine")
        model = _model(latency, local, on_ray) + (
            f" Starting and stopping the local Ray alone takes {startup:.1f} s of the Ray run's "
            f"{on_ray.seconds:.1f} s here; a running cluster (--ray-address) does not pay it."
        )
        print(title, body, model, sep="\n", flush=True)
        lines += [title, "", body, "", model, ""]
        targets.append(
            (f"--engine ray exports every row the local engine does, {latency:g} ms", f"{on_ray.rows:,} rows",
             on_ray.rows == local.rows)
        )  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--latencies", default="0,100")
    args = parser.parse_args()
    targets: list[tuple[str, str, bool]] = []
    with tempfile.TemporaryDirectory() as work:
        section(Path(work), targets, args.spans, tuple(float(x) for x in args.latencies.split(",")))
    for what, value, ok in targets:
        print(f"{'ok  ' if ok else 'MISS'} {what}: {value}")


if __name__ == "__main__":
    main()
