"""``btpipe doctor``: whether btpipe can work against a deployment, checked before a migration or a first backup.

Each check is one line with its answer: the key and its orgs, the user it acts as, its role,
project listing, a project's objects, ``/version`` and the insert limit it implies, each read
pattern btpipe may use (the proven ones it always uses and the two capabilities
:mod:`pipeline.api.capabilities` probes, through the same :func:`~pipeline.api.capabilities.probe`),
realtime reads, the rate-limit headers seen on any answer, and finally what btpipe will do with
the capabilities found. A check btpipe cannot work without marks the report failed with its
reason; the others only inform. Nothing is written unless a write test is asked for: one row
inserted, read back pinned to its version, deleted, and confirmed gone.

Requests go through the shared client and its retry policy, so a check sees what a run would
see; a subclass only notes the rate-limit headers of every answer, retried ones included.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.api.btql import cursor_of, run_query
from pipeline.api.capabilities import Capabilities, probe
from pipeline.api.client import BadRequestError, BraintrustClient, ClientSettings, Response
from pipeline.api.objects import list_objects, resolve_project
from pipeline.common.defaults import BATCH_ROWS, FALLBACK_REQUEST_BYTES
from pipeline.common.errors import (
    ApiError,
    AuthError,
    BtpipeError,
    NotFoundError,
    TransientApiError,
    UsageError,
    first_error,
)
from pipeline.querylang.ast import Query, binary, from_object, function, ident, literal

Status = Literal["ok", "no", "unknown", "skipped", "failed"]

#: What btpipe does with each capability, served and not (see pipeline/api/snapshot.py).
PLAN: Mapping[str, tuple[str, str]] = {
    "xact_filters": (
        "ranges split by _pagination_key (by _xact_id where keys cannot be split), incremental runs by _xact_id",
        "ranges split by _pagination_key (by created where keys cannot be split), incremental runs by _pagination_key",
    ),
    "count_at_version": (
        "each export checked against the exact row count at its version",
        "completeness proven page by page, no count check",
    ),
}

#: A time before every row: a filter on ``created`` that any row passes.
EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    answer: str

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "answer": self.answer}


@dataclass
class Report:
    """Every check in order, the capabilities found (None: not probed) and the first failure."""

    api_url: str
    checks: list[Check] = field(default_factory=list)
    capabilities: Capabilities | None = None
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    error: BtpipeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def plan(self) -> list[str]:
        """``capability: yes|no -> what btpipe will do``, one line each."""
        lines = []
        for name, (served, fallback) in PLAN.items():
            if self.capabilities is None:
                lines.append(f"{name}: not probed -> probed when a run starts")
            else:
                yes = bool(getattr(self.capabilities, name))
                lines.append(f"{name}: {'yes' if yes else 'no'} -> {served if yes else fallback}")
        return lines

    def lines(self) -> list[str]:
        width = max((len(c.name) for c in self.checks), default=0)
        out = [f"btpipe doctor: {self.api_url}"]
        out += [f"  {c.status:<8} {c.name:<{width}}  {c.answer}" for c in self.checks]
        out += ["what btpipe will do:", *(f"  {line}" for line in self.plan())]
        out.append("btpipe can work here" if self.ok else f"btpipe cannot work here: {self.error}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
            "capabilities": None if self.capabilities is None else self.capabilities.to_json(),
            "plan": self.plan(),
            "rate_limit_headers": self.rate_limit_headers,
            "error": None if self.error is None else str(self.error),
            "exit_code": 0 if self.error is None else self.error.exit_code,
        }


class WatchedClient(BraintrustClient):
    """The shared client, noting the rate-limit headers (``X-RateLimit-*``, ``Retry-After``) of
    every answer, including those the retry loop answers itself and never hands on."""

    def __init__(self, settings: ClientSettings) -> None:
        super().__init__(settings)
        self.rate_limit_headers: dict[str, str] = {}

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        *,
        once: bool = False,
    ) -> Response:
        response = await super()._send(method, path, params, body, once=once)
        for name, value in response.headers.items():
            if name.lower().startswith("x-ratelimit-") or name.lower() == "retry-after":
                self.rate_limit_headers.setdefault(  # str(): aiohttp's names are a str subclass
                    str(name), f"{value} (HTTP {response.status} to {method} {path})"
                )
        return response


@dataclass(frozen=True)
class Answer:
    """One ``/btql`` answer: its rows and cursor, or the 400 that refused it."""

    rows: list[dict[str, Any]]
    cursor: str | None = None
    refused: str | None = None


async def examine(
    settings: ClientSettings, *, project: str | None = None, write_test: str | None = None
) -> Report:
    """Run every check. A rejected key raises :class:`AuthError` at once (nothing else can be
    checked); any other failure is recorded in the report, which is returned whole."""
    client = WatchedClient(settings)
    async with client:
        doctor = Doctor(client)
        await doctor.run(project, write_test)
        doctor.report.rate_limit_headers = dict(client.rate_limit_headers)
        return doctor.report


class Doctor:
    """The checks, in the order they are reported."""

    def __init__(self, client: WatchedClient) -> None:
        self.client = client
        self.report = Report(api_url=client.redact(client.base_url))
        self.answered = False  # whether any /btql read was answered (each asks brainstore_realtime)

    # -- recording ------------------------------------------------------------------------

    def note(self, name: str, status: Status, answer: str) -> None:
        """Record a check; server answers pass through the client's redaction, so an echoed key
        never reaches the report."""
        self.report.checks.append(Check(name, status, self.client.redact(answer)))

    def fail(self, name: str, error: BtpipeError) -> None:
        """Record a check btpipe cannot work without; the first such failure is the verdict
        (its message redacted too: it is printed as the error line)."""
        error = type(error)(self.client.redact(str(error)))
        self.note(name, "failed", str(error))
        if self.report.error is None:
            self.report.error = error

    # -- the checks -----------------------------------------------------------------------

    async def run(self, project: str | None, write_test: str | None) -> None:
        """Every check in order; a server that stops answering (retries run out) ends the run
        as a failed check, so the report of what was found is still printed."""
        try:
            await self._checks(project, write_test)
        except TransientApiError as exc:
            self.fail("server", exc)

    async def _checks(self, project: str | None, write_test: str | None) -> None:
        orgs = await self.key()
        me = await self.user()
        await self.role(orgs[0] if orgs else None, me)
        newest = await self.projects()
        target = newest
        if project is not None:
            target = await self.project(project)
        await self.version()
        if target is not None:
            await self.reads(target)
        else:
            why = "no project to read" if project is None else "the project could not be read"
            self.note("reads", "skipped", f"{why}; name one with --project")
        if write_test is not None:
            await self.write_test(write_test)
        self.rate_limits()

    async def key(self) -> list[str]:
        """The key's orgs, as the SDKs learn them first (``POST /api/apikey/login``), else from
        ``GET /v1/organization``. A rejected key raises: nothing else can be checked."""
        try:
            info = await self.client.post_json("/api/apikey/login", {})
            orgs = [str(o.get("name")) for o in (info or {}).get("org_info") or []]
            where = "POST /api/apikey/login"
        except TransientApiError:
            raise
        except (NotFoundError, ApiError):  # served on the app URL only, on some deployments
            try:
                found = await self.client.get_json("/v1/organization", {"limit": "100"})
            except NotFoundError as exc:
                raise UsageError(
                    f"{exc} (no organization list at this API URL: check the URL's path)"
                ) from None
            orgs = [str(o.get("name")) for o in (found or {}).get("objects") or []]
            where = "GET /v1/organization"
        if not orgs:
            self.fail("key", BtpipeError("the API key belongs to no organization"))
        else:
            self.note("key", "ok", f"accepted; orgs: {', '.join(orgs)} ({where})")
        return orgs

    async def user(self) -> dict[str, Any] | None:
        """Who the key acts as (``POST /api/self/me``, as the public walkthrough asks)."""
        try:
            me = await self.client.post_json("/api/self/me", {})
        except TransientApiError:
            raise
        except (NotFoundError, ApiError, AuthError) as exc:
            self.note("user", "unknown", f"not answered ({exc})")
            return None
        if not isinstance(me, dict) or not me.get("id"):
            self.note("user", "unknown", "POST /api/self/me named no user")
            return None
        self.note("user", "ok", f"{me.get('email') or 'no email'} (id {me['id']})")
        return me

    async def role(self, org: str | None, me: dict[str, Any] | None) -> None:
        """The roles granted to the user on its org (``GET /v1/acl/list_org``), named through
        ``GET /v1/role``; "unknown" when the key may not read the org's ACLs."""
        if org is None or me is None:
            self.note("role", "unknown", "no org or user to look up")
            return
        params = {"org_name": org, "user_id": str(me["id"]), "limit": "100"}
        try:
            found = await self.client.get_json("/v1/acl/list_org", params)
        except TransientApiError:
            raise
        except (AuthError, NotFoundError, ApiError):
            self.note("role", "unknown", f"the key may not read the ACLs of org {org}")
            return
        acls = found.get("objects", []) if isinstance(found, dict) else found or []
        role_ids = sorted({str(a["role_id"]) for a in acls if a.get("object_type") == "organization" and a.get("role_id")})  # fmt: skip
        names = [await self._role_name(role_id) for role_id in role_ids]
        if names:
            self.note("role", "ok", f"{', '.join(names)} on org {org}")
        else:
            self.note("role", "ok", f"may read the ACLs of org {org}; none grants this user a role by name")

    async def _role_name(self, role_id: str) -> str:
        try:
            role = await self.client.get_json(f"/v1/role/{role_id}")
        except TransientApiError:
            raise
        except (AuthError, NotFoundError, ApiError):
            return role_id
        return str(role.get("name") or role_id) if isinstance(role, dict) else role_id

    async def projects(self) -> dict[str, Any] | None:
        """Project listing (``GET /v1/project?limit=1``): the newest project, or None."""
        try:
            found = await self.client.get_json("/v1/project", {"limit": "1"})
        except AuthError as exc:
            self.fail("projects", BtpipeError(f"project listing refused: {exc}"))
            return None
        objects = (found or {}).get("objects") or []
        self.note(
            "projects", "ok", f"listed; newest: {objects[0]['name']}" if objects else "listed; none yet"
        )
        return objects[0] if objects else None

    async def project(self, name: str) -> dict[str, Any] | None:
        """The project ``name`` and its datasets and experiments."""
        try:
            project = await resolve_project(self.client, name)
            datasets = [o async for o in list_objects(self.client, "dataset", project["id"])]
            experiments = [o async for o in list_objects(self.client, "experiment", project["id"])]
        except NotFoundError as exc:
            self.fail("project", exc)
            return None
        except AuthError as exc:
            self.fail("project", BtpipeError(f"project {name!r}: {exc}"))
            return None
        self.note(
            "project",
            "ok",
            f"{project['name']} (id {project['id']}): logs, {len(datasets)} datasets, "
            f"{len(experiments)} experiments",
        )
        return project

    async def version(self) -> None:
        """``GET /version`` and the request size btpipe's inserts keep under."""
        try:
            info = await self.client.get_json("/version")
        except ApiError as exc:
            info = None
            self.note("version", "unknown", f"not answered ({exc})")
        else:
            fields = ", ".join(f"{k} {v}" for k, v in info.items()) if isinstance(info, dict) else str(info)
            self.note("version", "ok", fields or "an empty answer")
        limit = info.get("logs3_payload_max_bytes") if isinstance(info, dict) else None
        if isinstance(limit, int) and limit > 0:
            size, source = limit, "the server's logs3_payload_max_bytes"
        else:
            size, source = FALLBACK_REQUEST_BYTES, "btpipe's fallback: the server reports no limit"
        self.note(
            "insert limits",
            "ok",
            f"requests of at most {size:,} bytes ({source}) and {BATCH_ROWS.default:,} rows",
        )

    # -- reads ----------------------------------------------------------------------------

    async def ask(self, query: Query, version: str | None = None) -> Answer:
        """One ``/btql`` query as btpipe sends it; a 400 is an answer ("not served")."""
        try:
            response = await run_query(self.client, query, version=version)
        except BadRequestError as exc:
            return Answer([], refused=str(exc))
        self.answered = True
        payload = response.json() or {}
        return Answer(payload.get("data") or [], cursor_of(response) or payload.get("cursor"))

    async def reads(self, project: dict[str, Any]) -> None:
        """Each read pattern on the project's logs, then the probed capabilities."""
        try:
            await self._reads(project)
        except BaseExceptionGroup as group:
            error = first_error(group)
            if not isinstance(error, BtpipeError):
                raise
            self._reads_refused(project, error)
        except BtpipeError as exc:
            self._reads_refused(project, exc)

    def _reads_refused(self, project: dict[str, Any], error: BtpipeError) -> None:
        self.fail("reads", BtpipeError(f"reading the logs of {project['name']} failed: {error}"))

    async def _reads(self, project: dict[str, Any]) -> None:
        source = from_object("project_logs", project["id"])
        ids = [{"alias": "id", "expr": ident("id")}]
        edge = await self.ask({
            "from": source,
            "select": [{"alias": n, "expr": ident(n)} for n in ("_xact_id", "_pagination_key", "created")],
            "sort": [{"expr": ident("_pagination_key"), "dir": "desc"}],
            "limit": 1,
        })  # fmt: skip
        newest = edge.rows[0] if edge.rows else None
        version = None if newest is None else str(newest["_xact_id"])
        where = f"the logs of {project['name']}"
        self._needed("read: sort on _pagination_key", edge, f"served; newest row at version {version}"
                     if version else f"served; {where} hold no row")  # fmt: skip

        if version is None:
            self.note("read: version pinning", "skipped", f"{where} hold no row to pin to")
        else:
            pinned = await self.ask({"from": source, "select": ids, "limit": 1}, version)
            if pinned.refused is None and not pinned.rows:
                self.fail(
                    "read: version pinning",
                    BtpipeError(f"no row read at version {version}, the newest row's"),
                )
            else:
                self._needed("read: version pinning", pinned, f"served; read at version {version}")

        await self._cursor(source, ids, version)

        caps = await probe(self.client, source)
        self.report.capabilities = caps
        fallback_reads = not caps.xact_filters  # created ranges and keyset runs are used then
        created = await self.ask({"from": source, "select": ids,
                                  "filter": binary("ge", ident("created"), literal(EPOCH)), "limit": 1}, version)  # fmt: skip
        self._pattern("read: filter on created", created, "served", needed=fallback_reads)
        key = None if newest is None else newest.get("_pagination_key")
        keyset = await self.ask({"from": source, "select": ids,
                                 "filter": binary("gt", ident("_pagination_key"), literal(key or "")),
                                 "limit": 1}, version)  # fmt: skip
        self._pattern("read: keyset on _pagination_key", keyset, "served", needed=fallback_reads)
        count = await self.ask(
            {"from": source, "measures": [{"alias": "n", "expr": function("count", literal(1))}]}
        )
        n = int(count.rows[0].get("n") or 0) if count.rows else 0
        self._pattern("read: count(1)", count, f"served; {n:,} rows now", needed=False,
                      no="not served -> no row estimate: --ranges-per-object ranges each, no progress total")  # fmt: skip
        for name in PLAN:
            served = bool(getattr(caps, name))
            self.note(
                f"probe: {name}", "ok" if served else "no", "served" if served else "not served (HTTP 400)"
            )
        if self.answered:
            self.note("realtime reads", "ok", "accepted: every read above asked for brainstore_realtime")
        else:
            self.note("realtime reads", "unknown", "no read was answered")

    async def _cursor(self, source: dict[str, Any], ids: list[dict[str, Any]], version: str | None) -> None:
        """Two pages of one row, the second through the first's cursor inside the query."""
        name = "read: cursor inside the query"
        query = {"from": source, "select": ids, "limit": 1}
        first = await self.ask(query, version)
        if first.refused is not None or not first.rows:
            self._needed(name, first, "served; no row to page through")
            return
        if first.cursor is None:
            self.fail(name, BtpipeError("a full page came without a cursor; paging could not go on"))
            return
        second = await self.ask({**query, "cursor": first.cursor}, version)
        if second.refused is None and second.rows == first.rows:
            self.fail(name, BtpipeError("the cursor of page 1 read page 1 again"))
            return
        self._needed(
            name, second, f"served; page 2 read through the cursor of page 1 ({_rows(len(second.rows))})"
        )

    def _needed(self, name: str, answer: Answer, served: str) -> None:
        self._pattern(name, answer, served, needed=True)

    def _pattern(
        self, name: str, answer: Answer, served: str, *, needed: bool, no: str | None = None
    ) -> None:
        if answer.refused is None:
            self.note(name, "ok", served)
        elif needed:
            self.fail(name, BtpipeError(f"{name[len('read: '):]} refused, and btpipe reads through it ({answer.refused})"))  # fmt: skip
        else:
            self.note(name, "no", no or "not served; btpipe does not need it here")

    # -- the write test ---------------------------------------------------------------------

    async def write_test(self, name: str) -> None:
        """Insert a row with a fresh id into ``name``'s logs, read it back pinned to its version,
        delete it with ``_object_delete`` and confirm it is gone; each step is one line."""
        try:
            project = await resolve_project(self.client, name)
        except NotFoundError as exc:
            self.fail("write: project", exc)
            return
        except AuthError as exc:
            self.fail("write: project", BtpipeError(f"project {name!r}: {exc}"))
            return
        row_id = f"btpipe-doctor-{uuid.uuid4().hex}"
        path = f"/v1/project_logs/{project['id']}/insert"
        source = from_object("project_logs", project["id"])
        by_id = {"from": source, "select": [{"alias": n, "expr": ident(n)} for n in ("id", "_xact_id")],
                 "filter": binary("eq", ident("id"), literal(row_id)), "limit": 1}  # fmt: skip
        where = f"the logs of {project['name']}"

        async def insert() -> str:
            await self.client.post_json(
                path, {"events": [{"id": row_id, "input": "btpipe doctor write test"}]}
            )
            return f"row {row_id} written to {where}"

        async def read_back() -> str:
            found = await self.ask(by_id)
            if not found.rows:
                raise BtpipeError(f"row {row_id} was not read back at once (reads are not realtime)")
            version = str(found.rows[0]["_xact_id"])
            pinned = await self.ask(by_id, version)
            if not pinned.rows:
                raise BtpipeError(f"row {row_id} was not read back at its version {version}")
            return f"read back at its version {version}"

        async def delete() -> str:
            await self.client.post_json(path, {"events": [{"id": row_id, "_object_delete": True}]})
            return "deleted with _object_delete"

        async def gone() -> str:
            if (await self.ask(by_id)).rows:
                raise BtpipeError(f"row {row_id} is still read after its delete; delete it by hand")
            return f"row {row_id} no longer read"

        if not await self._step("write: insert", insert):
            return
        await self._step("write: read back", read_back)
        if await self._step("write: delete", delete, f"row {row_id} is left in {where}; delete it by hand"):
            await self._step("write: gone", gone)

    async def _step(self, name: str, step: Callable[[], Awaitable[str]], after_failure: str = "") -> bool:
        try:
            answer = await step()
        except BtpipeError as exc:
            message = f"{exc}; {after_failure}" if after_failure else str(exc)
            self.fail(name, BtpipeError(message))
            return False
        self.note(name, "ok", answer)
        return True

    def rate_limits(self) -> None:
        """The rate-limit headers seen on any answer, and the waits they caused."""
        seen = self.client.rate_limit_headers
        stats = self.client.statistics()
        answer = "; ".join(f"{k}: {v}" for k, v in seen.items()) if seen else "none seen"
        waits = f"{stats.throttled} waits on 429 while other requests went through"
        self.note("rate limits", "ok", f"{answer}; {stats.retries} retries, {waits}")


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"
