"""Every tunable default of btpipe, declared once, with its bounds and its one-line help.

A :class:`Setting` record holds everything about one knob: its default, the type and range of
the values it takes, its help, its command-line flag and its job-file key. Everything else is
derived from these records, so nothing can drift apart:

- the click options (:mod:`pipeline.cli.options`),
- the job-file keys and their checks (:mod:`pipeline.jobs.config`),
- the field defaults of the library's options dataclasses (``ExportOptions``,
  ``LoadOptions``, ``InsertOptions``, ``ClientSettings``, ...),
- the documentation table (:func:`defaults_table_markdown`).

One rule checks a value wherever it comes from (a flag, a job file, an environment
variable): a value of the wrong type or outside the range is refused, never clamped, with the
same words, e.g. ``expected integer between 1 and 1000, got 0``.
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass
from typing import Any, Generic, Literal, TypeVar, cast

T = TypeVar("T")

#: Settings given in MB are multiplied by this to get bytes.
MB = 2**20

#: Request body limit when neither the server (``logs3_payload_max_bytes`` from
#: ``GET /version``) nor ``--max-batch-bytes`` sets one: the documented ~6 MB request
#: ceiling, with room to spare.
FALLBACK_REQUEST_BYTES = 5 * 10**6

#: Sections of the documentation table, in order.
EXPORT = "export"
LOAD = "import, migrate"
CLIENT = "API connection"
JOB = "job files"
DELETE = "delete"


class BadValue(ValueError):
    """A value of the wrong type or outside its range; ``expected`` says what would do."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {show(value)}")
        self.expected = expected


def show(value: Any) -> str:
    """A value as a user would write it in TOML: strings quoted, booleans lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One tunable knob. ``value_type`` is the type of a value given (``int``, ``float``,
    ``str`` or ``bool``); a default of None means "not set" and ``shown`` says what that does.
    ``min`` and ``max`` bound an integer (inclusive); ``above`` bounds a number (exclusive).
    ``header``: the text goes into a request header, so it may hold no line break or other
    control character (one would fail deep in the HTTP client)."""

    name: str
    default: T
    value_type: type
    _: KW_ONLY
    help: str
    section: str
    flag: str | None = None
    key: str | None = None
    min: int | None = None
    max: int | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()
    envvar: str | None = None
    shown: str | None = None
    metavar: str | None = None
    header: bool = False

    @property
    def base(self) -> str:
        """What any value must be, before its range."""
        if self.choices:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        return {int: "integer", float: "number", bool: "true or false"}.get(
            self.value_type, "a non-empty string"
        )

    @property
    def expected(self) -> str:
        """What a value must be, range included, as messages say it."""
        if self.min is not None and self.max is not None:
            return f"{self.base} between {self.min} and {self.max}"
        if self.min is not None:
            return f"{self.base} >= {self.min}"
        if self.above is not None:
            return f"{self.base} > {self.above:g}"
        return self.base

    @property
    def allowed(self) -> str:
        """The range or the choices, short, for help texts and the documentation table."""
        if self.choices:
            return ", ".join(self.choices)
        if self.value_type is bool:
            return "true, false"
        if self.min is not None and self.max is not None:
            return f"{self.min}..{self.max}"
        if self.min is not None:
            return f">= {self.min}"
        if self.above is not None:
            return f"> {self.above:g}"
        return ""

    @property
    def default_text(self) -> str:
        """The default as documentation shows it."""
        if self.shown is not None:
            return self.shown
        return show(self.default) if self.value_type is bool else str(self.default)

    def check(self, value: object) -> T:
        """``value`` (typed, as in TOML) if it is allowed, else :class:`BadValue`."""
        if self.value_type is bool:
            if not isinstance(value, bool):
                raise BadValue(self.base, value)
        elif self.value_type in (int, float):
            number = int if self.value_type is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, number):
                raise BadValue(self.base, value)
            if not self._in_range(value):
                raise BadValue(self.expected, value)
            value = self.value_type(value)
        elif not isinstance(value, str) or not value or (self.choices and value not in self.choices):
            raise BadValue(self.base, value)
        elif self.header and not value.isprintable():
            raise BadValue("text without a line break or other control character", value)
        return cast(T, value)

    def _in_range(self, value: float) -> bool:
        return (
            (self.min is None or value >= self.min)
            and (self.max is None or value <= self.max)
            and (self.above is None or value > self.above)
        )

    def parse(self, text: str) -> T:
        """A value given as text (a flag, an environment variable, ``--set``), checked."""
        value: object = text
        if self.value_type in (int, float):
            try:
                value = self.value_type(text.strip())
            except ValueError:
                raise BadValue(self.base, text) from None
        elif self.value_type is bool:
            lowered = text.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise BadValue(self.base, text)
            value = lowered in _TRUE
        return self.check(value)


# --- export ------------------------------------------------------------------------------

OBJECTS: Setting[str] = Setting(
    "objects", "logs,datasets,experiments,config", str, flag="--objects", key="objects",
    help="Comma list: logs, datasets, experiments, dataset:NAME, experiment:NAME; configuration: "
    "prompts, functions, project_scores, project_tags, views, span_iframes, automations, settings, "
    "or config for all of them",
    section="export, migrate, verify",
)  # fmt: skip
FORMAT: Setting[str] = Setting(
    "format", "parquet", str, choices=("parquet", "jsonl", "delta"), flag="--format", key="format",
    help="File format; delta: Parquet run files merged into one Delta table per object type", section=EXPORT,
)  # fmt: skip
COMPRESSION: Setting[str | None] = Setting(
    "compression", None, str, choices=("none", "gzip", "zstd"), flag="--compression", key="compression",
    help="Compression of the data files", shown="zstd for Parquet, none for JSONL", section=EXPORT,
)  # fmt: skip
FILTER: Setting[str | None] = Setting(
    "filter", None, str, flag="--filter", key="filter",
    help="BTQL filter, e.g. \"metadata.orgName = 'qawolf'\"", shown="every row", section=EXPORT,
)  # fmt: skip
SHAPE: Setting[str] = Setting(
    "shape", "spans", str, choices=("spans", "traces", "summary"), flag="--shape", key="shape",
    help="Row shape: spans, whole traces with a matching span, or one summary row per trace", section=EXPORT,
)  # fmt: skip
INCREMENTAL: Setting[bool] = Setting(
    "incremental", False, bool, flag="--incremental", key="incremental",
    help="Only rows written since the last completed run into the same output", section=EXPORT,
)  # fmt: skip
DRY_RUN: Setting[bool] = Setting(
    "dry_run", False, bool, flag="--dry-run",
    help="Only print the plan (objects, row counts, ranges, where files would go); write nothing",
    section=EXPORT,
)  # fmt: skip
#: Ranges an export pages at once unless told, whatever the format: more ranges keep more
#: requests in flight where the server is far. A Parquet page may wait for its encoders, but
#: the page budget (ranges plus the encoders' pages) bounds what waits.
RANGE_WORKERS = 12
EXPORT_WORKERS: Setting[int | None] = Setting(
    "workers", None, int, min=1, flag="--workers", key="workers",
    help="Ranges paged at the same time", shown=str(RANGE_WORKERS),
    section=EXPORT,
)  # fmt: skip
RANGES_PER_OBJECT: Setting[int | None] = Setting(
    "ranges_per_object", None, int, min=1, flag="--ranges-per-object", key="ranges_per_object",
    help="Most ranges one object is split into", shown="as many as --workers", section=EXPORT,
)  # fmt: skip
MIN_ROWS_PER_RANGE: Setting[int] = Setting(
    "min_rows_per_range", 5_000, int, min=1, flag="--min-rows-per-range", key="min_rows_per_range",
    help="Split an object only when each range gets at least this many rows", section=EXPORT,
)  # fmt: skip
PAGE_LIMIT: Setting[int] = Setting(
    "page_limit", 1000, int, min=1, max=1000, flag="--page-limit", key="page_limit",
    help="Rows per /btql page", section="export, migrate",
)  # fmt: skip
PREFETCH: Setting[int] = Setting(
    "prefetch", 1, int, min=1, flag="--prefetch", key="prefetch",
    help="Pages buffered per range (bounds memory)", section=EXPORT,
)  # fmt: skip
ENCODERS: Setting[int] = Setting(
    "encoders", 1, int, min=0, max=64, flag="--encoders", key="encoders",
    help="Parquet: worker processes encoding pages (0: a thread of this process). "
    "JSONL: threads writing pages at once", section=EXPORT,
)  # fmt: skip
ROW_GROUP_ROWS: Setting[int] = Setting(
    "row_group_rows", 100_000, int, min=1, flag="--row-group-rows", key="row_group_rows",
    help="Most Parquet rows per row group", section=EXPORT,
)  # fmt: skip
ROW_GROUP_MB: Setting[int] = Setting(
    "row_group_mb", 4, int, min=1, flag="--row-group-mb", key="row_group_mb",
    help="Close a Parquet row group at this many MB of data (bounds writer memory)", section=EXPORT,
)  # fmt: skip
FILE_ROWS: Setting[int] = Setting(
    "file_rows", 1_000_000, int, min=1, flag="--file-rows", key="file_rows",
    help="Start a new file after this many rows", section=EXPORT,
)  # fmt: skip
FILE_MB: Setting[int] = Setting(
    "file_mb", 256, int, min=1, flag="--file-mb", key="file_mb",
    help="Start a new file after this many MB of JSON", section=EXPORT,
)  # fmt: skip
ACLS: Setting[bool] = Setting(
    "acls", False, bool, flag="--acls",
    help="Also copy the ACLs of the project, its datasets, experiments and prompts, creating the "
    "groups and custom roles they name", section="migrate",
)  # fmt: skip
MAP_USERS: Setting[bool] = Setting(
    "map_users", False, bool, flag="--map-users",
    help="With --acls: map users of grants and group members by email (a user the destination "
    "lacks is listed, not invited)", section="migrate",
)  # fmt: skip

# --- attachments (export, import, migrate) -----------------------------------------------
ATTACHMENTS: Setting[Literal["download", "skip"]] = Setting(
    "attachments", "download", str, choices=("download", "skip"), flag="--attachments", key="attachments",
    help="Attachments the rows refer to: download them into the export once each, or leave them out "
    "(counted in the summary)", section=EXPORT,
)  # fmt: skip
MAX_ATTACHMENT_MB: Setting[int] = Setting(
    "max_attachment_mb", 100, int, min=1, flag="--max-attachment-mb", key="max_attachment_mb",
    help="Largest attachment copied; a bigger one stops the run with exit 1, naming it",
    section="export, import, migrate",
)  # fmt: skip
ATTACHMENT_WORKERS: Setting[int] = Setting(
    "attachment_workers", 8, int, min=1, flag="--attachment-workers", key="attachment_workers",
    help="Attachments transferred at once (each holds one 1 MB chunk in memory)",
    section="export, import, migrate",
)  # fmt: skip


# --- import, migrate ---------------------------------------------------------------------

LOAD_WORKERS: Setting[int] = Setting(
    "workers", 4, int, min=1, flag="--workers", key="workers",
    help="Insert requests in flight at once", section=LOAD,
)  # fmt: skip
CONFIG_WORKERS: Setting[int] = Setting(
    "config_workers", 16, int, min=1, flag="--config-workers",
    help="Configuration objects (prompts, functions, ...) written at once", section=LOAD,
)  # fmt: skip
BATCH_ROWS: Setting[int] = Setting(
    "batch_rows", 1000, int, min=1, flag="--batch-rows", key="batch_rows",
    help="Most events per insert request", section=LOAD,
)  # fmt: skip
MAX_BATCH_BYTES: Setting[int | None] = Setting(
    "max_batch_bytes", None, int, min=1, flag="--max-batch-bytes", key="max_batch_bytes",
    help="Largest request body; capped by the server's logs3_payload_max_bytes",
    shown=f"the server's limit, else {FALLBACK_REQUEST_BYTES}", section=LOAD,
)  # fmt: skip
MAX_INFLIGHT_MB: Setting[int] = Setting(
    "max_inflight_mb", 64, int, min=1, flag="--max-inflight-mb", key="max_inflight_mb",
    help="Most encoded MB between reading and the server (bounds memory)", section=LOAD,
)  # fmt: skip
ON_ERROR: Setting[Literal["fail", "skip"]] = Setting(
    "on_error", "fail", str, choices=("fail", "skip"), flag="--on-error", key="on_error",
    help="An event too big for any request: stop, or record it in the error file and go on", section=LOAD,
)  # fmt: skip
ERROR_FILE: Setting[str | None] = Setting(
    "error_file", None, str, flag="--error-file", key="error_file",
    help="Where --on-error skip records events (JSONL)", shown="beside the state file", section=LOAD,
)  # fmt: skip
STATE_DIR: Setting[str] = Setting(
    "state_dir", ".btpipe-state", str, flag="--state-dir", key="state_dir",
    help="Directory for resume state (the input may be read-only)", section=LOAD,
)  # fmt: skip
CREATE_PROJECT: Setting[bool] = Setting(
    "create_project", False, bool, flag="--create-project", key="create_project",
    help="Create the destination project if missing", section=LOAD,
)  # fmt: skip
INTO_EXISTING: Setting[bool] = Setting(
    "into_existing", False, bool, flag="--into-existing", key="into_existing",
    help="Write into an experiment or dataset the destination project already has under the same name",
    section=LOAD,
)  # fmt: skip

# --- one writer per root (pipeline.common.lease) ---------------------------------------------

WAIT_LEASE: Setting[float] = Setting(
    "wait_lease", 0.0, float, min=0, flag="--wait-lease", metavar="SECONDS", shown="0",
    help="Seconds to wait while another run holds the output root or state file (0: exit 6 at once)",
    section="export, import, migrate, run",
)  # fmt: skip
LEASE_STALE: Setting[float] = Setting(
    "lease_stale_seconds", 120.0, float, above=0, envvar="BTPIPE_LEASE_STALE_SECONDS", shown="120",
    help="A lease not renewed for this many seconds is taken over (its run is taken for dead)",
    section="export, import, migrate, run",
)  # fmt: skip

# --- the Ray engine (pipeline.ray, the btpipe[ray] extra) --------------------------------

RAY = "export, import (Ray)"
ENGINE: Setting[str] = Setting(
    "engine", "local", str, choices=("local", "ray"), flag="--engine",
    help="Where ranges (export) or objects (import) are read and written: this process, or tasks "
    "of a Ray cluster (needs btpipe[ray])", section=RAY,
)  # fmt: skip
RAY_ADDRESS: Setting[str | None] = Setting(
    "ray_address", None, str, flag="--ray-address", metavar="ADDR", shown="a local Ray on 127.0.0.1",
    help="With --engine ray: the Ray cluster to run on, e.g. ray://head:10001 or auto", section=RAY,
)  # fmt: skip
RAY_REQUEST_RATE: Setting[float] = Setting(
    "ray_request_rate", 100.0, float, above=0, flag="--ray-request-rate", metavar="PER_SECOND",
    help="With --engine ray: requests per second the whole cluster sends (one shared token bucket, "
    "halved on a 429)", section=RAY,
)  # fmt: skip

# --- the API connection ------------------------------------------------------------------

API_KEY_ENV: Setting[str] = Setting(
    "api_key_env", "BRAINTRUST_API_KEY", str, key="api_key_env",
    help="Name of the environment variable holding the API key", section=CLIENT,
)  # fmt: skip
API_URL_ENV: Setting[str] = Setting(
    "api_url_env", "BRAINTRUST_API_URL", str, key="api_url_env",
    help="Name of an environment variable that, when set, replaces api_url",
    shown="BRAINTRUST_API_URL for [source], none for [destination]", section=CLIENT,
)  # fmt: skip
API_URL: Setting[str] = Setting(
    "api_url", "https://api.braintrust.dev", str, flag="--api-url", key="api_url", envvar=API_URL_ENV.default,
    help="Braintrust API base URL", section=CLIENT,
)  # fmt: skip
IMPERSONATE: Setting[str | None] = Setting(
    "impersonate", None, str, flag="--impersonate", key="impersonate", metavar="USER", header=True,
    help="Run requests as this user id or email (x-bt-impersonate-user); migrate and verify: the source's only",
    shown="the key's own user", section=CLIENT,
)  # fmt: skip
TO_IMPERSONATE: Setting[str | None] = Setting(
    "to_impersonate", None, str, flag="--to-impersonate", metavar="USER", header=True,
    help="Run the destination's requests as this user id or email (in job files: [destination] impersonate)",
    shown="the destination key's own user", section="migrate, verify",
)  # fmt: skip
MAX_RETRIES: Setting[int] = Setting(
    "max_retries", 8, int, min=1, flag="--max-retries", key="max_retries",
    help="Attempts per request before giving up", section=CLIENT,
)  # fmt: skip
MAX_BACKOFF: Setting[float] = Setting(
    "max_backoff", 20.0, float, above=0, flag="--max-backoff", key="max_backoff",
    help="Longest back-off between attempts, seconds", section=CLIENT,
)  # fmt: skip
THROTTLE_PATIENCE: Setting[float] = Setting(
    "throttle_patience", 60.0, float, above=0, flag="--throttle-patience", key="throttle_patience",
    help="A 429 is waited out without spending --max-retries while some request succeeded in the last "
    "this many seconds", section=CLIENT,
)  # fmt: skip
RETRY_JITTER: Setting[float] = Setting(
    "retry_jitter", 0.5, float, min=0, flag="--retry-jitter", key="retry_jitter",
    help="Random extra wait on top of a server's Retry-After, as a fraction of it (0.5: up to half again), "
    "so clients do not retry in step", section=CLIENT,
)  # fmt: skip
READ_TIMEOUT: Setting[float] = Setting(
    "timeout", 120.0, float, above=0, flag="--timeout", key="timeout",
    help="Socket read timeout, seconds", section=CLIENT,
)  # fmt: skip
CONNECTIONS: Setting[int] = Setting(
    "connections", 16, int, min=1, flag="--connections", key="connections",
    help="Maximum open HTTP connections and requests in flight (each 429 halves the requests in flight, "
    "successes grow them back)", section=CLIENT,
)  # fmt: skip

# --- job files only ----------------------------------------------------------------------

KEEP_RUNS: Setting[int | None] = Setting(
    "keep_runs", None, int, min=1, key="keep_runs",
    help="Export jobs: prune runs beyond this many (never one a kept run builds on)",
    shown="keep every run", section=JOB,
)  # fmt: skip
FULL_EVERY: Setting[int | None] = Setting(
    "full_every", None, int, min=1, key="full_every",
    help="Incremental export jobs: every Nth run is a full export, so old chains can be pruned",
    shown="never", section=JOB,
)  # fmt: skip
VERIFY: Setting[bool] = Setting(
    "verify", True, bool, key="verify",
    help="Migrate jobs: compare the copy with the source row by row afterwards", section=JOB,
)  # fmt: skip

# --- delete ------------------------------------------------------------------------------

DELETE_OBJECTS: Setting[str] = Setting(
    "objects", "logs", str, flag="--objects",
    help="Comma list: logs, datasets, experiments, dataset:NAME, experiment:NAME", section=DELETE,
)  # fmt: skip

#: Every setting, in the order of the documentation table.
SETTINGS: tuple[Setting[Any], ...] = (
    OBJECTS, FORMAT, COMPRESSION, FILTER, SHAPE, INCREMENTAL, DRY_RUN, EXPORT_WORKERS, RANGES_PER_OBJECT,
    MIN_ROWS_PER_RANGE, PAGE_LIMIT, PREFETCH, ENCODERS, ROW_GROUP_ROWS, ROW_GROUP_MB, FILE_ROWS, FILE_MB,
    ATTACHMENTS, MAX_ATTACHMENT_MB, ATTACHMENT_WORKERS,
    LOAD_WORKERS, CONFIG_WORKERS, BATCH_ROWS, MAX_BATCH_BYTES, MAX_INFLIGHT_MB, ON_ERROR, ERROR_FILE, STATE_DIR,
    CREATE_PROJECT, INTO_EXISTING, ACLS, MAP_USERS,
    WAIT_LEASE, LEASE_STALE,
    ENGINE, RAY_ADDRESS, RAY_REQUEST_RATE,
    API_URL, API_URL_ENV, API_KEY_ENV, IMPERSONATE, TO_IMPERSONATE, MAX_RETRIES, MAX_BACKOFF, THROTTLE_PATIENCE,
    RETRY_JITTER, READ_TIMEOUT, CONNECTIONS,
    KEEP_RUNS, FULL_EVERY, VERIFY,
    DELETE_OBJECTS,
)  # fmt: skip


def _code(text: str | None) -> str:
    return f"`{text}`" if text else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def defaults_table_markdown() -> str:
    """Every setting as one Markdown table (section, flag, job-file key, default, allowed
    values, meaning), for the documentation, which embeds it so it cannot go stale."""
    lines = [
        "| for | flag | job-file key | default | allowed | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        flag = _code(s.flag) + (f" (env `{s.envvar}`)" if s.envvar else "")
        default = s.shown if s.shown is not None else _code(s.default_text)
        cells = (s.section, flag, _code(s.key), default, s.allowed, s.help)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
