"""``btpipe validate``: the shipped configs pass; a catalogue of bad files fails with exact messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.jobs import validate
from pipeline.common.selection import Selector, parse_selection
from pipeline.jobs.config import ExportJobConfig, MigrateJobConfig, load_job_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
KEYS = {"BRAINTRUST_API_KEY": "source-key", "DEST_BRAINTRUST_API_KEY": "dest-key"}

GOOD_EXPORT = """
[job.b]
project = "p"
out = "out"
"""


def check(tmp_path: Path, text: str, env: dict[str, str] | None = None, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "job.toml"
    path.write_text(text)
    full_env: dict[str, str | None] = {
        **{k: None for k in ("BRAINTRUST_API_URL", "BTPIPE_OUT", "BTPIPE_WORKERS")},
        **KEYS,
        **(env or {}),
    }
    result = CliRunner().invoke(validate, [str(path), *args], env=full_env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("name", ["nightly-backup", "warehouse-load", "migrate-project"])
def test_shipped_configs_are_valid(name: str) -> None:
    result = CliRunner().invoke(validate, [str(CONFIGS / f"{name}.toml")], env=KEYS)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("ok (1 jobs: " + ("migrate" if name.startswith("migrate") else {
        "nightly-backup": "nightly-backup", "warehouse-load": "warehouse-logs"}[name]) + ")\n")  # fmt: skip


BAD = [
    pytest.param(
        '[job.b]\nproject = "p"\nout = "o"\nworkers = "x"\n',
        ['{f}:job.b.workers: expected integer, got "x"'],
        id="wrong-type-int",
    ),
    pytest.param(
        '[job.b]\nproject = "p"\nout = "o"\ncolour = "red"\n',
        [
            "{f}:job.b.colour: unknown key (expected one of: attachment_workers, attachments, compression, "
            "encoders, file_mb, file_rows, filter, format, full_every, incremental, keep_runs, kind, "
            "max_attachment_mb, min_rows_per_range, objects, out, page_limit, prefetch, project, projects, "
            "ranges_per_object, row_group_mb, row_group_rows, shape, workers)"
        ],
        id="unknown-job-key",
    ),
    pytest.param(
        '[job.b]\nproject = "p"\n',
        ["{f}:job.b.out: required key missing"],
        id="missing-out",
    ),
    pytest.param(
        '[job.b]\nout = "o"\n',
        ["{f}:job.b.projects: required key missing (give project or projects)"],
        id="missing-project",
    ),
    pytest.param(
        '[job.b]\nproject = "p"\nout = "o"\nincremental = "yes"\n',
        ['{f}:job.b.incremental: expected true or false, got "yes"'],
        id="wrong-type-bool",
    ),
    pytest.param(
        '[job.b]\nproject = "p"\nout = "o"\nformat = "delta"\nshape = "summary"\n',
        ["{f}:job.b.shape: a Delta table holds one row per span, and a summary row (one per trace, under "
         "its root span's id) would overwrite its root span; export summaries with --format parquet or jsonl"],
        id="delta-summary",
    ),
    pytest.param(
        '[job.b]\nproject = "p"\nout = "o"\nformat = "csv"\n',
        ['{f}:job.b.format: expected one of "parquet", "jsonl", "delta", got "csv"'],
        id="bad-choice",
    ),
    pytest.param(
        '[job.b]\nproject = "p"\nout = "o"\npage_limit = 5000\n',
        ["{f}:job.b.page_limit: expected integer between 1 and 1000, got 5000"],
        id="out-of-range",
    ),
    pytest.param(
        '[job.m]\nkind = "migrate"\nproject = "a"\nto_project = "b"\nmax_inflight_mb = 0\non_error = "drop"\n'
        '[destination]\napi_key_env = "DEST_BRAINTRUST_API_KEY"\n',
        [
            "{f}:job.m.max_inflight_mb: expected integer >= 1, got 0",
            '{f}:job.m.on_error: expected one of "fail", "skip", got "drop"',
        ],
        id="migrate-load-keys",
    ),
    pytest.param(
        '[job.b]\nproject = "p"\nout = "o"\nkeep_runs = 0\n',
        ["{f}:job.b.keep_runs: expected integer >= 1, got 0"],
        id="keep-runs-zero",
    ),
    pytest.param(
        '[job.b]\nprojects = ["a", 3]\nout = "o"\n',
        ["{f}:job.b.projects: expected a string or an array of strings, got an array"],
        id="bad-list",
    ),
    pytest.param(
        '[job.b]\nkind = "copy"\n',
        ['{f}:job.b.kind: expected one of "export", "migrate", got "copy"'],
        id="unknown-kind",
    ),
    pytest.param(
        '[source]\napi_key = "sk-secret"\n' + GOOD_EXPORT,
        [
            "{f}:source.api_key: a literal API key is not allowed in a file; "
            "name an environment variable with api_key_env"
        ],
        id="literal-key",
    ),
    pytest.param(
        '[source]\napi_key_env = "NOPE_KEY"\n' + GOOD_EXPORT,
        ["{f}:source.api_key_env: environment variable NOPE_KEY is not set (it must hold the API key)"],
        id="missing-env",
    ),
    pytest.param(
        '[job.m]\nkind = "migrate"\nproject = "a"\nto_project = "b"\n',
        ["{f}:destination: required table missing (job.m needs it)"],
        id="migrate-without-destination",
    ),
    pytest.param(
        '[source]\ntimeout = -1\n[sauce]\nx = 1\n' + GOOD_EXPORT,
        ["{f}:sauce: unknown key (expected one of: destination, job, source)", "{f}:source.timeout: expected number > 0, got -1"],
        id="two-problems-at-once",
    ),
    pytest.param("[job.b\n", ["{f}: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 7)"], id="bad-toml"),
    pytest.param('title = "x"\n', ["{f}:title: unknown key (expected one of: destination, job, source)", "{f}: no jobs (add a [job.NAME] table)"], id="no-jobs"),
    pytest.param("job = 3\n", ["{f}:job: expected a table, got 3"], id="job-not-table"),
    pytest.param(
        '[job.b]\nproject = "p"\nout = "o"\nfilter = "name = "\nobjects = ["logs", "foo"]\n',
        ["{f}:job.b.filter: syntax error at line 1, column 6 near '='",
         "{f}:job.b.objects: cannot understand 'foo' (expected logs, datasets, experiments, dataset:NAME, "
         "experiment:NAME, project_tags, span_iframes, functions, prompts, project_scores, views, automations, "
         "settings or config)"],
        id="filter-and-objects-parsed-as-a-run-would",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_config_rejected_with_exact_message(tmp_path: Path, text: str, expected: list[str]) -> None:
    code, stdout, stderr = check(tmp_path, text)
    f = tmp_path / "job.toml"
    assert code == 2
    assert stdout == ""
    assert stderr.splitlines() == [f"btpipe: error: {e.format(f=f)}" for e in expected]


def test_environment_value_is_checked_and_named(tmp_path: Path) -> None:
    code, _, stderr = check(tmp_path, GOOD_EXPORT, {"BTPIPE_WORKERS": "many"})
    assert code == 2
    assert stderr == 'btpipe: error: env BTPIPE_WORKERS: expected integer, got "many"\n'
    three_jobs = GOOD_EXPORT + "".join(f'[job.{n}]\nproject = "p"\nout = "out"\n' for n in ("c", "d"))
    code, _, stderr = check(tmp_path, three_jobs, {"BTPIPE_WORKERS": "many"})
    assert (code, stderr) == (
        2,
        'btpipe: error: env BTPIPE_WORKERS: expected integer, got "many"\n',
    )  # said once
    code, _, stderr = check(tmp_path, GOOD_EXPORT, {"BTPIPE_PROJECTS": ","})
    assert code == 2
    assert (
        stderr
        == 'btpipe: error: env BTPIPE_PROJECTS: expected a comma-separated list of non-empty names, got ","\n'
    )


def test_flag_value_is_checked_and_named(tmp_path: Path) -> None:
    code, _, stderr = check(tmp_path, GOOD_EXPORT, None, "--set", "page_limit=0")
    assert code == 2
    assert stderr == "btpipe: error: --set page_limit: expected integer between 1 and 1000, got 0\n"
    # a filter is parsed as a run would: its problem is named by where the filter came from
    code, _, stderr = check(tmp_path, GOOD_EXPORT, None, "--set", "filter=name = ")
    assert (code, stderr) == (2, "btpipe: error: --set filter: syntax error at line 1, column 6 near '='\n")
    code, _, stderr = check(tmp_path, GOOD_EXPORT, {"BTPIPE_FILTER": "name = "})
    assert (code, stderr) == (
        2,
        "btpipe: error: env BTPIPE_FILTER: syntax error at line 1, column 6 near '='\n",
    )


def test_project_flag_replaces_projects_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('[job.b]\nprojects = ["a", "b"]\nout = "o"\n')
    jobs = load_job_file(str(path), environ={"BRAINTRUST_API_KEY": "k"}, overrides={"project": "c"})
    assert isinstance(jobs.jobs["b"], ExportJobConfig) and jobs.jobs["b"].projects == ("c",)
    path.write_text('[job.b]\nprojects = ["a"]\nproject = "b"\nout = "o"\n')
    code, _, stderr = check(tmp_path, path.read_text())
    assert code == 2
    assert stderr == f"btpipe: error: {path}:job.b.project: give project or projects, not both\n"


def test_unknown_flag_key_is_reported(tmp_path: Path) -> None:
    code, _, stderr = check(
        tmp_path, GOOD_EXPORT, None, "--set", "colour=red", "--set", "source.api_url=http://x"
    )
    assert code == 2
    assert stderr == "btpipe: error: --set colour: unknown key\n"


def test_precedence_flags_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        '[source]\napi_url = "http://file"\n[job.b]\nproject = "p"\nout = "file-out"\nworkers = 2\n'
    )
    env = {
        "BRAINTRUST_API_KEY": "sk-9f8e",
        "BRAINTRUST_API_URL": "http://env",
        "BTPIPE_OUT": "env-out",
        "BTPIPE_WORKERS": "3",
    }
    jobs = load_job_file(str(path), environ=env, overrides={"out": "flag-out"})
    job = jobs.jobs["b"]
    assert isinstance(job, ExportJobConfig)
    assert (job.out, job.workers, job.page_limit, job.format) == ("flag-out", 3, 1000, "parquet")
    assert jobs.source is not None and jobs.source.api_url == "http://env"
    assert jobs.source.api_key == "sk-9f8e" and "sk-9f8e" not in repr(jobs.source)
    no_env = load_job_file(str(path), environ={"BRAINTRUST_API_KEY": "k"})
    assert no_env.source is not None and no_env.source.api_url == "http://file"
    assert (no_env.jobs["b"].out, no_env.jobs["b"].workers) == ("file-out", 2)


def test_only_selected_jobs_need_their_connections(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        GOOD_EXPORT + '[destination]\napi_key_env = "DEST_KEY"\n'
        '[job.m]\nkind = "migrate"\nproject = "a"\nto_project = "b"\n'
    )
    jobs = load_job_file(str(path), only=["b"], environ={"BRAINTRUST_API_KEY": "k"})
    assert list(jobs.jobs) == ["b"] and jobs.destination is None
    full = load_job_file(str(path), environ={"BRAINTRUST_API_KEY": "k", "DEST_KEY": "d"})
    migrate = full.jobs["m"]
    assert isinstance(migrate, MigrateJobConfig) and migrate.verify is True
    assert full.destination is not None and full.destination.api_key == "d"


def test_every_export_and_migrate_key_reaches_the_options(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        '[job.b]\nproject = "p"\nout = "o"\nencoders = 0\nmin_rows_per_range = 10\nrow_group_rows = 7\n'
        'row_group_mb = 2\nfile_mb = 3\ncompression = "none"\nformat = "jsonl"\n'
        '[destination]\napi_key_env = "DEST_KEY"\n'
        '[job.m]\nkind = "migrate"\nproject = "a"\nto_project = "b"\nmax_batch_bytes = 900\n'
        'max_inflight_mb = 2\non_error = "skip"\nerror_file = "e.jsonl"\n'
    )
    jobs = load_job_file(str(path), environ={"BRAINTRUST_API_KEY": "k", "DEST_KEY": "d"})
    export, migrate = jobs.jobs["b"], jobs.jobs["m"]
    assert isinstance(export, ExportJobConfig) and isinstance(migrate, MigrateJobConfig)
    options = export.export_options("p", incremental=False)
    assert (options.encoders, options.min_rows_per_range, options.row_group_rows, options.row_group_mb) == (
        0, 10, 7, 2)  # fmt: skip
    assert (options.file_bytes, options.compression, options.format) == (3 * 2**20, "none", "jsonl")
    load = migrate.migrate_options().load
    assert (load.max_batch_bytes, load.error_file) == (900, "e.jsonl")
    assert (load.insert.max_bytes_in_flight, load.insert.on_error) == (2 * 2**20, "skip")


def test_migrate_creates_the_destination_project_only_when_asked(tmp_path: Path) -> None:
    """The default is the command line's (``--create-project`` is off unless given)."""
    path = tmp_path / "job.toml"
    path.write_text(
        '[destination]\napi_key_env = "D"\n[job.m]\nkind = "migrate"\nproject = "a"\nto_project = "b"\n'
    )
    jobs = load_job_file(str(path), environ={"BRAINTRUST_API_KEY": "k", "D": "d"})
    assert (
        isinstance(jobs.jobs["m"], MigrateJobConfig)
        and jobs.jobs["m"].migrate_options().create_project is False
    )
    shipped = load_job_file(str(CONFIGS / "migrate-project.toml"), environ={**KEYS})
    shipped_job = shipped.jobs["migrate"]
    assert isinstance(shipped_job, MigrateJobConfig) and shipped_job.migrate_options().create_project is True


def test_objects_from_text_keep_quoted_names(tmp_path: Path) -> None:
    """``--set objects=`` and ``BTPIPE_OBJECTS`` are cut as ``--objects`` is: a quoted name keeps
    its comma and its blanks; a quote inside a name is a character of it."""
    path = tmp_path / "job.toml"
    path.write_text(GOOD_EXPORT)
    text = 'logs,dataset:"a, b",dataset:5" screen'
    by_flag = load_job_file(str(path), environ={"BRAINTRUST_API_KEY": "k"}, overrides={"objects": text})
    by_env = load_job_file(str(path), environ={"BRAINTRUST_API_KEY": "k", "BTPIPE_OBJECTS": text})
    for jobs in (by_flag, by_env):
        assert jobs.jobs["b"].objects == ("logs", 'dataset:"a, b"', 'dataset:5" screen')
        assert parse_selection(jobs.jobs["b"].export_options("p", incremental=False).objects) == [
            Selector("project_logs"), Selector("dataset", "a, b"), Selector("dataset", '5" screen')
        ]  # fmt: skip
    code, _, stderr = check(tmp_path, GOOD_EXPORT, {"BTPIPE_OBJECTS": 'dataset:"open'})
    assert code == 2 and stderr.startswith(
        "btpipe: error: env BTPIPE_OBJECTS: expected a comma-separated list"
    ), stderr
