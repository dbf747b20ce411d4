"""Every answer of every route the emulator serves validates against the response schema the
shipped spec gives that operation (status 200 and body), on a server of this module's own.

The spec's operations are split in two explicit sets: :data:`CASES` (a valid request for each
operation the emulator serves) and :data:`NOT_SERVED` (operations it does not serve, each
commented). A test checks that the two sets cover the spec exactly, so a new operation in the
spec, or a route the emulator starts serving, shows up here instead of being skipped silently.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from pipeline.emulator import spec
from pipeline.emulator.roles import OWNER_ROLE_ID
from pipeline.emulator.server import RunningServer, ServerConfig

_METHODS = ("get", "post", "put", "patch", "delete")

#: Operations of the spec the emulator does not serve (each answers 404 or 405, or 400 where a
#: served route's pattern takes the path for an id).
NOT_SERVED: frozenset[str] = frozenset({
    # Object kinds the emulator does not keep (create, replace, list, get, patch, delete each):
    # agents, environment variables, MCP servers, dataset snapshots.
    *(f"{verb}{kind}" for kind in ("Agent", "EnvVar", "McpServer", "DatasetSnapshot")
      for verb in ("post", "put", "get")),
    *(f"{verb}{kind}Id" for kind in ("Agent", "EnvVar", "McpServer", "DatasetSnapshot")
      for verb in ("get", "patch", "delete")),
    "postFunctionIdInvoke",  # running a function needs a model or code runner
    # API keys and service tokens: the emulator's keys are fixed when it starts.
    "getApiKey", "getApiKeyId", "deleteApiKeyId",
    "postServiceToken", "putServiceToken", "getServiceToken", "deleteServiceToken",
    "getServiceTokenId", "deleteServiceTokenId",
    # Environments (named pins of prompt and function versions; versions are served by id).
    "listEnvironments", "createEnvironment", "getEnvironment", "updateEnvironment", "deleteEnvironment",
    # Inviting and removing org members: the emulator's members are its keys, fixed at start.
    "patchOrganizationMembers",
    # The AI proxy and remote evals run models, which the emulator has none of.
    "proxychatCompletions", "proxycompletions", "proxyauto", "proxyembeddings", "proxycredentials",
    "proxy{path+}", "evalLaunch",
})  # fmt: skip


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)


class Context:
    """Objects of the server the requests name; ``fresh_*`` make throwaway ones for deletes."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        me = self.ok("POST", "/api/self/me")
        self.user_id: str = me["id"]
        self.org_id: str = me["organizations"][0]["id"]
        self.member_id: str = self.ok("POST", "/api/self/me", key="bt-local-member-key")["id"]
        self.project = self.fresh("project")
        self.dataset = self.fresh("dataset")
        self.experiment = self.fresh("experiment")
        for object_type, object_id in self.row_objects():
            self.ok("POST", f"/v1/{object_type}/{object_id}/insert", {"events": [{"id": "row", "input": 1}]})  # fmt: skip
        self.role = self.ok("POST", "/v1/role", {"name": "spec-role"})
        self.config = {
            kind: self.ok("POST", f"/v1/{kind}", body(self)) for kind, (_, body, _) in CONFIG.items()
        }
        self.acl = self.ok("POST", "/v1/acl", self.grant("read"))

    def ok(self, method: str, path: str, body: Any = None, key: str = "bt-local-key") -> Any:
        reply = self.http.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
        assert reply.status_code == 200, (method, path, reply.text)
        return reply.json()

    def fresh(self, kind: str) -> dict[str, Any]:
        name = f"{kind}-{uuid.uuid4().hex[:8]}"
        body = {"name": name} if kind == "project" else {"name": name, "project_id": self.project["id"]}
        created: dict[str, Any] = self.ok("POST", f"/v1/{kind}", body)
        return created

    def row_objects(self) -> list[tuple[str, str]]:
        return [("project_logs", self.project["id"]), ("dataset", self.dataset["id"]), ("experiment", self.experiment["id"])]  # fmt: skip

    def granted(self, permission: str) -> dict[str, Any]:
        """A grant made now (for a request that removes it)."""
        self.ok("POST", "/v1/acl", self.grant(permission))
        return self.grant(permission)

    def grant(self, permission: str) -> dict[str, Any]:
        return {"object_type": "project", "object_id": self.project["id"], "user_id": self.member_id, "permission": permission}  # fmt: skip


def _rows(
    object_type: str, action: str, body: Any = None, method: str = "POST"
) -> Callable[[Context], Request]:
    def build(ctx: Context) -> Request:
        object_id = dict(ctx.row_objects())[object_type]
        return Request(method, f"/v1/{object_type}/{object_id}/{action}", body)

    return build


def _kind_cases(kind: str, title: str, patch: dict[str, Any]) -> dict[str, Callable[[Context], Request]]:
    def create(ctx: Context) -> Request:
        body = {"name": f"spec-{uuid.uuid4().hex[:6]}"}
        return Request(
            "POST", f"/v1/{kind}", body if kind == "project" else {**body, "project_id": ctx.project["id"]}
        )

    return {
        f"post{title}": create,
        f"get{title}": lambda ctx: Request("GET", f"/v1/{kind}", params={"limit": "2"}),
        f"get{title}Id": lambda ctx: Request("GET", f"/v1/{kind}/{getattr(ctx, kind)['id']}"),
        f"patch{title}Id": lambda ctx: Request("PATCH", f"/v1/{kind}/{getattr(ctx, kind)['id']}", patch),
        f"delete{title}Id": lambda ctx: Request("DELETE", f"/v1/{kind}/{ctx.fresh(kind)['id']}"),
    }


def _view(ctx: Context) -> dict[str, Any]:
    return {"object_type": "project", "object_id": ctx.project["id"]}


def _named(ctx: Context, **fields: Any) -> dict[str, Any]:
    """A create body with a fresh name (and slug) in the context's project."""
    name = f"spec-{uuid.uuid4().hex[:8]}"
    return {"project_id": ctx.project["id"], "name": name, "slug": name, **fields}


_CHAT = {"prompt": {"type": "chat", "messages": [{"role": "user", "content": "hi"}]}}
_AUTOMATION = {"event_type": "logs", "btql_filter": "true", "interval_seconds": 60, "action": {"type": "webhook", "url": "https://example.test"}}  # fmt: skip

#: The configuration kinds: title in operation ids, a create body, a patch body.
CONFIG: dict[str, tuple[str, Callable[[Context], dict[str, Any]], dict[str, Any]]] = {
    "prompt": (
        "Prompt",
        lambda ctx: _named(ctx, prompt_data=_CHAT, metadata={"k": 1}),
        {"description": "patched"},
    ),
    "function": (
        "Function",
        lambda ctx: _named(ctx, function_data={"type": "prompt"}, prompt_data=_CHAT, function_type="scorer"),
        {"tags": ["t"]},
    ),
    "project_score": (
        "ProjectScore",
        lambda ctx: _named(ctx, score_type="categorical", categories=[{"name": "ok", "value": 1}]),
        {"description": "patched"},
    ),
    "project_tag": ("ProjectTag", lambda ctx: _named(ctx, color="red"), {"color": "blue"}),
    "span_iframe": (
        "SpanIframe",
        lambda ctx: _named(ctx, url="https://example.test"),
        {"post_message": True},
    ),
    "project_automation": (
        "ProjectAutomation",
        lambda ctx: _named(ctx, config=_AUTOMATION),
        {"description": "patched"},
    ),
    "view": (
        "View",
        lambda ctx: {**_view(ctx), "view_type": "logs", "name": uuid.uuid4().hex},
        {"view_data": {"search": {}}},
    ),
    "group": (
        "Group",
        lambda ctx: {"name": uuid.uuid4().hex, "member_users": [ctx.member_id]},
        {"description": "patched"},
    ),
    "ai_secret": (
        "AiSecret",
        lambda ctx: {"name": uuid.uuid4().hex, "type": "openai", "secret": "sk-spec-0123456789"},
        {"metadata": {"k": 1}, "secret": "sk-spec-patched-98765"},
    ),
}


def _config_cases(kind: str) -> dict[str, Callable[[Context], Request]]:
    title, body, patch = CONFIG[kind]
    scope: Callable[[Context], dict[str, Any]] = _view if kind == "view" else lambda ctx: {}
    list_params: Callable[[Context], dict[str, str]] = (lambda ctx: {**_view(ctx), "limit": "2"}) if kind == "view" else (lambda ctx: {"limit": "2"})  # fmt: skip

    def fresh(ctx: Context) -> str:
        made: str = ctx.ok("POST", f"/v1/{kind}", body(ctx))["id"]
        return made

    return {
        f"post{title}": lambda ctx: Request("POST", f"/v1/{kind}", body(ctx)),
        f"put{title}": lambda ctx: Request("PUT", f"/v1/{kind}", body(ctx)),
        f"get{title}": lambda ctx: Request("GET", f"/v1/{kind}", params=list_params(ctx)),
        f"get{title}Id": lambda ctx: Request(
            "GET", f"/v1/{kind}/{ctx.config[kind]['id']}", params=scope(ctx)
        ),
        f"patch{title}Id": lambda ctx: Request(
            "PATCH", f"/v1/{kind}/{ctx.config[kind]['id']}", {**scope(ctx), **patch}
        ),
        f"delete{title}Id": lambda ctx: Request("DELETE", f"/v1/{kind}/{fresh(ctx)}", scope(ctx) or None),
    }


_FEEDBACK = {"feedback": [{"id": "row", "comment": "spec", "metadata": {"by": "test"}}]}

#: A valid request for every operation the emulator serves, by operationId.
CASES: dict[str, Callable[[Context], Request]] = {
    "getIndex": lambda ctx: Request("GET", "/v1"),
    **{op: case for kind in CONFIG for op, case in _config_cases(kind).items()},
    **_kind_cases("project", "Project", {"description": "patched"}),
    **_kind_cases("dataset", "Dataset", {"metadata": {"k": 1}}),
    **_kind_cases("experiment", "Experiment", {"tags": ["t"]}),
    **{
        f"{verb}{title}{action}": _rows(object_type, action.lower(), body, verb.upper())
        for object_type, title in (
            ("project_logs", "ProjectLogsId"),
            ("dataset", "DatasetId"),
            ("experiment", "ExperimentId"),
        )
        for verb, action, body in (
            ("post", "Insert", {"events": [{"id": "new", "input": 2}]}),
            ("post", "Fetch", {"limit": 10}),
            ("get", "Fetch", None),
            ("post", "Feedback", _FEEDBACK),
        )
    },
    "deleteAiSecret": lambda ctx: Request(
        "DELETE",
        "/v1/ai_secret",
        {"name": ctx.ok("POST", "/v1/ai_secret", CONFIG["ai_secret"][1](ctx))["name"]},
    ),
    "getExperimentIdSummarize": _rows("experiment", "summarize", method="GET"),
    "getDatasetIdSummarize": _rows("dataset", "summarize", method="GET"),
    "postCrossObjectInsert": lambda ctx: Request(
        "POST", "/v1/insert", {"dataset": {ctx.dataset["id"]: {"events": [{"id": "x", "input": 1}]}}}
    ),
    "postRole": lambda ctx: Request(
        "POST", "/v1/role", {"name": "spec-role", "member_permissions": [{"permission": "read"}]}
    ),
    "putRole": lambda ctx: Request(
        "PUT", "/v1/role", {"name": "spec-role-put", "member_roles": [OWNER_ROLE_ID]}
    ),
    "getRole": lambda ctx: Request("GET", "/v1/role", params={"limit": "2"}),
    "getRoleId": lambda ctx: Request("GET", f"/v1/role/{ctx.role['id']}"),
    "patchRoleId": lambda ctx: Request(
        "PATCH", f"/v1/role/{ctx.role['id']}", {"add_member_permissions": [{"permission": "update"}]}
    ),
    "deleteRoleId": lambda ctx: Request(
        "DELETE", f"/v1/role/{ctx.ok('POST', '/v1/role', {'name': uuid.uuid4().hex})['id']}"
    ),
    "postAcl": lambda ctx: Request("POST", "/v1/acl", ctx.grant("update")),
    "deleteAcl": lambda ctx: Request("DELETE", "/v1/acl", ctx.granted("delete")),
    "getAcl": lambda ctx: Request(
        "GET", "/v1/acl", params={"object_type": "project", "object_id": ctx.project["id"]}
    ),
    "getAclId": lambda ctx: Request("GET", f"/v1/acl/{ctx.acl['id']}"),
    "deleteAclId": lambda ctx: Request(
        "DELETE", f"/v1/acl/{ctx.ok('POST', '/v1/acl', ctx.grant('create_acls'))['id']}"
    ),
    "aclBatchUpdate": lambda ctx: Request(
        "POST",
        "/v1/acl/batch_update",
        {"add_acls": [ctx.grant("read_acls")], "remove_acls": [ctx.grant("read_acls")]},
    ),
    "aclListOrg": lambda ctx: Request("GET", "/v1/acl/list_org", params={"limit": "5"}),
    "getUser": lambda ctx: Request("GET", "/v1/user", params={"limit": "5"}),
    "getUserId": lambda ctx: Request("GET", f"/v1/user/{ctx.user_id}"),
    "getOrganization": lambda ctx: Request("GET", "/v1/organization"),
    "getOrganizationId": lambda ctx: Request("GET", f"/v1/organization/{ctx.org_id}"),
    "patchOrganizationId": lambda ctx: Request(
        "PATCH", f"/v1/organization/{ctx.org_id}", {"api_url": "http://127.0.0.1:1"}
    ),
}


def operations() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every operation of the spec: operationId -> (method, path template, operation)."""
    return {
        op["operationId"]: (method.upper(), path, op)
        for path, item in spec.spec()["paths"].items()
        for method, op in item.items()
        if method in _METHODS
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("spec") / "emulator.db"
    with RunningServer(ServerConfig(port=0, db=str(db))) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    assert server.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def ctx(http: httpx.Client) -> Context:
    return Context(http)


def _nullable_refs(node: Any) -> Any:
    """``node`` with each ``{"$ref": X, "nullable": true}`` read as "X or null".

    The spec marks some references nullable beside the ``$ref`` (an ACL's ``permission``), which
    OpenAPI 3.0 validators ignore; the spec means them nullable, as its descriptions and the
    generated client's models say. Likewise ``{"type": "null"}`` (a branch of a view's ``view_data``
    and ``options``), a JSON Schema type OpenAPI 3.0 lacks, is read as the value null."""
    if isinstance(node, list):
        return [_nullable_refs(v) for v in node]
    if not isinstance(node, dict):
        return node
    if node == {"type": "null"}:
        return {"enum": [None]}
    found = {k: _nullable_refs(v) for k, v in node.items()}
    if "$ref" in found and found.get("nullable"):
        return {"anyOf": [{"$ref": found["$ref"]}, {"enum": [None]}]}
    return found


@functools.cache
def _registry() -> Registry[Any]:
    document = _nullable_refs(spec.spec())
    return Registry().with_resource("spec", Resource.from_contents(document, default_specification=DRAFT4))


def _validator(schema: dict[str, Any]) -> OAS30Validator:
    rooted = _rooted(_nullable_refs(schema))
    return OAS30Validator(rooted, registry=_registry(), format_checker=OAS30Validator.FORMAT_CHECKER)


def _rooted(node: Any) -> Any:
    """``node`` with its local ``$ref``s pointing into the registered spec."""
    if isinstance(node, dict):
        return {k: (f"spec{v}" if k == "$ref" else _rooted(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rooted(v) for v in node]
    return node


def test_cases_and_gaps_cover_the_spec_exactly() -> None:
    ids = set(operations())
    assert not CASES.keys() & NOT_SERVED
    assert set(CASES) | NOT_SERVED == ids, {"unknown": (set(CASES) | NOT_SERVED) - ids, "uncovered": ids - set(CASES) - NOT_SERVED}  # fmt: skip


@pytest.mark.parametrize("operation_id", sorted(CASES))
def test_response_matches_the_spec(operation_id: str, ctx: Context, http: httpx.Client) -> None:
    method, template, operation = operations()[operation_id]
    request = CASES[operation_id](ctx)
    assert request.method == method and _matches(template, request.path), (request, template)
    reply = http.request(request.method, request.path, json=request.body, params=request.params, headers={"Authorization": "Bearer bt-local-key"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    content = operation["responses"]["200"]["content"]
    media = reply.headers["content-type"].split(";")[0]
    assert media in content, (media, list(content))
    body = reply.json() if media == "application/json" else reply.text
    _validator(content[media]["schema"]).validate(body)


@pytest.mark.parametrize("operation_id", sorted(NOT_SERVED))
def test_unserved_operations_are_not_answered(operation_id: str, http: httpx.Client) -> None:
    method, template, _ = operations()[operation_id]
    path = "/".join(str(uuid.uuid4()) if p.startswith("{") else p for p in template.split("/"))
    reply = http.request(method, path, json={}, headers={"Authorization": "Bearer bt-local-key"})
    assert reply.status_code in (400, 404, 405), (operation_id, reply.status_code, reply.text)


def _matches(template: str, path: str) -> bool:
    parts, wanted = template.split("/"), path.split("/")
    return len(parts) == len(wanted) and all(
        p.startswith("{") or p == w for p, w in zip(parts, wanted, strict=True)
    )


def test_cors_preflights_answer_as_the_spec_says(ctx: Context, http: httpx.Client) -> None:
    """Each ``options`` operation ("Enable CORS", no key) of a path the emulator serves answers
    200 with the spec's headers; one of a path no route takes, 404 as its other methods."""
    served = {template for _, template, _ in operations().values() if _served(template)}
    asked = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET"}
    for template, item in spec.spec()["paths"].items():
        if "options" not in item:
            continue
        path = "/".join(str(uuid.uuid4()) if p.startswith("{") else p for p in template.split("/"))
        reply = http.options(path, headers=asked)
        if template not in served:  # 404, or 200 where a served route takes the path for an id
            assert reply.status_code in (200, 404), (template, reply.status_code)
            continue
        assert reply.status_code == 200, (template, reply.text)
        wanted = {name.lower() for name in item["options"]["responses"]["200"]["headers"]}
        assert wanted <= set(reply.headers.keys()), (template, wanted - set(reply.headers.keys()))


def _served(template: str) -> bool:
    """Whether some operation of ``template`` is served."""
    return any(
        op["operationId"] in CASES
        for method, op in spec.spec()["paths"][template].items()
        if method in _METHODS
    )
