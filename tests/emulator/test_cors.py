"""CORS preflight: the spec gives almost every path an ``options`` operation ("Enable CORS",
no security), which a browser sends before a cross-origin request."""

from __future__ import annotations

from tests.emulator.conftest import Api


async def test_a_preflight_is_answered_without_a_key(api: Api) -> None:
    project = await api.project()
    asked = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
    served = {
        "/v1/project": {"GET", "POST"},
        f"/v1/project/{project['id']}": {"GET", "PATCH", "DELETE"},
        "/btql": {"POST"},
        "/logs3": {"POST"},
        "/version": {"GET"},
    }
    for path, methods in served.items():
        reply = await api.call("OPTIONS", path, key=None, headers=asked)
        assert reply.status == 200, (path, reply.text)
        assert reply.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        allowed = {m.strip() for m in reply.headers["Access-Control-Allow-Methods"].split(",")}
        assert allowed == {*methods, "OPTIONS"}, path
        assert reply.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    for key in ("", "nope"):  # an answer, or a refusal, is readable by the page that asked
        reply = await api.call("GET", "/v1/project", key=key, headers={"Origin": "http://localhost:3000"})
        assert reply.status == (200 if key == "" else 401)
        assert reply.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Access-Control-Allow-Origin" not in (await api.call("GET", "/v1/project")).headers
    assert (await api.call("OPTIONS", "/v1/nowhere", key=None, headers=asked)).status == 404
