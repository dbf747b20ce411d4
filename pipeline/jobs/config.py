"""TOML job files -> typed, checked settings for ``btpipe run`` and ``btpipe validate``.

A job file has up to two connections and any number of named jobs::

    [source]                      # where rows are read from
    api_url = "https://api.braintrust.dev"
    api_key_env = "BRAINTRUST_API_KEY"   # the NAME of an environment variable, never a key

    [destination]                 # migrate jobs only
    api_key_env = "DEST_BRAINTRUST_API_KEY"

    [job.nightly]
    kind = "export"
    projects = ["support-bot"]
    out = "s3://backups/braintrust"

Each value comes from the first of: a ``--set KEY=VALUE`` flag (``--out`` is short for
``--set out=...``), the environment (``BTPIPE_<KEY>`` for job keys; the variable named by
``api_url_env`` for a connection's URL), the file, the defaults below. Every problem is
reported, not just the first, as ``FILE:job.NAME.key: expected integer, got "x"``.
A literal ``api_key`` in a file is refused: keys live in the environment only.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from pipeline.api.btql import parse_filter
from pipeline.api.client import ClientSettings, check_endpoint, check_key
from pipeline.common.chains import Scope, format_refusal, incremental_refusal
from pipeline.common.defaults import (
    API_KEY_ENV,
    API_URL,
    API_URL_ENV,
    ATTACHMENT_WORKERS,
    ATTACHMENTS,
    BATCH_ROWS,
    COMPRESSION,
    CONNECTIONS,
    CREATE_PROJECT,
    ENCODERS,
    ERROR_FILE,
    EXPORT_WORKERS,
    FILE_MB,
    FILE_ROWS,
    FILTER,
    FORMAT,
    FULL_EVERY,
    IMPERSONATE,
    INCREMENTAL,
    INTO_EXISTING,
    KEEP_RUNS,
    LOAD_WORKERS,
    MAX_ATTACHMENT_MB,
    MAX_BACKOFF,
    MAX_BATCH_BYTES,
    MAX_INFLIGHT_MB,
    MAX_RETRIES,
    MB,
    MIN_ROWS_PER_RANGE,
    OBJECTS,
    ON_ERROR,
    PAGE_LIMIT,
    PREFETCH,
    RANGES_PER_OBJECT,
    READ_TIMEOUT,
    RETRY_JITTER,
    ROW_GROUP_MB,
    ROW_GROUP_ROWS,
    SHAPE,
    STATE_DIR,
    THROTTLE_PATIENCE,
    VERIFY,
    BadValue,
    Setting,
    show,
)
from pipeline.common.errors import UsageError, variable_name
from pipeline.common.selection import parse_selection, split_items
from pipeline.jobs.fields import Kind, choice, setting, string, string_list

if TYPE_CHECKING:
    from pipeline.export.runner import ExportOptions
    from pipeline.load.migrate import MigrateOptions

ENV_PREFIX = "BTPIPE_"
JOB_KINDS = ("export", "migrate")

#: The tunable settings each table takes; their keys, types, ranges and defaults are the
#: records' (:mod:`pipeline.common.defaults`), the same the command line uses.
CONNECTION_SETTINGS = (API_URL, API_URL_ENV, API_KEY_ENV, IMPERSONATE, MAX_RETRIES, MAX_BACKOFF, THROTTLE_PATIENCE,
                       RETRY_JITTER, READ_TIMEOUT, CONNECTIONS)  # fmt: skip
EXPORT_SETTINGS = (FORMAT, COMPRESSION, FILTER, SHAPE, INCREMENTAL, KEEP_RUNS, FULL_EVERY, EXPORT_WORKERS,
                   RANGES_PER_OBJECT, MIN_ROWS_PER_RANGE, PAGE_LIMIT, PREFETCH, ENCODERS, ROW_GROUP_ROWS,
                   ROW_GROUP_MB, FILE_ROWS, FILE_MB, ATTACHMENTS, MAX_ATTACHMENT_MB, ATTACHMENT_WORKERS)  # fmt: skip
MIGRATE_SETTINGS = (PAGE_LIMIT, LOAD_WORKERS, BATCH_ROWS, MAX_BATCH_BYTES, MAX_INFLIGHT_MB, ON_ERROR, ERROR_FILE,
                    STATE_DIR, CREATE_PROJECT, INTO_EXISTING, VERIFY, MAX_ATTACHMENT_MB,
                    ATTACHMENT_WORKERS)  # fmt: skip


def _keys(settings: tuple[Setting[Any], ...]) -> dict[str, Kind]:
    return {s.key: setting(s) for s in settings if s.key}


CONNECTION_KEYS: dict[str, Kind] = _keys(CONNECTION_SETTINGS)

#: ``objects`` is the OBJECTS setting, but a file may also give it as an array.
_COMMON_JOB_KEYS: dict[str, Kind] = {
    "kind": choice(*JOB_KINDS),
    "objects": string_list(split_items),
    "project": string(),
}

JOB_KEYS: dict[str, dict[str, Kind]] = {
    "export": {**_COMMON_JOB_KEYS, "projects": string_list(), "out": string(), **_keys(EXPORT_SETTINGS)},
    "migrate": {**_COMMON_JOB_KEYS, "to_project": string(), **_keys(MIGRATE_SETTINGS)},
}

#: Which connections each kind of job talks to.
NEEDS: dict[str, tuple[str, ...]] = {"export": ("source",), "migrate": ("source", "destination")}


class ConfigError(UsageError):
    """One or more problems in a job file, each on its own line, each once (a bad environment
    variable is found once per job)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(dict.fromkeys(problems))
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Connection:
    """An API endpoint and the key read from the environment variable the file names.

    ``side`` is the table it came from (``source`` or ``destination``): each table's settings,
    ``impersonate`` included, apply to its own side only, and every error of a migrate job's
    client names its side."""

    api_url: str
    api_key_env: str
    api_key: str = field(repr=False)
    side: str = "source"
    impersonate: str | None = IMPERSONATE.default
    max_retries: int = MAX_RETRIES.default
    max_backoff: float = MAX_BACKOFF.default
    throttle_patience: float = THROTTLE_PATIENCE.default
    retry_jitter: float = RETRY_JITTER.default
    timeout: float = READ_TIMEOUT.default
    connections: int = CONNECTIONS.default

    def client_settings(self, *, name_side: bool = False) -> ClientSettings:
        """The client settings of this side; ``name_side`` when the job talks to both sides."""
        settings = ClientSettings.from_options(
            api_url=self.api_url,
            api_key=self.api_key,
            impersonate=self.impersonate,
            max_retries=self.max_retries,
            max_backoff=self.max_backoff,
            throttle_patience=self.throttle_patience,
            retry_jitter=self.retry_jitter,
            timeout=self.timeout,
            connections=self.connections,
        )
        return replace(settings, side=self.side) if name_side else settings


_OBJECTS = tuple(OBJECTS.default.split(","))


@dataclass(frozen=True)
class ExportJobConfig:
    """An export of one or more projects into one output root, optionally pruned to ``keep_runs``."""

    name: str
    projects: tuple[str, ...]
    out: str
    objects: tuple[str, ...] = _OBJECTS
    format: str = FORMAT.default
    compression: str | None = COMPRESSION.default
    filter: str | None = FILTER.default
    shape: str = SHAPE.default
    incremental: bool = INCREMENTAL.default
    keep_runs: int | None = KEEP_RUNS.default
    full_every: int | None = FULL_EVERY.default
    workers: int | None = EXPORT_WORKERS.default
    ranges_per_object: int | None = RANGES_PER_OBJECT.default
    min_rows_per_range: int = MIN_ROWS_PER_RANGE.default
    page_limit: int = PAGE_LIMIT.default
    prefetch: int = PREFETCH.default
    encoders: int = ENCODERS.default
    row_group_rows: int = ROW_GROUP_ROWS.default
    row_group_mb: int = ROW_GROUP_MB.default
    file_rows: int = FILE_ROWS.default
    file_mb: int = FILE_MB.default
    attachments: str = ATTACHMENTS.default
    max_attachment_mb: int = MAX_ATTACHMENT_MB.default
    attachment_workers: int = ATTACHMENT_WORKERS.default
    kind: str = "export"

    def export_options(self, project: str, *, incremental: bool) -> ExportOptions:
        from pipeline.export.runner import ExportOptions  # stages load only when a job runs

        return ExportOptions(
            project=project,
            out=self.out,
            objects=",".join(self.objects),
            format=self.format,
            compression=self.compression,
            filter=self.filter,
            shape=self.shape,
            incremental=incremental,
            workers=self.workers,
            ranges_per_object=self.ranges_per_object,
            min_rows_per_range=self.min_rows_per_range,
            page_limit=self.page_limit,
            prefetch=self.prefetch,
            encoders=self.encoders,
            row_group_rows=self.row_group_rows,
            row_group_mb=self.row_group_mb,
            file_rows=self.file_rows,
            file_bytes=self.file_mb * MB,
            attachments=self.attachments,
            max_attachment_mb=self.max_attachment_mb,
            attachment_workers=self.attachment_workers,
        )


@dataclass(frozen=True)
class MigrateJobConfig:
    """Copy a project's objects from ``[source]`` to ``to_project`` at ``[destination]``."""

    name: str
    project: str
    to_project: str
    objects: tuple[str, ...] = _OBJECTS
    create_project: bool = CREATE_PROJECT.default
    into_existing: bool = INTO_EXISTING.default
    verify: bool = VERIFY.default
    workers: int = LOAD_WORKERS.default
    page_limit: int = PAGE_LIMIT.default
    batch_rows: int = BATCH_ROWS.default
    max_batch_bytes: int | None = MAX_BATCH_BYTES.default
    max_inflight_mb: int = MAX_INFLIGHT_MB.default
    on_error: Literal["fail", "skip"] = ON_ERROR.default
    error_file: str | None = ERROR_FILE.default
    state_dir: str = STATE_DIR.default
    max_attachment_mb: int = MAX_ATTACHMENT_MB.default
    attachment_workers: int = ATTACHMENT_WORKERS.default
    kind: str = "migrate"

    def migrate_options(self) -> MigrateOptions:
        from pipeline.load.insert import InsertOptions
        from pipeline.load.migrate import MigrateOptions
        from pipeline.load.run import LoadOptions

        return MigrateOptions(
            from_project=self.project,
            to_project=self.to_project,
            objects=",".join(self.objects),
            create_project=self.create_project,
            page_limit=self.page_limit,
            load=LoadOptions(
                batch_rows=self.batch_rows,
                max_batch_bytes=self.max_batch_bytes,
                insert=InsertOptions(
                    workers=self.workers,
                    max_bytes_in_flight=self.max_inflight_mb * MB,
                    on_error=self.on_error,
                ),
                state_dir=self.state_dir,
                error_file=self.error_file,
                into_existing=self.into_existing,
                max_attachment_mb=self.max_attachment_mb,
                attachment_workers=self.attachment_workers,
            ),
        )


JobConfig = ExportJobConfig | MigrateJobConfig


@dataclass(frozen=True)
class JobFile:
    path: str
    jobs: dict[str, JobConfig]
    source: Connection | None = None
    destination: Connection | None = None


@dataclass
class _Value:
    """A raw value and where it came from (for messages)."""

    raw: Any
    where: str
    layer: int = 0  # 0 file, 1 environment, 2 flag: the higher wins

    @property
    def text(self) -> bool:
        """Values from the environment or a flag are text to parse, not TOML values to check."""
        return self.layer > 0


#: Keys that say the same thing two ways; a higher layer setting one replaces both.
_ALTERNATIVES = (("project", "projects"),)


class _Loader:
    def __init__(self, path: str, environ: Mapping[str, str], overrides: Mapping[str, str]) -> None:
        self.path = path
        self.environ = environ
        self.overrides = overrides
        #: Where each checked value came from (a file key, a variable, a flag), by key path.
        self.origins: dict[str, str] = {}
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def at(self, keypath: str) -> str:
        return f"{self.path}:{keypath}"

    def read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as fh:
                return tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([f"{self.path}: no such file"]) from None
        except OSError as exc:
            raise ConfigError([f"{self.path}: cannot read ({exc.strerror or exc})"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{self.path}: invalid TOML: {exc}"]) from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8 text
            raise ConfigError([f"{self.path}: not UTF-8 text (byte {exc.start} of the file)"]) from None

    def _check_texts(self, keypath: str, values: dict[str, Any]) -> None:
        """Parse the job's ``filter`` and ``objects`` as a run would, so ``validate`` refuses
        what ``run`` would, each problem named by its file and key."""
        checks = (("filter", parse_filter), ("objects", parse_selection))
        for key, parse in checks:
            if values.get(key):
                try:
                    where = self.origins.get(f"{keypath}.{key}") or self.at(f"{keypath}.{key}")
                    parse(_as_text(values[key]), where)
                except UsageError as exc:
                    self.problems.append(str(exc))

    def values(self, table: dict[str, Any], keypath: str, keys: dict[str, Kind], env: bool) -> dict[str, Any]:
        """Merge file, environment and flags for one table, then check every value."""
        merged: dict[str, _Value] = {}
        for key, raw in table.items():
            if key in keys:
                merged[key] = _Value(raw, self.at(f"{keypath}.{key}"))
            elif key == "api_key" and "api_key_env" in keys:
                self.fail(
                    self.at(f"{keypath}.{key}"),
                    "a literal API key is not allowed in a file; "
                    "name an environment variable with api_key_env",
                )
            else:
                self.fail(
                    self.at(f"{keypath}.{key}"), f"unknown key (expected one of: {', '.join(sorted(keys))})"
                )
        for key in keys:
            if key == "kind":
                continue
            name = f"{ENV_PREFIX}{key.upper()}"
            if env and self.environ.get(name):  # set and not empty
                merged[key] = _Value(self.environ[name], f"env {name}", layer=1)
        prefix = "" if keypath.startswith("job.") else f"{keypath}."
        for flag_key, text in self.overrides.items():
            if prefix and flag_key.startswith(prefix) and flag_key[len(prefix) :] in keys:
                merged[flag_key[len(prefix) :]] = _Value(text, f"--set {flag_key}", layer=2)
            elif not prefix and flag_key in keys and flag_key != "kind":
                merged[flag_key] = _Value(text, f"--set {flag_key}", layer=2)
        for one, other in _ALTERNATIVES:
            if one in merged and other in merged:
                if merged[one].layer == merged[other].layer == 0:
                    self.fail(self.at(f"{keypath}.{one}"), f"give {one} or {other}, not both")
                elif merged[one].layer != merged[other].layer:
                    del merged[one if merged[one].layer < merged[other].layer else other]
        checked: dict[str, Any] = {}
        for key, value in merged.items():
            self.origins[f"{keypath}.{key}"] = value.where
            kind = keys[key]
            try:
                checked[key] = kind.parse(value.raw) if value.text else kind.check(value.raw)
            except BadValue as exc:
                self.fail(value.where, str(exc))
        return checked

    def table(self, data: dict[str, Any], key: str, keypath: str) -> dict[str, Any] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(self.at(keypath), f"expected a table, got {show(value)}")
            return None
        return value

    def connection(self, data: dict[str, Any], name: str, needed_by: str) -> Connection | None:
        table = self.table(data, name, name)
        if table is None:
            if name == "source":
                table = {}
            else:
                self.fail(self.at(name), f"required table missing ({needed_by} needs it)")
                return None
        values = self.values(table, name, CONNECTION_KEYS, env=False)
        api_url = values.pop("api_url", API_URL.default)
        url_env = values.pop("api_url_env", API_URL_ENV.default if name == "source" else None)
        if url_env and self.environ.get(url_env) and f"{name}.api_url" not in self.overrides:
            api_url = self.environ[url_env]
        key_env = values.pop("api_key_env", API_KEY_ENV.default)
        api_key = self.environ.get(key_env, "")
        if not api_key:
            self.fail(
                self.at(f"{name}.api_key_env"),
                f"environment variable {variable_name(key_env)} is not set (it must hold the API key)",
            )
        for key, check in (
            ("api_url", lambda: check_endpoint(api_url, "", url_name="the API URL")),
            ("api_key_env", lambda: check_key(api_key, f"the key in {variable_name(key_env)}")),
        ):
            try:
                check()
            except UsageError as exc:
                self.fail(self.at(f"{name}.{key}"), str(exc))
        return Connection(api_url=api_url, api_key_env=key_env, api_key=api_key, side=name, **values)

    def job(self, name: str, table: Any) -> JobConfig | None:
        keypath = f"job.{name}"
        if not isinstance(table, dict):
            self.fail(self.at(keypath), f"expected a table, got {show(table)}")
            return None
        kind = table.get("kind", "export")
        if kind not in JOB_KINDS:
            self.fail(self.at(f"{keypath}.kind"), f"expected {choice(*JOB_KINDS).expected}, got {show(kind)}")
            return None
        before = len(self.problems)
        values = self.values(table, keypath, JOB_KEYS[kind], env=True)
        if kind == "export":
            projects = tuple(values.pop("projects", ())) + (
                (values.pop("project"),) if "project" in values else ()
            )
            if not projects and len(self.problems) == before:
                self.fail(self.at(f"{keypath}.projects"), "required key missing (give project or projects)")
            required: tuple[str, ...] = ("out",)
        else:
            required = ("project", "to_project")
        for key in required:
            if key not in values and not any(
                p.startswith(self.at(f"{keypath}.{key}:")) for p in self.problems
            ):
                self.fail(self.at(f"{keypath}.{key}"), "required key missing")
        self._check_texts(keypath, values)
        refusal = incremental_refusal(Scope(values.get("shape") or "spans", values.get("filter") or ""))
        if kind == "export" and values.get("incremental") and refusal:
            self.fail(self.at(f"{keypath}.incremental"), refusal)
        unfit = format_refusal(str(values.get("format") or ""), str(values.get("shape") or "spans"))
        if kind == "export" and unfit:
            self.fail(self.at(f"{keypath}.shape"), unfit)
        if len(self.problems) > before:
            return None
        if kind == "export":
            return ExportJobConfig(name=name, projects=projects, **values)
        return MigrateJobConfig(name=name, **values)


def _as_text(value: Any) -> str:
    return ",".join(value) if isinstance(value, list | tuple) else str(value)


def load_job_file(
    path: str,
    *,
    only: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> JobFile:
    """Read and check ``path``; ``only`` limits checking (and connections) to those jobs.

    Raises :class:`ConfigError` listing every problem found.
    """
    loader = _Loader(path, os.environ if environ is None else environ, overrides or {})
    data = loader.read()
    for key in data:
        if key not in ("source", "destination", "job"):
            loader.fail(loader.at(key), "unknown key (expected one of: destination, job, source)")
    jobs_table = loader.table(data, "job", "job")
    if not jobs_table:
        if jobs_table is None and "job" not in data:
            loader.fail(path, "no jobs (add a [job.NAME] table)")
        raise ConfigError(loader.problems or [f"{path}: no jobs (add a [job.NAME] table)"])
    for name in only:
        if name not in jobs_table:
            loader.fail(path, f"no job named {show(name)} (jobs: {', '.join(jobs_table)})")
    selected = [n for n in jobs_table if not only or n in only]
    settable = {k for keys in JOB_KEYS.values() for k in keys if k != "kind"} | {
        f"{conn}.{k}" for conn in NEEDS["migrate"] for k in CONNECTION_KEYS
    }
    for key in loader.overrides:
        if key not in settable:
            loader.fail(f"--set {key}", "unknown key")
    jobs: dict[str, JobConfig] = {}
    for name in selected:
        job = loader.job(name, jobs_table[name])
        if job is not None:
            jobs[name] = job
    needed: dict[str, str] = {}
    for name in selected:
        table = jobs_table[name]
        kind = table.get("kind", "export") if isinstance(table, dict) else None
        for conn in NEEDS.get(str(kind), ()):
            needed.setdefault(conn, f"job.{name}")
    connections = {conn: loader.connection(data, conn, by) for conn, by in needed.items()}
    if loader.problems:
        raise ConfigError(loader.problems)
    return JobFile(
        path=path, jobs=jobs, source=connections.get("source"), destination=connections.get("destination")
    )
