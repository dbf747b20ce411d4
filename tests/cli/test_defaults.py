"""Defaults declared once: the command line, job files, the library's options and the
documentation table all read the records of :mod:`pipeline.common.defaults`, and refuse a
value out of range with the same words instead of clamping it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from pipeline.api.client import ClientSettings
from pipeline.cli import main
from pipeline.cli.export import export
from pipeline.cli.jobs import validate
from pipeline.cli.load import import_command, migrate_command
from pipeline.common import defaults
from pipeline.common.defaults import SETTINGS, BadValue, defaults_table_markdown
from pipeline.export.runner import ExportOptions
from pipeline.jobs.config import CONNECTION_KEYS, JOB_KEYS, ExportJobConfig, MigrateJobConfig, load_job_file
from pipeline.load.migrate import MigrateOptions
from pipeline.load.run import LoadOptions
from tests.cli.test_help import walk

JOB = '[job.b]\nproject = "p"\nout = "o"\n'


def parsed(command: click.Command, *args: str) -> dict[str, Any]:
    """The parameters ``command`` gets from ``args``, without running it."""
    return command.make_context(command.name or "", list(args)).params


def test_export_flags_without_values_build_the_library_defaults() -> None:
    params = parsed(export, "--project", "p", "--out", "o")
    assert params["page_limit"] == defaults.PAGE_LIMIT.default == ExportOptions("p", "o").page_limit
    job = ExportJobConfig(name="b", projects=("p",), out="o")
    assert job.export_options("p", incremental=False) == ExportOptions("p", "o")


def test_migrate_and_import_flags_and_jobs_build_the_library_defaults() -> None:
    for command, extra in ((migrate_command, ["--from-project", "a"]), (import_command, ["--in", "x"])):
        params = parsed(command, *extra, "--to-project", "b")
        for setting in (
            defaults.LOAD_WORKERS,
            defaults.BATCH_ROWS,
            defaults.MAX_INFLIGHT_MB,
            defaults.STATE_DIR,
        ):
            assert params[setting.name] == setting.default, (command.name, setting.name)
    job = MigrateJobConfig(name="m", project="a", to_project="b")
    assert job.migrate_options() == MigrateOptions(from_project="a", to_project="b", load=LoadOptions())


def test_every_setting_with_a_flag_is_an_option_with_its_default() -> None:
    options = {(p.opts[0], p.name, p.default) for _, command in walk(main, "btpipe") for p in command.params}
    assert [s.name for s in SETTINGS if s.flag and (s.flag, s.name, s.default) not in options] == []


def test_every_key_of_a_setting_is_a_job_file_key() -> None:
    keys = set(CONNECTION_KEYS) | {k for table in JOB_KEYS.values() for k in table}
    assert {s.key for s in SETTINGS if s.key} <= keys


def test_client_settings_from_options_defaults_to_the_records() -> None:
    assert ClientSettings.from_options() == ClientSettings()
    assert ClientSettings().retry.max_attempts == defaults.MAX_RETRIES.default


@pytest.mark.parametrize(
    ("flag", "key", "value", "message"),
    [
        ("--workers", "workers", "0", "expected integer >= 1, got 0"),
        ("--page-limit", "page_limit", "1001", "expected integer between 1 and 1000, got 1001"),
        ("--encoders", "encoders", "-1", "expected integer between 0 and 64, got -1"),
        ("--file-mb", "file_mb", "x", 'expected integer, got "x"'),
        ("--format", "format", "csv", 'expected one of "parquet", "jsonl", "delta", got "csv"'),
    ],
)
def test_out_of_range_is_refused_alike_on_the_command_line_and_in_a_job_file(
    tmp_path: Path, flag: str, key: str, value: str, message: str
) -> None:
    env = {"BRAINTRUST_API_KEY": "k", "BRAINTRUST_API_URL": "http://127.0.0.1:9"}
    args = ["export", "--project", "p", "--out", str(tmp_path), flag, value]
    cli = CliRunner().invoke(main, args, env=env, prog_name="btpipe")
    assert cli.exit_code == 2
    (line,) = cli.stderr.splitlines()
    assert line == f"btpipe: error: Invalid value for '{flag}': {message} (see 'btpipe export --help')"
    path = tmp_path / "job.toml"
    path.write_text(JOB)
    job = CliRunner().invoke(validate, [str(path), "--set", f"{key}={value}"], env=env)
    assert job.exit_code == 2
    assert job.stderr == f"btpipe: error: --set {key}: {message}\n"
    path.write_text(JOB + f"{key} = {value if value.lstrip('-').isdigit() else json.dumps(value)}\n")
    in_file = CliRunner().invoke(validate, [str(path)], env=env)
    assert in_file.stderr == f"btpipe: error: {path}:job.b.{key}: {message}\n"


def test_a_setting_checks_typed_values_and_text_by_one_rule() -> None:
    assert defaults.PAGE_LIMIT.check(1000) == 1000 and defaults.PAGE_LIMIT.parse(" 7 ") == 7
    assert defaults.MAX_BACKOFF.check(3) == 3.0 and isinstance(defaults.MAX_BACKOFF.check(3), float)
    assert defaults.INCREMENTAL.parse("yes") is True and defaults.INCREMENTAL.parse("off") is False
    for setting, value in ((defaults.PAGE_LIMIT, True), (defaults.MAX_BACKOFF, 0), (defaults.INCREMENTAL, "yes"),
                           (defaults.ON_ERROR, "ignore"), (defaults.STATE_DIR, "")):  # fmt: skip
        with pytest.raises(BadValue):
            setting.check(value)


def test_the_documentation_table_lists_every_setting_once() -> None:
    table = defaults_table_markdown().splitlines()
    assert table[0] == "| for | flag | job-file key | default | allowed | meaning |"
    assert len(table) == 2 + len(SETTINGS)
    assert (
        "| export, migrate | `--page-limit` | `page_limit` | `1000` | 1..1000 | Rows per /btql page |"
        in table
    )
    assert all(row.count(" | ") == 5 for row in table[2:])


def test_shipped_job_files_take_the_defaults_they_do_not_set() -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    jobs = load_job_file(str(configs / "nightly-backup.toml"), environ={"BRAINTRUST_API_KEY": "k"})
    (job,) = jobs.jobs.values()
    assert isinstance(job, ExportJobConfig)
    assert (job.workers, job.page_limit, job.encoders) == (None, 1000, 1)
    assert job.export_options("p", incremental=False).range_workers == 12
    assert jobs.source is not None and jobs.source.client_settings() == ClientSettings(
        api_url=defaults.API_URL.default, api_key="k"
    )
