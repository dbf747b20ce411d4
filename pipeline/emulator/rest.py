"""What every REST handler reads from its request: the store, the principal, a JSON body.

The keys live here rather than in ``app.py`` so handler modules (``role_routes.py``,
``acl_routes.py``, ``users.py``, ...) can use them while ``app.py`` imports those modules
for its route table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from pipeline.emulator import jsonvalues
from pipeline.emulator.auth import Authenticator, Principal
from pipeline.emulator.store import Store
from pipeline.emulator.validate import BadRequest, uuid_string

#: A route's handler: the request and the named groups of the route's path pattern.
Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]

STORE_KEY: Final = web.AppKey("store", Store)
AUTH_KEY: Final = web.AppKey("auth", Authenticator)
PRINCIPAL: Final = web.RequestKey("principal", Principal)
#: Set on every get-or-create answer: whether the object was there already (the SDKs' name).
FOUND_EXISTING_HEADER: Final = "x-bt-found-existing"


def principal(request: web.Request) -> Principal:
    found: Principal = request[PRINCIPAL]
    return found


def store(request: web.Request) -> Store:
    return request.app[STORE_KEY]


def created_response(obj: Any, existed: bool) -> web.Response:
    """The answer of a get-or-create: the object, and whether it was found."""
    return json_response(obj, headers={FOUND_EXISTING_HEADER: "true" if existed else "false"})


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(value), status=status, headers=headers, content_type="application/json"
    )


async def json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return jsonvalues.loads(raw)
    except RecursionError:
        raise BadRequest(
            "request body: nested too deep (more levels of objects and arrays than it decodes)"
        ) from None
    except ValueError as exc:
        raise BadRequest(f"request body: invalid JSON ({exc})") from None


def uuid_param(value: str, where: str) -> str:
    uuid_string(value, where)
    return value
