"""Where an export's files end (the runner decides, the sinks never do), and a sink that fails
part way: the export stops with its error instead of waiting for page budget that never frees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.common.errors import BtpipeError
from pipeline.common.progress import Progress
from pipeline.common.storage import is_temp_name, open_storage
from pipeline.export.runner import ExportJob, ExportOptions
from pipeline.sinks.base import Sink
from pipeline.sources import iter_rows
from tests.helpers import FullDiskSink, all_rows, btpipe, insert, post, unique, visible_files


@pytest.fixture(scope="module")
def logs(emulator: Any) -> dict[str, Any]:
    """A project whose 200 log rows came in five writes, so that its versions split into ranges."""
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique("files")})
    for start in range(0, 200, 40):
        insert(emulator.url, emulator.key, "project_logs", project["id"],
               [{"id": f"x{i:03d}", "input": {"i": i, "text": "y" * 50}} for i in range(start, start + 40)])  # fmt: skip
    return project


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize(("file_rows", "page_limit"), [(7, 5), (7, 10), (25, 25), (1, 3)])
def test_file_rows_gives_files_of_exactly_that_many_rows(
    emulator: Any, logs: dict[str, Any], tmp_path: Path, fmt: str, file_rows: int, page_limit: int
) -> None:
    """Every file holds ``--file-rows`` rows, but a range's last, which holds no more."""
    result = btpipe(emulator, "export", "--project", logs["name"], "--objects", "logs", "--format", fmt,
                    "--out", str(tmp_path), "--json", "--file-rows", str(file_rows), "--page-limit",
                    str(page_limit), "--ranges-per-object", "3", "--min-rows-per-range", "10")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    (obj,) = orjson.loads((tmp_path / summary["manifest"]).read_bytes())["objects"]
    storage = open_storage(str(tmp_path))
    by_range: dict[str, list[int]] = {}
    rows: list[dict[str, Any]] = []
    for info in obj["files"]:
        read = [r.row for batch in iter_rows(storage, info["path"]) for r in batch]
        assert len(read) == info["rows"]
        rows += read
        by_range.setdefault(Path(info["path"]).name.split("-")[0], []).append(info["rows"])
    assert len(by_range) > 1, "the export was not split into ranges"
    for counts in by_range.values():
        assert counts[:-1] == [file_rows] * (len(counts) - 1)
        assert 1 <= counts[-1] <= file_rows
    expected = all_rows(emulator.url, emulator.key, "project_logs", logs["id"])
    assert {r["id"]: r for r in rows} == expected and len(rows) == len(expected)


def test_file_bytes_ends_a_file_after_the_page_that_reaches_it(
    emulator: Any, logs: dict[str, Any], tmp_path: Path
) -> None:
    """A file ends at a page's end, the first at which it holds ``file_bytes`` of JSON."""
    limit = 8000
    options = ExportOptions(project=logs["name"], out=str(tmp_path), objects="logs", format="jsonl",
                            page_limit=10, file_bytes=limit, ranges_per_object=1)  # fmt: skip
    summary = _export(emulator, options)
    (obj,) = orjson.loads((tmp_path / summary.manifest).read_bytes())["objects"]
    files = [(tmp_path / info["path"]).read_bytes().splitlines(keepends=True) for info in obj["files"]]
    assert [len(lines) for lines in files] == [info["rows"] for info in obj["files"]]
    assert sum(map(len, files)) == 200
    assert len(files) > 2
    for lines in files[:-1]:  # whole pages of 10 rows; without its last page the file was short
        assert len(lines) % 10 == 0
        assert len(b"".join(lines[:-10])) < limit <= len(b"".join(lines))
    assert len(b"".join(files[-1][:-10])) < limit


class _JobWithAFailingSink(ExportJob):
    """The export, but the sink of its second range fails on that range's third page."""

    def _open_sink(self, run: Any, obj: Any, rng: Any) -> Sink:
        sink = super()._open_sink(run, obj, rng)
        return FullDiskSink(sink, fail_at=3) if rng.index == 1 else sink


@pytest.mark.parametrize(("fmt", "encoders"), [("jsonl", 1), ("parquet", 0), ("parquet", 1)])
def test_an_export_whose_sink_fails_part_way_stops_with_the_error(
    emulator: Any, logs: dict[str, Any], tmp_path: Path, fmt: str, encoders: int
) -> None:
    """The failing range stops while the others still hold pages, fetched and queued; every
    slot of the page budget comes back and the export ends with the sink's error."""
    options = ExportOptions(project=logs["name"], out=str(tmp_path), objects="logs", format=fmt,
                            encoders=encoders, page_limit=5, prefetch=2, workers=4, ranges_per_object=4,
                            min_rows_per_range=10, file_rows=10)  # fmt: skip
    jobs: list[ExportJob] = []

    async def main() -> None:
        settings = ClientSettings(api_url=emulator.url, api_key=emulator.key)
        async with BraintrustClient(settings) as client:
            job = _JobWithAFailingSink(client, options, Progress())
            jobs.append(job)
            with anyio.fail_after(120):  # a slot never given back would stall the export here
                await job.run()

    with pytest.raises(ExceptionGroup) as failed:  # the ranges' task groups carry it out
        anyio.run(main)
    assert failed.group_contains(BtpipeError, match="^cannot write part: No space left on device$")
    assert not failed.value.subgroup(lambda e: not isinstance(e, (BtpipeError, ExceptionGroup)))
    (job,) = jobs
    assert job._page_budget.free == job._page_budget.pages
    assert not [p for p in visible_files(tmp_path) if is_temp_name(p)]
    # the unfinished run resumes to every row once, with a sink that does not fail
    summary = _export(emulator, options)
    assert summary.resumed and summary.rows == 200


def _export(emulator: Any, options: ExportOptions) -> Any:
    async def main() -> Any:
        settings = ClientSettings(api_url=emulator.url, api_key=emulator.key)
        async with BraintrustClient(settings) as client:
            return await ExportJob(client, options, Progress()).run()

    return anyio.run(main)
