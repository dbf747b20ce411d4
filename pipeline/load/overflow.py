"""One event over the request limit, sent the way the official SDKs send a batch over it.

An insert request is bounded by ``logs3_payload_max_bytes`` (``GET /version``). The official
SDKs send a batch bigger than that in three steps, and so does an event bigger than that here:

1. ``POST /logs3/overflow`` ``{content_type: "application/json", size_bytes, rows: [{object_ids,
   has_comment, is_delete, input_row: {byte_size}}]}`` answers ``{method: "PUT" | "POST",
   signedUrl, headers | fields, key}``;
2. the payload goes to ``signedUrl`` (object storage, whose signature is in the URL) through a
   plain aiohttp request that carries neither the API key nor any other credential header,
   with the client's retry policy and timeouts (:func:`upload`);
3. ``POST /logs3`` ``{"rows": {"type": "logs3_overflow", "key", "size_bytes"}, "api_version": 2}``
   writes it. The key only ever travels in API requests.

The payload is the document ``/logs3`` takes, ``{"rows": [row], "api_version": 2}``, the row
being the encoded event with the destination's object ids in front (``project_id`` +
``log_id: "g"``, ``dataset_id`` or ``experiment_id``), spliced in as bytes so the event is
not encoded again (:func:`build_payload`).

Every step may be repeated: the event keeps its id, so applying it again overwrites. As in
the SDKs, a refused upload starts over with a fresh URL (an attempt whose answer was lost
may have used the first one up), up to the client's number of attempts. A server without
the route (404 or 405 on step 1), or one refusing the event there (400, 413), raises
:class:`OverflowRefused`, and the insert pool treats the event as it did before the route
existed; after a missing route it does not ask again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import anyio

from pipeline.api.client import TRANSPORT_ERRORS, BraintrustClient, parse_retry_after
from pipeline.common import jsoncodec
from pipeline.common.errors import ApiError, NotFoundError, TransientApiError

#: ``rows.type`` of the ``/logs3`` body that names an upload instead of carrying rows.
REFERENCE_TYPE: Final = "logs3_overflow"
#: The ``/logs3`` document version the SDKs write.
API_VERSION: Final = 2
_CONTENT_TYPE: Final = "application/json"
_PAYLOAD_HEAD: Final = b'{"rows": ['
_PAYLOAD_TAIL: Final = b'], "api_version": 2}'
_ID_FIELD: Final = {"dataset": "dataset_id", "experiment": "experiment_id"}
_NOT_SERVED: Final = frozenset({405})  # with 404 (NotFoundError): no such route
_REFUSED: Final = frozenset({400, 413})  # the route is there but will not take this event


class OverflowRefused(Exception):
    """The overflow route cannot take the event; ``reason`` is one line for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _UploadRefused(Exception):
    """The signed URL refused the upload with a status not worth repeating to that URL."""


def object_ids(path: str) -> dict[str, str]:
    """The ids a ``/logs3`` row names its object with, from the batch's ``/v1/<type>/<id>``."""
    parts = path.split("/")
    if len(parts) != 4 or parts[:2] != ["", "v1"] or parts[2] not in ("project_logs", *_ID_FIELD):
        raise ValueError(f"{path}: not an object's rows path (/v1/<type>/<id>)")
    object_type, object_id = parts[2], parts[3]
    if object_type == "project_logs":
        return {"project_id": object_id, "log_id": "g"}
    return {_ID_FIELD[object_type]: object_id}


@dataclass(frozen=True)
class Payload:
    """The upload body and the row description ``/logs3/overflow`` asks for."""

    body: bytes
    row: dict[str, Any]


def build_payload(event: bytes, ids: dict[str, str]) -> Payload:
    """``{"rows": [row], "api_version": 2}`` for one encoded event (a JSON object); the event
    is decoded only for the two flags the SDKs report."""
    decoded = jsoncodec.loads(event)
    if not isinstance(decoded, dict) or event[:1] != b"{":
        raise ValueError("an event must be an encoded JSON object")
    head = jsoncodec.dumps(ids)[:-1]  # the ids' object without its closing brace
    rest: Any = memoryview(event)[1:] if decoded else b"}"
    joint = b"," if decoded else b""
    body = b"".join((_PAYLOAD_HEAD, head, joint, rest, _PAYLOAD_TAIL))
    row_bytes = len(body) - len(_PAYLOAD_HEAD) - len(_PAYLOAD_TAIL)
    row = {
        "object_ids": ids,
        "has_comment": "comment" in decoded,
        "is_delete": decoded.get("_object_delete") is True,
        "input_row": {"byte_size": row_bytes},
    }
    return Payload(body, row)


@dataclass(frozen=True)
class Upload:
    """Where ``POST /logs3/overflow`` said to put the payload."""

    method: str
    url: str
    headers: dict[str, str]
    fields: dict[str, str]
    key: str

    @classmethod
    def parse(cls, answer: Any) -> Upload:
        if not isinstance(answer, dict):
            raise ApiError("POST /logs3/overflow: the answer is not a JSON object")
        method, url, key = answer.get("method"), answer.get("signedUrl"), answer.get("key")
        headers, fields = answer.get("headers"), answer.get("fields")
        needed = "headers" if method == "PUT" else "fields"
        if method not in ("PUT", "POST") or not isinstance(url, str) or not isinstance(key, str):
            raise ApiError("POST /logs3/overflow: the answer lacks method (PUT or POST), signedUrl or key")
        if not isinstance(answer.get(needed), dict):
            raise ApiError(f"POST /logs3/overflow: a {method} upload needs {needed}")
        sent = {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}
        if method == "PUT" and "blob.core.windows.net" in url:
            sent["x-ms-blob-type"] = "BlockBlob"  # Azure refuses a signed PUT without it
        form = {str(k): str(v) for k, v in fields.items()} if isinstance(fields, dict) else {}
        return cls(method, url, sent, form, key)

    @property
    def where(self) -> str:
        """The upload for messages: the storage host only, never the signed URL."""
        parts = urlsplit(self.url)
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        return f"{self.method} to the signed upload URL on {host or 'an unnamed host'}"


async def _send_once(session: aiohttp.ClientSession, upload: Upload, body: bytes) -> tuple[int, Any, bytes]:
    """One upload attempt: the SDKs' PUT of the body, or their form POST with a ``file`` part."""
    if upload.method == "PUT":
        request = session.put(upload.url, data=body, headers=upload.headers, allow_redirects=False)
    else:
        form = aiohttp.FormData()
        for name, value in upload.fields.items():
            form.add_field(name, value)
        content_type = upload.fields.get("Content-Type", _CONTENT_TYPE)
        form.add_field("file", body, filename="logs3.json", content_type=content_type)
        headers = {k: v for k, v in upload.headers.items() if k.lower() != "content-type"}
        request = session.post(upload.url, data=form, headers=headers, allow_redirects=False)
    async with request as resp:
        return resp.status, resp.headers, await resp.read()


async def upload(client: BraintrustClient, target: Upload, body: bytes) -> None:
    """Put ``body`` where ``target`` says, without credentials: a session of its own (no API
    key, no cookies), the client's timeouts, and its retry policy for transport errors and
    transient statuses; any other refusal raises :class:`_UploadRefused`."""
    policy, t = client.settings.retry, client.settings.timeouts
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read)
    async with aiohttp.ClientSession(timeout=timeout) as plain:
        for attempt in range(1, policy.max_attempts + 1):
            retry_after: float | None = None
            try:
                status, headers, answer = await _send_once(plain, target, body)
            except TRANSPORT_ERRORS as exc:
                problem = f"{type(exc).__name__}: {str(exc) or 'no detail'}"
            except aiohttp.InvalidURL:
                raise ApiError(
                    f"POST /logs3/overflow answered an invalid signedUrl ({target.where})"
                ) from None
            else:
                if status < 300:
                    return
                detail = answer.decode("utf-8", "replace")[:200].strip().replace("\n", " ")
                problem = f"HTTP {status}" + (f": {detail}" if detail else "")
                if not policy.is_retryable(status):
                    raise _UploadRefused(problem)
                retry_after = parse_retry_after(headers.get("Retry-After"))
            if attempt == policy.max_attempts:
                gave_up = f"{target.where}: gave up after {attempt} attempts: {problem}"
                raise TransientApiError(client.redact(gave_up))
            await anyio.sleep(policy.delay(attempt, retry_after))
    raise AssertionError("unreachable")


class OverflowSender:
    """Sends events through the overflow route, one whole event per call (so a worker holds
    one oversize payload at a time); remembers a server without the route."""

    def __init__(self, client: BraintrustClient) -> None:
        self.client = client
        self.missing: str | None = None  # why the route is known not to be served
        self.sent = 0
        self._served = False  # the route answered once: workers may ask at the same time
        self._first = anyio.Lock()  # until then one asks while the others wait for the verdict

    async def send(self, path: str, data: bytes) -> None:
        """Write the encoded event ``data`` into the object of ``path`` (``/v1/<type>/<id>``)."""
        if self.missing is not None:
            raise OverflowRefused(self.missing)
        payload = await anyio.to_thread.run_sync(build_payload, data, object_ids(path))
        size = len(payload.body)
        rounds = self.client.settings.retry.max_attempts
        for round_ in range(1, rounds + 1):
            target = await self._ask(size, payload.row)
            try:
                await upload(self.client, target, payload.body)
            except _UploadRefused as exc:
                if round_ == rounds:
                    raise ApiError(self.client.redact(f"{target.where}: {exc}")) from None
                continue
            reference = {"type": REFERENCE_TYPE, "key": target.key, "size_bytes": size}
            await self.client.post_json("/logs3", {"rows": reference, "api_version": API_VERSION})
            self.sent += 1
            return

    async def _ask(self, size: int, row: dict[str, Any]) -> Upload:
        if self._served:
            return await self._request_upload(size, row)
        async with self._first:
            if self.missing is not None:
                raise OverflowRefused(self.missing)
            answer = await self._request_upload(size, row)
            self._served = True
            return answer

    async def _request_upload(self, size: int, row: dict[str, Any]) -> Upload:
        body = {"content_type": _CONTENT_TYPE, "size_bytes": size, "rows": [row]}
        try:
            return Upload.parse(await self.client.post_json("/logs3/overflow", body))
        except NotFoundError as exc:
            self.missing = f"the server has no overflow route ({exc})"
            raise OverflowRefused(self.missing) from None
        except ApiError as exc:
            if exc.status in _NOT_SERVED:
                self.missing = f"the server has no overflow route ({exc})"
                raise OverflowRefused(self.missing) from None
            if exc.status in _REFUSED:
                raise OverflowRefused(f"the overflow route refused it ({exc})") from None
            raise
