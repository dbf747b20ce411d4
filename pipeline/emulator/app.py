"""HTTP routes of the emulator (aiohttp), mirroring the Braintrust REST API and ``/btql``.

Routing is done here rather than by aiohttp's router so paths with doubled slashes
(``//btql``: a base URL ending in ``/`` joined with ``/btql``) reach the same handler.
Handlers are thin: parse the body, run one store call off the event loop, render.
Errors become one-line plain-text bodies: 400 (malformed, naming the field; on ``/btql``
also an unknown object id, whichever org owns it), 401, 403 (impersonation or an ACL
change not allowed), 404 (also for objects of another org), 409 (a prompt's slug taken by a
function, a renamed object taking another's name), 413 (body over
``max_request_bytes``), 504 (a ``/btql`` query over its budget, ``scanlimit.py``).
``x-bt-impersonate-user`` swaps the request's principal for the
impersonated user's before any handler runs (rules in ``access.py``).
"""

from __future__ import annotations

import re
import sqlite3
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio.to_thread
from aiohttp import web

from pipeline import __version__
from pipeline.emulator import (
    access,
    acl_routes,
    app_routes,
    attachments,
    bodies,
    config_btql,
    config_routes,
    configobjects,
    feedback,
    inserts,
    listing,
    nesting,
    objects,
    organizations,
    overflow,
    reads,
    role_routes,
    summaries,
    users,
)
from pipeline.emulator.auth import Authenticator
from pipeline.emulator.faults import FaultInjector, install
from pipeline.emulator.objects import KINDS, Conflict, Kind, ListFilter, NotFound
from pipeline.emulator.profiles import ReadPolicy
from pipeline.emulator.query import QueryError
from pipeline.emulator.rest import (
    AUTH_KEY,
    PRINCIPAL,
    STORE_KEY,
    Handler,
    created_response,
    json_body,
    json_response,
    principal,
    store,
)
from pipeline.emulator.rest import uuid_param as _uuid_param
from pipeline.emulator.scanlimit import QueryTimeout
from pipeline.emulator.store import Store
from pipeline.emulator.validate import BadRequest
from pipeline.querylang.ast import OBJECT_TYPES, ObjectType

DEFAULT_MAX_REQUEST_BYTES: Final = 6 * 1024 * 1024
_COMPRESS_MIN_BYTES: Final = 1024


@dataclass(frozen=True)
class AppConfig:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    reads: ReadPolicy = field(default_factory=ReadPolicy)  # the /btql profile and row-scan timeout


# -- helpers ------------------------------------------------------------------------------


CONFIG_KEY: Final = web.AppKey("config", AppConfig)


# -- objects ------------------------------------------------------------------------------


async def create_object(request: web.Request, kind: Kind) -> web.Response:
    body = bodies.create_body(f"/v1/{kind}", await json_body(request))
    who = principal(request)
    if kind == "project":
        org = who.default_org(body.get("org_name"))
        if org is None:
            raise NotFound(f"org {body.get('org_name')!r} not found")
        obj, existed = await store(request).write(
            lambda c: objects.create_project(c, body, org.org_id, who.user_id)
        )
    else:
        create = objects.create_dataset if kind == "dataset" else objects.create_experiment
        obj, existed = await store(request).write(lambda c: create(c, body, who.org_ids, who.user_id))
    return created_response(obj, existed)


def _list_filter(request: web.Request, kind: Kind) -> ListFilter:
    q = request.query
    paging = listing.parse(q)
    if "project_id" in q:
        _uuid_param(q["project_id"], "project_id")
    return ListFilter(
        project_name=q.get("project_name") if kind != "project" else None,
        project_id=q.get("project_id"), name=q.get(f"{kind}_name"), org_name=q.get("org_name"),
        ids=paging.ids, limit=paging.limit, starting_after=paging.starting_after,
        ending_before=paging.ending_before,
    )  # fmt: skip


async def list_objects(request: web.Request, kind: Kind) -> web.Response:
    flt = _list_filter(request, kind)
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
        body = bodies.checked(
            bodies.request_schema("PATCH", f"/v1/{kind}/{{{kind}_id}}"), await json_body(request)
        )
        obj = await db.write(lambda c: objects.patch_object(c, kind, object_id, org_ids, body))
    else:
        obj = await db.write(lambda c: objects.delete_object(c, kind, object_id, org_ids))
    return json_response(obj)


# -- rows ---------------------------------------------------------------------------------


async def _write(request: web.Request, batches: list[inserts.Batch]) -> list[list[str]]:
    who = principal(request)
    return await store(request).write(lambda c: inserts.write_batches(c, batches, who.org_ids, who.user_id))


async def insert_rows(request: web.Request, object_type: ObjectType, object_id: str) -> web.Response:
    _uuid_param(object_id, f"{object_type} id")
    body = nesting.decode_rows_body(await request.read(), envelope=2)  # {"events": [row]}
    batches = inserts.object_insert(object_type, object_id, body)
    (row_ids,) = await _write(request, batches)
    return json_response({"row_ids": row_ids})


async def cross_insert(request: web.Request, params: dict[str, str]) -> web.Response:
    body = nesting.decode_rows_body(await request.read(), envelope=4)  # {type: {id: {"events": [row]}}}
    batches = inserts.cross_object_insert(body)
    results = await _write(request, batches)
    out: dict[str, dict[str, Any]] = {}
    for (object_type, object_id, _), row_ids in zip(batches, results, strict=True):
        out.setdefault(object_type, {})[object_id] = {"row_ids": row_ids}
    return json_response(out)


async def logs3(request: web.Request, params: dict[str, str]) -> web.Response:
    body = nesting.decode_rows_body(await request.read(), envelope=2)  # {"rows": [row]}
    reference = inserts.overflow_reference(body)
    if reference is not None:
        row_ids = await overflow.apply_reference(store(request), reference, principal(request))
        return json_response({"row_ids": row_ids})
    results = await _write(request, inserts.logs3_insert(body))
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
    kind = config_btql.source_kind(body)
    if kind is not None:  # a project's prompts or functions (their versions with audit_log)
        who = principal(request)
        found = await store(request).read(lambda c: config_btql.rows(c, kind, body, who))
        return json_response({"data": found, "cursor": None})
    org_ids = principal(request).org_ids
    policy = request.app[CONFIG_KEY].reads
    try:
        page = await store(request).read(lambda c: reads.btql_page(c, body, org_ids, policy))
    except QueryTimeout as exc:
        raise web.HTTPGatewayTimeout(text=str(exc)) from None
    fmt = body.get("fmt") or "json"  # checked by btql_page
    headers = {"x-bt-cursor": page.cursor} if page.cursor else {}
    if fmt == "jsonl":
        return web.Response(
            body=reads.render_jsonl(page), headers=headers, content_type="application/x-jsonlines"
        )
    return web.Response(body=reads.render_json(page), headers=headers, content_type="application/json")


# -- misc ---------------------------------------------------------------------------------


async def hello(request: web.Request, params: dict[str, str]) -> web.Response:
    """``GET /v1``: the API root, which answers without a key (the spec's ``getIndex``)."""
    return web.Response(text="Hello, World!")


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
    """``/api/self/me``, and ``GET /ping``: the SDKs' ``user_info()`` and the JavaScript
    connection's ``ping()`` ask the API there (not in the spec; answered as ``self/me``)."""
    return json_response(access.me(principal(request)))


# -- routing --------------------------------------------------------------------------------

Route = tuple[str, re.Pattern[str], Handler]
_ROW_TYPES = "|".join(OBJECT_TYPES)
_KIND_RE = "|".join(KINDS)
_CONFIG_RE = "|".join(configobjects.CONFIG_KINDS)


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
    ("GET", "/ping", self_me),
    ("GET", "/v1", hello),
    ("GET", "/v1/role", role_routes.list_roles),
    ("POST", "/v1/role", role_routes.create_role),
    ("PUT", "/v1/role", role_routes.create_role),
    ("GET", "/v1/role/(?P<id>[^/]+)", role_routes.role_by_id),
    ("PATCH", "/v1/role/(?P<id>[^/]+)", role_routes.role_by_id),
    ("DELETE", "/v1/role/(?P<id>[^/]+)", role_routes.role_by_id),
    ("GET", "/v1/acl", acl_routes.acls),
    ("POST", "/v1/acl", acl_routes.acls),
    ("DELETE", "/v1/acl", acl_routes.acls),
    ("GET", "/v1/acl/list_org", acl_routes.list_org),
    ("POST", "/v1/acl/batch_update", acl_routes.batch_update),
    ("POST", "/v1/acl/batch-update", acl_routes.batch_update),  # the generated client's spelling
    ("GET", "/v1/acl/(?P<id>[^/]+)", acl_routes.acl_by_id),
    ("DELETE", "/v1/acl/(?P<id>[^/]+)", acl_routes.acl_by_id),
    ("GET", "/v1/user", users.list_users),
    ("GET", "/v1/user/(?P<id>[^/]+)", users.get_user),
    ("GET", "/v1/organization", organizations.list_orgs),
    ("GET", "/v1/organization/(?P<id>[^/]+)", organizations.org_by_id),
    ("PATCH", "/v1/organization/(?P<id>[^/]+)", organizations.org_by_id),
    ("POST", f"/v1/(?P<type>{_ROW_TYPES})/(?P<id>[^/]+)/feedback", _rows(feedback.feedback)),
    ("POST", "/btql", btql),
    ("POST", "/logs3", logs3),
    ("POST", "/logs3/overflow", overflow.request_upload),
    ("PUT", overflow.UPLOAD_PREFIX + "(?P<token>[A-Za-z0-9_-]+)", overflow.receive_upload),
    ("GET", "/attachment", attachments.describe),
    ("POST", "/attachment", attachments.request_upload),
    ("POST", "/attachment/status", attachments.update_status),
    ("PUT", attachments.URL_PREFIX + "(?P<token>[A-Za-z0-9_-]+)", attachments.receive),
    ("GET", attachments.URL_PREFIX + "(?P<token>[A-Za-z0-9_-]+)", attachments.send),
    ("POST", "/api/(?P<kind>project|dataset|experiment)/register", app_routes.register),
    ("POST", "/api/(?P<what>experiment/get|self/get_object_info)", app_routes.lookup),
    ("GET", "/api/project", app_routes.project_by_id),
    ("GET", "/dataset-summary", summaries.dataset_records),
    ("POST", "/api/base_experiment/get_id", summaries.base_experiment_id),
    ("GET", "/experiment-comparison2", summaries.experiment_comparison),
    ("GET", "/v1/experiment/(?P<id>[^/]+)/summarize", summaries.summarize_experiment),
    ("GET", "/v1/dataset/(?P<id>[^/]+)/summarize", summaries.summarize_dataset),
    ("POST", "/v1/insert", cross_insert),
    ("POST", f"/v1/(?P<type>{_ROW_TYPES})/(?P<id>[^/]+)/insert", _rows(insert_rows)),
    ("GET", f"/v1/(?P<type>{_ROW_TYPES})/(?P<id>[^/]+)/fetch", _rows(fetch_rows)),
    ("POST", f"/v1/(?P<type>{_ROW_TYPES})/(?P<id>[^/]+)/fetch", _rows(fetch_rows)),
    ("POST", f"/v1/(?P<kind>{_CONFIG_RE})", config_routes.create),
    ("DELETE", "/v1/(?P<kind>ai_secret)", config_routes.delete_by_name),
    ("PUT", f"/v1/(?P<kind>{_CONFIG_RE})", config_routes.create),
    ("GET", f"/v1/(?P<kind>{_CONFIG_RE})", config_routes.list_objects),
    ("GET", f"/v1/(?P<kind>{_CONFIG_RE})/(?P<id>[^/]+)", config_routes.by_id),
    ("PATCH", f"/v1/(?P<kind>{_CONFIG_RE})/(?P<id>[^/]+)", config_routes.by_id),
    ("DELETE", f"/v1/(?P<kind>{_CONFIG_RE})/(?P<id>[^/]+)", config_routes.by_id),
    ("POST", f"/v1/(?P<kind>{_KIND_RE})", _per_kind(create_object)),
    ("GET", f"/v1/(?P<kind>{_KIND_RE})", _per_kind(list_objects)),
    ("GET", f"/v1/(?P<kind>{_KIND_RE})/(?P<id>[^/]+)", _by_id),
    ("PATCH", f"/v1/(?P<kind>{_KIND_RE})/(?P<id>[^/]+)", _by_id),
    ("DELETE", f"/v1/(?P<kind>{_KIND_RE})/(?P<id>[^/]+)", _by_id),
]
_COMPILED: Final[list[Route]] = [(m, re.compile(p + "/?$"), h) for m, p, h in ROUTES]
_PUBLIC: Final = frozenset({"/version", "/v1", "/v1/"})
#: Signed URLs: their token is their credential, so they need no API key.
_SIGNED: Final = (overflow.UPLOAD_PREFIX, attachments.URL_PREFIX)


def _methods(path: str) -> list[str]:
    """The methods the routes matching ``path`` serve."""
    return list(dict.fromkeys(m for m, pattern, _ in _COMPILED if pattern.match(path)))


def _preflight(request: web.Request, path: str) -> web.Response:
    """The answer to a CORS preflight (the spec's ``options`` operations: "Enable CORS", no
    key): the path's methods, and the origin and headers the browser asked for."""
    methods = _methods(path)
    if not methods:
        raise web.HTTPNotFound(text=f"{path}: no such endpoint")
    return web.Response(
        headers={
            "Access-Control-Allow-Methods": ", ".join([*methods, "OPTIONS"]),
            "Access-Control-Allow-Headers": request.headers.get(
                "Access-Control-Request-Headers", "authorization, content-type"
            ),
            "Access-Control-Max-Age": "86400",
        }
    )


async def _allow_origin(request: web.Request, response: web.StreamResponse) -> None:
    """Let a browser page of any origin read every answer, errors too, as the hosted API does
    (run as each response is prepared)."""
    origin = request.headers.get("Origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = ", ".join(filter(None, (response.headers.get("Vary"), "Origin")))


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
    if request.method == "OPTIONS":
        return _preflight(request, path)
    handler, params = _route(request.method, path)
    if path not in _PUBLIC and not path.startswith(_SIGNED):
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
    except Conflict as exc:
        raise web.HTTPConflict(text=str(exc)) from None
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
    app.on_response_prepare.append(_allow_origin)
    install(app, faults or FaultInjector(), is_admin=_is_admin)
    return app
