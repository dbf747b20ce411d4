"""``make bench``: btpipe export and import against the emulator, beside a plain script and a ceiling.

Every contender runs as its own process so its CPU seconds and peak RSS are its own
(``os.wait4``); the emulator runs in another process with a prebuilt sample database
(cached under ``bench/data/``). Each scenario runs twice: with no added latency (client CPU
cost shows) and with the emulator adding 100 ms to every request (concurrency shows).
Results go to stdout and to ``bench/RESULTS.md``.

Export scenarios run once per emulator capability profile (``default`` serves everything;
``conservative`` only what Braintrust's own clients use, so btpipe takes its proven fallbacks).

    python -m bench.run [--spans 200000] [--latencies 0,100] [--rss-spans 100000,1000000]
                        [--profiles default,conservative] [--small-spans 60000]
                        [--only export,small,rss,import,delta,ray,project] [--skip ...]

Each section's figures are kept in ``bench/results/<section>.json`` and ``bench/RESULTS.md`` is
put together from all of them, so ``--only`` runs one section again without losing the others.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.emulator import sample as sample_module
from pipeline.emulator.auth import DEFAULT_KEYS
from pipeline.emulator.sample import SPANS_PER_TRACE, generate_dataset
from pipeline.emulator.server import ServerConfig, open_store, spawn_emulator

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
KEY = DEFAULT_KEYS[0].key
PY = sys.executable
#: (target, figure, met) rows of the report's last table.
Targets = list[tuple[str, str, bool]]


@dataclass(frozen=True)
class Measured:
    name: str
    rows: int
    seconds: float
    cpu: float
    rss_mb: float
    payload_bytes: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu / self.rows * 100_000 if self.rows else 0.0


def peak_rss_mb(pid: int) -> float:
    """The process's resident high-water mark (VmHWM). Read from /proc while it runs, because
    ``ru_maxrss`` of a child keeps the forking parent's size across exec."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (btpipe's Parquet export runs worker processes)."""
    found = [pid]
    for current in found:
        try:  # a process or thread may end while it is read
            for children in Path(f"/proc/{current}/task").glob("*/children"):  # per thread
                found += [int(child) for child in children.read_text().split()]
        except OSError:
            pass
    return found


def measure(name: str, cmd: list[str], env: dict[str, str] | None = None) -> tuple[Measured, dict[str, Any]]:
    """Run ``cmd``; return its wall time, CPU, peak RSS and the JSON summary it printed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=HERE.parent
        )
        peaks: dict[int, float] = {}  # the peak RSS reported is the sum over the process tree
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            for member in process_tree(proc.pid):
                peaks[member] = max(peaks.get(member, 0.0), peak_rss_mb(member))
            time.sleep(0.02)
        rss = sum(peaks.values())
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    try:
        summary = orjson.loads(stdout) if stdout.lstrip().startswith(b"{\n") else orjson.loads(lines[-1])
    except (orjson.JSONDecodeError, IndexError):
        summary = {}
    rows = int(summary.get("rows", 0))
    payload = int(summary.get("bytes", summary.get("payload_bytes", 0)))
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(name, rows, seconds, cpu, rss, payload), summary


def sample_db(spans: int) -> Path:
    """A cached emulator database whose sample project has about ``spans`` log spans.

    The file name carries a digest of the sample generator's source, so a database built by an
    older generator is never measured as if it were today's data; older files are removed."""
    DATA.mkdir(parents=True, exist_ok=True)
    generator = hashlib.sha256(Path(sample_module.__file__ or "").read_bytes()).hexdigest()[:10]
    path = DATA / f"sample-{spans}-{generator}.db"
    for pattern in (f"sample-{spans}.db*", f"sample-{spans}-*.db*"):  # unversioned, or another version
        for stale in DATA.glob(pattern):
            if not stale.name.startswith(path.name):
                stale.unlink()
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        for leftover in DATA.glob(partial.name + "*"):
            leftover.unlink()
        store = open_store(
            ServerConfig(db=str(partial), sample_traces=max(1, round(spans / SPANS_PER_TRACE)))
        )
        store.close()
        partial.rename(path)
        print(f"built {path.name} in {time.perf_counter() - started:.0f}s", flush=True)
    return path


@contextmanager
def emulator(db: Path, latency_ms: float, profile: str = "default") -> Iterator[str]:
    args = ["--latency-ms", str(latency_ms), "--max-request-bytes", str(6 * 2**20), "--profile", profile]
    with spawn_emulator(db, *args) as url:
        yield url


def project_logs_id(url: str) -> str:
    req = urllib.request.Request(
        f"{url}/v1/project?project_name=sample-project", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(req) as resp:
        return str(orjson.loads(resp.read())["objects"][0]["id"])


#: Ranges the download-only ceiling is measured at; the fastest is the ceiling. On a server that
#: shares the client's cores, more ranges at once are not always faster, and a ceiling measured
#: at one concurrency only could be beaten by an export that happened to ask less of the server.
CEILING_RANGES = (4, 8, 12)
CEILING = "ceiling (download and discard)"


def ceiling_command(url: str, project_id: str, ranges: int = max(CEILING_RANGES)) -> list[str]:
    """The download-only loop over the sample project's logs at ``ranges`` ranges; also the
    unmeasured first pass that reads the emulator's database from disk before the measured runs."""
    return [PY, str(HERE / "ceiling.py"), url, KEY, "project_logs", project_id, str(ranges)]


def export_contenders(
    url: str,
    project_id: str,
    work: Path,
    rounds: int = 3,
    first_rows: dict[str, float] | None = None,
    ceilings: dict[int, float] | None = None,
) -> list[Measured]:
    """Ceiling, JSONL and Parquet export, measured in ``rounds`` interleaved rounds (so a slow
    spell of this shared machine falls on every contender alike), each reported by its median
    run; then the plain script once (it is slow enough not to need it). The ceiling is the
    fastest median of the download-only loop at each of ``CEILING_RANGES``; ``ceilings`` gets
    every one of them. ``first_rows`` gets each btpipe contender's median time to first row."""
    env = {"BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": KEY}
    contenders: dict[str, list[str]] = {
        f"{CEILING} at {n} ranges": ceiling_command(url, project_id, n) for n in CEILING_RANGES
    }
    for fmt in ("jsonl", "parquet"):
        contenders[f"btpipe export --format {fmt}"] = [
            PY, "-m", "pipeline", "export", "--project", "sample-project", "--objects", "logs",
            "--format", fmt, "--out", str(work / f"export-{fmt}"), "--json",
        ]  # fmt: skip
    measure("warm-up", ceiling_command(url, project_id))  # the emulator's first pass is slower
    runs: dict[str, list[tuple[Measured, dict[str, Any]]]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, cmd in contenders.items():
            shutil.rmtree(work, ignore_errors=True)  # each run writes into an empty directory
            runs[name].append(measure(name, cmd, env))
    medians = {
        name: sorted(runs[name], key=lambda run: run[0].seconds)[len(runs[name]) // 2] for name in contenders
    }
    by_ranges = {n: medians.pop(f"{CEILING} at {n} ranges") for n in CEILING_RANGES}
    if ceilings is not None:
        ceilings.update({n: m.seconds for n, (m, _) in by_ranges.items()})
    fastest = min(by_ranges.values(), key=lambda run: run[0].seconds)
    medians = {CEILING: fastest, **medians}
    payload = fastest[0].payload_bytes  # the bytes every contender reads
    if first_rows is not None:
        for name in medians:
            times = sorted(
                s["first_row_seconds"]
                for _, s in runs.get(name, [])
                if s.get("first_row_seconds") is not None
            )
            if times:
                first_rows[name] = times[len(times) // 2]
    results = [
        Measured(name, int(summary["rows"]), m.seconds, m.cpu, m.rss_mb, payload)
        for name, (m, summary) in medians.items()
    ]
    work.mkdir(parents=True, exist_ok=True)
    m, summary = measure("plain script (walkthrough style)", [PY, str(HERE / "plain_export.py"), url, KEY, "project_logs", project_id, str(work / "plain.jsonl")])  # fmt: skip
    results.append(Measured(m.name, summary["rows"], m.seconds, m.cpu, m.rss_mb, payload))
    return results


def table(results: list[Measured], reference: Measured | None = None, ref_label: str = "") -> str:
    head = "| contender | rows | seconds | rows/s | MB/s | CPU s / 100k rows | peak RSS MB |"
    if reference:
        head += f" vs {ref_label} |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        line = (
            f"| {r.name} | {r.rows:,} | {r.seconds:.1f} | {r.rows_per_s:,.0f} | {r.mb_per_s:,.1f} | "
            f"{r.cpu_per_100k:.2f} | {r.rss_mb:.0f} |"
        )
        if reference:
            line += f" {r.rows_per_s / reference.rows_per_s:.2f}x |"
        lines.append(line)
    return "\n".join(lines)


def write_dataset_input(root: Path, events: int) -> None:
    """An export-layout JSONL file of ``events`` dataset records, the import benchmark's input."""
    directory = root / "object_type=dataset" / "object_id=00000000-0000-4000-8000-000000000000" / "run=bench"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "r00-part-00000.jsonl", "wb") as fh:
        for record in generate_dataset(11, events):
            fh.write(orjson.dumps(record) + b"\n")


def _get(url: str, path: str) -> Any:
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req) as resp:
        return orjson.loads(resp.read())


def landed_rows(url: str, project: str) -> int:
    """Rows in the ``bench`` dataset of ``project``: proof a contender's writes arrived."""
    found = _get(url, f"/v1/dataset?project_name={project}&dataset_name=bench")["objects"]
    if not found:
        return 0
    body = {
        "query": {
            "from": {"op": "function", "name": {"op": "ident", "name": ["dataset"]},
                     "args": [{"op": "literal", "value": found[0]["id"]}]},
            "measures": [{"alias": "n", "expr": {"op": "function", "name": {"op": "ident", "name": ["count"]},
                                                  "args": [{"op": "literal", "value": 1}]}}],
        },
        "fmt": "json",
    }  # fmt: skip
    req = urllib.request.Request(
        url + "/btql",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return int(orjson.loads(resp.read())["data"][0]["n"])


def import_contenders(url: str, work: Path, events: int, plain_events: int) -> list[Measured]:
    env = {"BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": KEY}
    source = work / "import-input"
    if not source.exists():
        write_dataset_input(source, events)
    tag = f"{time.time_ns()}"
    results = []
    m, summary = measure(
        "btpipe import",
        [PY, "-m", "pipeline", "import", "--in", str(source), "--to-project", f"bench-import-{tag}",
         "--create-project", "--to-object", "dataset:bench", "--json", "--state-dir", str(work / "state")],
        env,
    )  # fmt: skip
    results.append(Measured(m.name, int(summary.get("rows", 0)), m.seconds, m.cpu, m.rss_mb, 0))
    # The SDK's queue silently drops the oldest events once it holds BRAINTRUST_QUEUE_SIZE of
    # them; make it big enough that every event arrives, or the comparison is meaningless.
    sdk, summary = measure("braintrust SDK (init_dataset().insert + flush)", [PY, str(HERE / "sdk_import.py"), url, KEY, str(source), f"bench-sdk-{tag}"], {"BRAINTRUST_QUEUE_SIZE": str(10 * events)})  # fmt: skip
    results.append(sdk)
    plain, summary = measure(f"plain script (one insert per event, first {plain_events:,})", [PY, str(HERE / "plain_import.py"), url, KEY, str(source), f"bench-plain-{tag}", str(plain_events)])  # fmt: skip
    results.append(plain)
    for result, project in zip(
        results, (f"bench-import-{tag}", f"bench-sdk-{tag}", f"bench-plain-{tag}"), strict=True
    ):
        arrived = landed_rows(url, project)
        if arrived != result.rows:
            raise SystemExit(f"{result.name}: {result.rows:,} events sent but {arrived:,} rows arrived")
    return results


def export_section(
    db: Path,
    latency: float,
    profile: str,
    work: Path,
    rounds: int,
    targets: list[tuple[str, str, bool]],
    *,
    ceiling_goals: bool,
) -> list[str]:
    """One export scenario: its report lines; its targets appended to ``targets``."""
    first_rows: dict[str, float] = {}
    ceilings: dict[int, float] = {}
    with emulator(db, latency, profile) as url:
        results = export_contenders(
            url, project_logs_id(url), work / f"{profile}-lat{latency:g}", rounds, first_rows, ceilings
        )
    title = f"## Export of {results[0].rows:,} project-log spans, emulator latency {latency:g} ms, {profile} profile"
    body = table(results, results[0], "ceiling")
    plain = results[-1]
    ratios = ", ".join(f"{r.name}: {r.rows_per_s / plain.rows_per_s:.1f}x plain" for r in results[1:3])
    firsts = "time to first row (process start to the first page written): " + ", ".join(
        f"{name}: {seconds:.2f} s" for name, seconds in first_rows.items()
    )
    by_ranges = "ceiling by ranges at once (the fastest is the ceiling): " + ", ".join(
        f"{n}: {seconds:.2f} s" for n, seconds in ceilings.items()
    )
    print(title, body, ratios, firsts, by_ranges, sep="\n", flush=True)
    ceiling, jsonl, parquet = results[0], results[1], results[2]
    where = f"{latency:g} ms, {results[0].rows:,} spans, {profile}"
    if ceiling_goals:
        for r, goal in ((jsonl, 0.9), (parquet, 0.6)):
            ratio = r.rows_per_s / ceiling.rows_per_s
            targets.append(
                (f"{r.name} at {goal:.0%} of the ceiling, {where}", f"{ratio:.2f}x", ratio >= goal)
            )
    if latency >= 100:
        for r in (jsonl, parquet):
            ratio = r.rows_per_s / plain.rows_per_s
            targets.append((f"{r.name} at 5x the plain script, {where}", f"{ratio:.1f}x", ratio >= 5))
    return [title, "", body, "", ratios, "", firsts, "", by_ranges, ""]


def export_sections(args: argparse.Namespace, work: Path, targets: Targets) -> list[str]:
    """The big export: every profile at every latency."""
    report: list[str] = []
    db = sample_db(args.spans)
    for profile in args.profile_list:
        for latency in args.latency_list:
            report += export_section(db, latency, profile, work, args.rounds, targets, ceiling_goals=True)
    return report


def small_sections(args: argparse.Namespace, work: Path, targets: Targets) -> list[str]:
    """A small project at 100 ms: where fixed costs (start-up, planning) show."""
    report: list[str] = []
    db = sample_db(args.small_spans)
    for profile in args.profile_list:
        report += export_section(db, 100, profile, work, args.rounds, targets, ceiling_goals=False)
    return report


def rss_section(args: argparse.Namespace, work: Path, targets: Targets) -> list[str]:
    report = ["## Peak memory of btpipe export by project size (latency 0 ms)", ""]
    rows_table = []
    for spans in (int(x) for x in args.rss_spans.split(",")):
        db = sample_db(spans)
        with emulator(db, 0) as url:
            # the emulator's first pass over a database reads it from disk: not the contenders' time
            measure("warm-up", ceiling_command(url, project_logs_id(url)))
            for fmt in ("jsonl", "parquet"):
                m, summary = measure(
                    f"btpipe export --format {fmt}, {spans:,} spans",
                    [PY, "-m", "pipeline", "export", "--project", "sample-project", "--objects", "logs",
                     "--format", fmt, "--out", str(work / f"rss-{spans}-{fmt}"), "--json", "--restart"],
                    {"BRAINTRUST_API_URL": url, "BRAINTRUST_API_KEY": KEY},
                )  # fmt: skip
                rows_table.append(Measured(m.name, summary["rows"], m.seconds, m.cpu, m.rss_mb, 0))
    body = table(rows_table)
    print(body, flush=True)
    for r in rows_table:
        targets.append((f"peak RSS under 300 MB: {r.name}", f"{r.rss_mb:.0f} MB", r.rss_mb < 300))
    return [*report, body, ""]


def import_sections(args: argparse.Namespace, work: Path, targets: Targets) -> list[str]:
    report: list[str] = []
    for latency in args.latency_list:
        db = work / f"import-{latency:g}.db"
        with emulator(db, latency) as url:
            results = import_contenders(url, work, args.import_events, args.plain_events)
        title = f"## Import of {args.import_events:,} dataset events, emulator latency {latency:g} ms"
        body = table(results, results[-1], "plain")
        sdk = results[1]
        note = f"btpipe vs SDK: {results[0].rows_per_s / sdk.rows_per_s:.1f}x events/s"
        report += [title, "", body, "", note, ""]
        print(title, body, note, sep="\n", flush=True)
        btpipe, plain = results[0], results[-1]
        cpu = f"{btpipe.cpu_per_100k:.1f} s vs {sdk.cpu_per_100k:.1f} s per 100k events"
        targets.append(
            (
                f"import CPU no worse than the SDK's, {latency:g} ms",
                cpu,
                btpipe.cpu_per_100k <= sdk.cpu_per_100k,
            )
        )
        if latency >= 100:
            speed = btpipe.rows_per_s / plain.rows_per_s
            targets.append((f"import at 20x the plain script, {latency:g} ms", f"{speed:.0f}x", speed >= 20))
            speed = btpipe.rows_per_s / sdk.rows_per_s
            targets.append((f"import at 2x the SDK, {latency:g} ms", f"{speed:.1f}x", speed >= 2))
    return report


def module_section(module: str) -> Callable[[argparse.Namespace, Path, Targets], list[str]]:
    """A section kept in a module of its own (``bench/<name>.py``), with its own defaults."""

    def run(args: argparse.Namespace, work: Path, targets: Targets) -> list[str]:
        lines: list[str] = importlib.import_module(module).section(work, targets)
        return lines

    return run


#: Every section, in report order: (name for --only/--skip, what runs it).
SECTIONS: dict[str, Callable[[argparse.Namespace, Path, Targets], list[str]]] = {
    "export": export_sections,
    "small": small_sections,
    "rss": rss_section,
    "import": import_sections,
    "delta": module_section("bench.delta"),
    "ray": module_section("bench.ray_engine"),
    "project": module_section("bench.project"),
}
RESULTS = HERE / "RESULTS.md"
#: Each section's last figures, so one section can be run again and the report stays whole.
SECTION_RESULTS = HERE / "results"


HEADER = [
    "# Benchmark results",
    "",
    "Produced by `make bench` (`python -m bench.run`; `--only SECTION,...` runs some sections again "
    "and keeps the others' last figures, kept in `bench/results/`) on a 2-core machine; the emulator "
    "runs on the same machine, so every contender shares the two cores with it. Export figures are the "
    "median of the interleaved rounds (ceilings, JSONL, Parquet, each into an empty directory), after "
    "one unmeasured pass that warms the emulator. The ceiling is a loop that downloads the same pages "
    "and throws them away, measured at 4, 8 and 12 ranges at once; the fastest of the three counts. "
    "Peak RSS is summed over the contender's process tree "
    "(btpipe's Parquet export encodes in a worker process). Each section starts with the command "
    "that produced it.",
    "",
]


def assemble() -> None:
    """``bench/RESULTS.md`` from the last figures of every section, and all their targets."""
    report = list(HEADER)
    targets: list[list[Any]] = []
    for name in SECTIONS:
        path = SECTION_RESULTS / f"{name}.json"
        if path.exists():
            saved = orjson.loads(path.read_bytes())
            report += [f"<!-- section {name}: {saved['command']} -->", "", *saved["lines"]]
            targets += saved["targets"]
    report += ["## Against the targets", "", "| target | figure | met |", "|---|---|---|"]
    report += [f"| {name} | {figure} | {'yes' if met else 'no'} |" for name, figure, met in targets]
    RESULTS.write_text("\n".join(report) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--latencies", default="0,100")
    parser.add_argument("--rss-spans", default="100000,1000000")
    parser.add_argument("--import-events", type=int, default=200_000)
    parser.add_argument("--plain-events", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds of each export contender.")
    parser.add_argument(
        "--profiles", default="default,conservative", help="Emulator profiles for the exports."
    )
    parser.add_argument(
        "--small-spans", type=int, default=60_000, help="Spans of the 100 ms small-project export."
    )
    parser.add_argument("--only", default="", help=f"Comma list of sections to run: {', '.join(SECTIONS)}")
    parser.add_argument("--skip", default="", help="Comma list of sections not to run")
    args = parser.parse_args()
    args.latency_list = [float(x) for x in args.latencies.split(",")]
    args.profile_list = [p for p in args.profiles.split(",") if p]
    only = set(filter(None, args.only.split(","))) or set(SECTIONS)
    chosen = [name for name in SECTIONS if name in only and name not in set(args.skip.split(","))]
    if unknown := (only | set(filter(None, args.skip.split(",")))) - set(SECTIONS):
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    command = " ".join(["python -m bench.run", *sys.argv[1:]])
    # Byte code as an installed package has it (pip compiles on install): with the cache not
    # written (PYTHONDONTWRITEBYTECODE), every start of every contender compiled its modules.
    compileall.compile_dir(HERE.parent / "pipeline", quiet=1)
    DATA.mkdir(parents=True, exist_ok=True)
    SECTION_RESULTS.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        with tempfile.TemporaryDirectory(dir=DATA) as tmp:
            targets: Targets = []
            lines = SECTIONS[name](args, Path(tmp), targets)
        saved = {"command": command, "lines": lines, "targets": targets}
        (SECTION_RESULTS / f"{name}.json").write_bytes(orjson.dumps(saved, option=orjson.OPT_INDENT_2))
        assemble()
    assemble()


if __name__ == "__main__":
    main()
