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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.api.client import DEFAULT_API_URL, ClientSettings
from pipeline.cli.common import make_settings
from pipeline.common.errors import UsageError
from pipeline.common.jobstate import DEFAULT_STATE_DIR
from pipeline.jobs.fields import BadValue, Kind, boolean, choice, integer, number, show, string, string_list

if TYPE_CHECKING:
    from pipeline.export.runner import ExportOptions
    from pipeline.load.migrate import MigrateOptions

ENV_PREFIX = "BTPIPE_"
JOB_KINDS = ("export", "migrate")

CONNECTION_KEYS: dict[str, Kind] = {
    "api_url": string(),
    "api_url_env": string(),
    "api_key_env": string(),
    "impersonate": string(),
    "max_retries": integer(1),
    "max_backoff": number(),
    "timeout": number(),
    "connections": integer(1),
}

_COMMON_JOB_KEYS: dict[str, Kind] = {
    "kind": choice(*JOB_KINDS),
    "objects": string_list(),
    "workers": integer(1),
    "page_limit": integer(1, 1000),
}

JOB_KEYS: dict[str, dict[str, Kind]] = {
    "export": {
        **_COMMON_JOB_KEYS,
        "project": string(),
        "projects": string_list(),
        "out": string(),
        "format": choice("parquet", "jsonl"),
        "compression": choice("none", "gzip", "zstd"),
        "filter": string(),
        "shape": choice("spans", "traces", "summary"),
        "incremental": boolean(),
        "keep_runs": integer(1),
        "full_every": integer(1),
        "ranges_per_object": integer(1),
        "prefetch": integer(1),
        "file_rows": integer(1),
        "file_mb": integer(1),
    },
    "migrate": {
        **_COMMON_JOB_KEYS,
        "project": string(),
        "to_project": string(),
        "create_project": boolean(),
        "verify": boolean(),
        "batch_rows": integer(1),
        "state_dir": string(),
    },
}

#: Which connections each kind of job talks to.
NEEDS: dict[str, tuple[str, ...]] = {"export": ("source",), "migrate": ("source", "destination")}


class ConfigError(UsageError):
    """One or more problems in a job file, each on its own line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Connection:
    """An API endpoint and the key read from the environment variable the file names."""

    api_url: str
    api_key_env: str
    api_key: str = field(repr=False)
    impersonate: str | None = None
    max_retries: int = 8
    max_backoff: float = 20.0
    timeout: float = 120.0
    connections: int = 16

    def client_settings(self) -> ClientSettings:
        return make_settings(
            self.api_url,
            self.api_key,
            self.impersonate,
            self.max_retries,
            self.max_backoff,
            self.timeout,
            self.connections,
        )


@dataclass(frozen=True)
class ExportJobConfig:
    """An export of one or more projects into one output root, optionally pruned to ``keep_runs``."""

    name: str
    projects: tuple[str, ...]
    out: str
    objects: tuple[str, ...] = ("logs", "datasets", "experiments")
    format: str = "parquet"
    compression: str | None = None
    filter: str | None = None
    shape: str = "spans"
    incremental: bool = False
    keep_runs: int | None = None
    full_every: int | None = None
    workers: int = 8  # the defaults of `btpipe export`
    ranges_per_object: int = 8
    page_limit: int = 1000
    prefetch: int = 1
    file_rows: int = 1_000_000
    file_mb: int = 256
    kind: str = "export"

    def export_options(self, project: str, *, incremental: bool) -> ExportOptions:
        from pipeline.export.runner import ExportOptions  # stages load only when a job runs

        return ExportOptions(
            project=project,
            out=self.out,
            objects=",".join(self.objects),
            format=self.format,
            compression=None if self.compression == "none" else self.compression,
            filter=self.filter,
            shape=self.shape,
            incremental=incremental,
            workers=self.workers,
            ranges_per_object=self.ranges_per_object,
            page_limit=self.page_limit,
            prefetch=self.prefetch,
            file_rows=self.file_rows,
            file_bytes=self.file_mb * 2**20,
        )


@dataclass(frozen=True)
class MigrateJobConfig:
    """Copy a project's objects from ``[source]`` to ``to_project`` at ``[destination]``."""

    name: str
    project: str
    to_project: str
    objects: tuple[str, ...] = ("logs", "datasets", "experiments")
    create_project: bool = True
    verify: bool = True
    workers: int = 4
    page_limit: int = 1000
    batch_rows: int = 1000
    state_dir: str = DEFAULT_STATE_DIR
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
                insert=InsertOptions(workers=self.workers),
                state_dir=self.state_dir,
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
        api_url = values.pop("api_url", DEFAULT_API_URL)
        url_env = values.pop("api_url_env", "BRAINTRUST_API_URL" if name == "source" else None)
        if url_env and self.environ.get(url_env) and f"{name}.api_url" not in self.overrides:
            api_url = self.environ[url_env]
        key_env = values.pop("api_key_env", "BRAINTRUST_API_KEY")
        api_key = self.environ.get(key_env, "")
        if not api_key:
            self.fail(
                self.at(f"{name}.api_key_env"),
                f"environment variable {key_env} is not set (it must hold the API key)",
            )
        return Connection(api_url=api_url, api_key_env=key_env, api_key=api_key, **values)

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
        if len(self.problems) > before:
            return None
        if kind == "export":
            return ExportJobConfig(name=name, projects=projects, **values)
        return MigrateJobConfig(name=name, **values)


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
