"""HTTP routes of the emulator (aiohttp), mirroring the Braintrust REST API and ``/btql``.

Routing is done here rather than by aiohttp's router so paths with doubled slashes
(``//btql``: a base URL ending in ``/`` joined with ``/btql``) reach the same handler.
Handlers are thin: parse the body, run one store call off the event loop, render.
Errors become one-line plain-text bodies: 400 (malformed, naming the field; on ``/btql``
also an unknown object id, whichever org owns it), 401, 403 (impersonation or an ACL
change not allowed), 404 (also for objects of another org), 413 (body over
``max_request_bytes``). ``x-bt-impersonate-user`` swaps the request's principal for the
impersonated user's before any handler runs (rules in ``access.py``).
"""

from __future__ import annotations

import re
import sqlite3
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio.to_thread
import orjson
from aiohttp import web

from pipeline import __version__
from pipeline.emulator import access, inserts, jsonvalues, objects, reads
from pipeline.emulator.auth import Authenticator, Principal
from pipeline.emulator.faults import FaultInjector, install
from pipeline.emulator.objects import KINDS, Kind, ListFilter, NotFound
from pipeline.emulator.query import QueryError
from pipeline.emulator.store import Store
from pipeline.emulator.validate import (
    BadRequest,
    array_of,
    boolean,
    check_body,
    nullable,
    object_of,
    string,
    uuid_string,
)
from pipeline.querylang.ast import OBJECT_TYPES, ObjectType

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]

DEFAULT_MAX_REQUEST_BYTES: Final = 6 * 1024 * 1024
STORE_KEY: Final = web.AppKey("store", Store)
AUTH_KEY: Final = web.AppKey("auth", Authenticator)
PRINCIPAL: Final = web.RequestKey("principal", Principal)
_COMPRESS_MIN_BYTES: Final = 1024


@dataclass(frozen=True)
class AppConfig:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


# -- helpers ------------------------------------------------------------------------------


CONFIG_KEY: Final = web.AppKey("config", AppConfig)


def principal(request: web.Request) -> Principal:
    found: Principal = request[PRINCIPAL]
    return found


def store(request: web.Request) -> Store:
    return request.app[STORE_KEY]


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


async def json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return jsonvalues.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"request body: invalid JSON ({exc})") from None


def _uuid_param(value: str, where: str) -> str:
    uuid_string(value, where)
    return value


# -- objects ------------------------------------------------------------------------------

_CREATE_FIELDS: Final[dict[Kind, dict[str, Any]]] = {
    "project": {"name": string, "description": nullable(string), "org_name": nullable(string)},
    "dataset": {
        "project_id": uuid_string, "name": string, "description": nullable(string),
        "tags": nullable(array_of(string)), "metadata": nullable(object_of()),
    },
    "experiment": {
        "project_id": uuid_string, "name": nullable(string), "description": nullable(string),
        "repo_info": nullable(object_of()), "base_exp_id": nullable(uuid_string),
        "dataset_id": nullable(uuid_string), "dataset_version": nullable(string),
        "internal_metadata": nullable(object_of()), "parameters_id": nullable(uuid_string),
        "parameters_version": nullable(string), "public": nullable(boolean),
        "metadata": nullable(object_of()), "tags": nullable(array_of(string)), "ensure_new": nullable(boolean),
    },
}  # fmt: skip
_REQUIRED: Final[dict[Kind, tuple[str, ...]]] = {
    "project": ("name",),
    "dataset": ("project_id", "name"),
    "experiment": ("project_id",),
}
_PATCH_FIELDS: Final[dict[Kind, dict[str, Any]]] = {
    "project": {"name": nullable(string), "description": nullable(string), "settings": nullable(object_of())},
    "dataset": {k: v for k, v in _CREATE_FIELDS["dataset"].items() if k != "project_id"},
    "experiment": {
        k: v for k, v in _CREATE_FIELDS["experiment"].items() if k not in ("project_id", "ensure_new")
    },
}


async def create_object(request: web.Request, kind: Kind) -> web.Response:
    body = check_body(await json_body(request), _CREATE_FIELDS[kind], _REQUIRED[kind])
    if body.get("name") == "":
        raise BadRequest("body.name: must not be empty")
    who = principal(request)
    if kind == "project":
        org = who.default_org(body.get("org_name"))
        if org is None:
            raise NotFound(f"org {body.get('org_name')!r} not found")
        obj = await store(request).write(lambda c: objects.create_project(c, body, org.org_id, who.user_id))
    else:
        create = objects.create_dataset if kind == "dataset" else objects.create_experiment
        obj = await store(request).write(lambda c: create(c, body, who.org_ids, who.user_id))
    return json_response(obj)


def _list_filter(request: web.Request, kind: Kind) -> ListFilter:
    q = request.query
    limit = q.get("limit")
    if limit is not None and (not limit.isdigit() or int(limit) < 1):
        raise BadRequest("limit: expected a positive integer")
    name_param = {"project": "project_name", "dataset": "dataset_name", "experiment": "experiment_name"}[kind]
    ids = tuple(q.getall("ids", [])) + tuple(i for v in q.getall("ids[]", []) for i in v.split(","))
    for i in ids:
        uuid_string(i, "ids")
    for anchor in ("starting_after", "ending_before", "project_id"):
        if anchor in q:
            uuid_string(q[anchor], anchor)
    return ListFilter(
        project_name=q.get("project_name") if kind != "project" else None,
        project_id=q.get("project_id"), name=q.get(name_param), org_name=q.get("org_name"), ids=ids,
        limit=int(limit) if limit else None, starting_after=q.get("starting_after"),
        ending_before=q.get("ending_before"),
    )  # fmt: skip


async def list_objects(request: web.Request, kind: Kind) -> web.Response:
    flt = _list_filter(request, kind)
    if flt.starting_after and flt.ending_before:
        raise BadRequest("starting_after and ending_before cannot be combined")
    org_ids = principal(request).org_ids
    found = await store(request).read(lambda c: objects.list_objects(c, kind, org_ids, flt))
    return json_response({"objects": found})


async def object_by_id(request: web.Request, kind: Kind, object_id: str) -> web.Response:
    _uuid_param(object_id, f"{kind} id")
    org_ids = principal(request).org_ids
    db = store(request)
    if request.method == "GET":
        obj = await db.read(lambda c: objects.get_object(c, kind, object_id, org_ids))
    elif request.method == "PATCH":
        body = check_body(await json_body(request), _PATCH_FIELDS[kind])
        obj = await db.write(lambda c: objects.patch_object(c, kind, object_id, org_ids, body))
    else:
        obj = await db.write(lambda c: objects.delete_object(c, kind, object_id, org_ids))
    return json_response(obj)


# -- rows ---------------------------------------------------------------------------------


async def _write(request: web.Request, batches: list[inserts.Batch]) -> list[list[str]]:
    org_ids = principal(request).org_ids
    return await store(request).write(lambda c: inserts.write_batches(c, batches, org_ids))


async def insert_rows(request: web.Request, object_type: ObjectType, object_id: str) -> web.Response:
    _uuid_param(object_id, f"{object_type} id")
    batches = inserts.object_insert(object_type, object_id, await json_body(request))
    (row_ids,) = await _write(request, batches)
    return json_response({"row_ids": row_ids})


async def cross_insert(request: web.Request, params: dict[str, str]) -> web.Response:
    batches = inserts.cross_object_insert(await json_body(request))
    results = await _write(request, batches)
    out: dict[str, dict[str, Any]] = {}
    for (object_type, object_id, _), row_ids in zip(batches, results, strict=True):
        out.setdefault(object_type, {})[object_id] = {"row_ids": row_ids}
    return json_response(out)


async def logs3(request: web.Request, params: dict[str, str]) -> web.Response:
    batches = inserts.logs3_insert(await json_body(request))
    results = await _write(request, batches)
    return json_response({"row_ids": [i for ids in results for i in ids]})


async def fetch_rows(request: web.Request, object_type: ObjectType, object_id: str) -> web.Response:
    _uuid_param(object_id, f"{object_type} id")
    params: Any = dict(request.query) if request.method == "GET" else await json_body(request)
    if not isinstance(params, dict):
        raise BadRequest("request body: expected object")
    org_ids = principal(request).org_ids
    page = await store(request).read(lambda c: reads.fetch_page(c, object_type, object_id, params, org_ids))
    return web.Response(body=reads.render_json(page, "events"), content_type="application/json")


async def btql(request: web.Request, params: dict[str, str]) -> web.Response:
    body = await json_body(request)
    org_ids = principal(request).org_ids
    page = await store(request).read(lambda c: reads.btql_page(c, body, org_ids))
    fmt = body.get("fmt", "json")
    if fmt not in reads.FORMATS:
        raise BadRequest(f"fmt: {fmt!r} is not supported (use {' or '.join(reads.FORMATS)})")
    headers = {"x-bt-cursor": page.cursor} if page.cursor else {}
    if fmt == "jsonl":
        return web.Response(
            body=reads.render_jsonl(page), headers=headers, content_type="application/x-jsonlines"
        )
    return web.Response(body=reads.render_json(page), headers=headers, content_type="application/json")


# -- misc ---------------------------------------------------------------------------------


async def version(request: web.Request, params: dict[str, str]) -> web.Response:
    limit = request.app[CONFIG_KEY].max_request_bytes
    return json_response({"version": __version__, "logs3_payload_max_bytes": limit})


async def apikey_login(request: web.Request, params: dict[str, str]) -> web.Response:
    """What the official SDK calls first: the orgs of the key and where their API lives."""
    base = f"{request.scheme}://{request.host}"
    orgs = [
        {"id": m.org_id, "name": m.org_name, "api_url": base, "proxy_url": base, "git_metadata": None}
        for m in principal(request).orgs
    ]
    return json_response({"org_info": orgs})


async def self_me(request: web.Request, params: dict[str, str]) -> web.Response:
    return json_response(access.me(principal(request)))


def _limit_param(request: web.Request) -> int | None:
    limit = request.query.get("limit")
    if limit is not None and (not limit.isdigit() or int(limit) < 1):
        raise BadRequest("limit: expected a positive integer")
    return int(limit) if limit else None


async def list_roles(request: web.Request, params: dict[str, str]) -> web.Response:
    q = request.query
    ids = tuple(q.getall("ids", [])) + tuple(i for v in q.getall("ids[]", []) for i in v.split(","))
    return json_response({"objects": access.list_roles(q.get("role_name"), ids, _limit_param(request))})


async def acls(request: web.Request, params: dict[str, str]) -> web.Response:
    """``/v1/acl``: list (GET), create (POST), delete by grant (DELETE)."""
    who = principal(request)
    db = store(request)
    if request.method == "GET":
        q = request.query
        limit = _limit_param(request)
        found = await db.read(
            lambda c: access.list_acls(c, who, q.get("object_type"), q.get("object_id"), limit)
        )
        return json_response({"objects": found})
    body = await json_body(request)
    change = access.create_acl if request.method == "POST" else access.delete_acl_matching
    return json_response(await db.write(lambda c: change(c, who, body)))


async def acl_by_id(request: web.Request, params: dict[str, str]) -> web.Response:
    acl_id = _uuid_param(params["id"], "acl id")
    who = principal(request)
    if request.method == "GET":
        return json_response(await store(request).read(lambda c: access.get_acl(c, who, acl_id)))
    return json_response(await store(request).write(lambda c: access.delete_acl(c, who, acl_id)))


# -- routing --------------------------------------------------------------------------------

Route = tuple[str, re.Pattern[str], Handler]
_ROW_TYPES = "|".join(OBJECT_TYPES)
_KIND_RE = "|".join(KINDS)


def _per_kind(fn: Callable[[web.Request, Kind], Awaitable[web.Response]]) -> Handler:
    async def run(request: web.Request, params: dict[str, str]) -> web.Response:
        return await fn(request, params["kind"])  # type: ignore[arg-type]

    return run


def _by_id(request: web.Request, params: dict[str, str]) -> Awaitable[web.Response]:
    return object_by_id(request, params["kind"], params["id"])  # type: ignore[arg-type]


def _rows(fn: Callable[[web.Request, ObjectType, str], Awaitable[web.Response]]) -> Handler:
    async def run(request: web.Request, params: dict[str, str]) -> web.Response:
        return await fn(request, params["type"], params["id"])  # type: ignore[arg-type]

    return run


ROUTES: Final[list[tuple[str, str, Handler]]] = [
    ("GET", "/version", version),
    ("POST", "/api/apikey/login", apikey_login),
    ("POST", "/api/self/me", self_me),
    ("GET", "/api/self/me", self_me),
    ("GET", "/v1/role", list_roles),
    ("GET", "/v1/acl", acls),
    ("POST", "/v1/acl", acls),
    ("DELETE", "/v1/acl", acls),
    ("GET", "/v1/acl/(?P<id>[^/]+)", acl_by_id),
    ("DELETE", "/v1/acl/(?P<id>[^/]+)", acl_by_id),
    ("POST", "/btql", btql),
    ("POST", "/logs3", logs3),
    ("POST", "/v1/insert", cross_insert),
    ("POST", f"/v1/(?P<type>{_ROW_TYPES})/(?P<id>[^/]+)/insert", _rows(insert_rows)),
    ("GET", f"/v1/(?P<type>{_ROW_TYPES})/(?P<id>[^/]+)/fetch", _rows(fetch_rows)),
    ("POST", f"/v1/(?P<type>{_ROW_TYPES})/(?P<id>[^/]+)/fetch", _rows(fetch_rows)),
    ("POST", f"/v1/(?P<kind>{_KIND_RE})", _per_kind(create_object)),
    ("GET", f"/v1/(?P<kind>{_KIND_RE})", _per_kind(list_objects)),
    ("GET", f"/v1/(?P<kind>{_KIND_RE})/(?P<id>[^/]+)", _by_id),
    ("PATCH", f"/v1/(?P<kind>{_KIND_RE})/(?P<id>[^/]+)", _by_id),
    ("DELETE", f"/v1/(?P<kind>{_KIND_RE})/(?P<id>[^/]+)", _by_id),
]
_COMPILED: Final[list[Route]] = [(m, re.compile(p + "/?$"), h) for m, p, h in ROUTES]
_PUBLIC: Final = frozenset({"/version"})


def _route(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    allowed = False
    for route_method, pattern, handler in _COMPILED:
        match = pattern.match(path)
        if match:
            if route_method == method:
                return handler, match.groupdict()
            allowed = True
    if allowed:
        raise web.HTTPMethodNotAllowed(method, [m for m, p, _ in _COMPILED if p.match(path)], text=f"{method} {path}: method not allowed")  # fmt: skip
    raise web.HTTPNotFound(text=f"{path}: no such endpoint")


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The single aiohttp handler: routing, auth, then the route's handler (latency and
    faults come first, from the fault middleware)."""
    path = re.sub("/{2,}", "/", request.path)
    handler, params = _route(request.method, path)
    if path not in _PUBLIC:
        found = await request.app[AUTH_KEY].principal(request.headers.get("Authorization"))
        if found is None:
            raise web.HTTPUnauthorized(text="missing or unknown API key (send Authorization: Bearer <key>)")
        who = request.headers.get("x-bt-impersonate-user")
        if who:
            caller = found
            try:
                found = await store(request).read(lambda c: access.impersonate(c, caller, who))
            except access.Forbidden as exc:
                raise web.HTTPForbidden(text=str(exc)) from None
        org_name = request.headers.get("x-bt-org-name")
        if org_name:
            narrowed = found.only_org(org_name)
            if narrowed is None:
                raise web.HTTPUnauthorized(text=f"x-bt-org-name: not a member of org {org_name!r}")
            found = narrowed
        request[PRINCIPAL] = found
    try:
        response = await handler(request, params)
    except (BadRequest, QueryError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except NotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    except access.Forbidden as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    except sqlite3.IntegrityError as exc:
        raise web.HTTPConflict(text=f"conflict: {exc}") from None
    except sqlite3.OperationalError as exc:  # e.g. a JSON path SQLite cannot evaluate
        raise web.HTTPBadRequest(text=f"query failed: {exc}") from None
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        await _maybe_compress(request, response, response.body)
    return response


def _gzip_fast(body: bytes) -> bytes:
    compressor = zlib.compressobj(level=1, wbits=31)  # wbits=31: gzip container
    return compressor.compress(body) + compressor.flush()


async def _maybe_compress(request: web.Request, response: web.Response, body: bytes) -> None:
    """Gzip large bodies for clients that accept it, at level 1 and off the event loop:
    aiohttp's own compression (level 6) would cost more CPU than the whole read path."""
    accepted = request.headers.get("Accept-Encoding", "").lower()
    if len(body) < _COMPRESS_MIN_BYTES or "gzip" not in accepted:
        return
    response.body = await anyio.to_thread.run_sync(_gzip_fast, body)
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"


async def _is_admin(request: web.Request) -> bool:
    found = await request.app[AUTH_KEY].principal(request.headers.get("Authorization"))
    return found is not None and found.admin


def create_app(
    db: Store, config: AppConfig | None = None, faults: FaultInjector | None = None
) -> web.Application:
    """The aiohttp application serving ``db``; the caller owns (and closes) the store.

    The fault middleware is always installed (off by default) so an admin key can switch
    faults on at run time through ``/_emulator/faults``."""
    config = config or AppConfig()
    app = web.Application(client_max_size=config.max_request_bytes)
    app[STORE_KEY] = db
    app[CONFIG_KEY] = config
    app[AUTH_KEY] = Authenticator(db)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    install(app, faults or FaultInjector(), is_admin=_is_admin)
    return app
