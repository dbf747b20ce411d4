"""Attachment bytes over HTTP: where to read them, how to upload them, and copying one between
two deployments without a file in between.

The flows are the official SDKs' (``braintrust/logger.py``: ``Attachment.upload``,
``ReadonlyAttachment.metadata``):

* read: ``GET /attachment?key&filename&content_type&org_id`` -> ``{downloadUrl, status}``;
  only ``upload_status == "done"`` is ready; ``GET downloadUrl`` without the API key;
* write: ``POST /attachment {key, filename, content_type, org_id}`` -> ``{signedUrl, headers}``,
  ``PUT`` the bytes to ``signedUrl`` with those headers, then
  ``POST /attachment/status {key, org_id, status: {upload_status: "done"}}``.

Bytes are streamed in chunks of :data:`CHUNK_BYTES` through
:meth:`~pipeline.api.client.BraintrustClient.signed_transfer` (the client's retry policy,
no credentials sent to the signed URL), never held whole. Every transfer is checked against a
size bound while it streams, so an attachment larger than announced is stopped too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import aiohttp

from pipeline.api.client import BraintrustClient, Response
from pipeline.common.attachments import Reference
from pipeline.common.errors import AttachmentTooLarge, AttachmentUnavailable, NotFoundError

#: Bytes read from, or sent to, a signed URL at a time.
CHUNK_BYTES: Final = 1 << 20

#: ``consume(chunks, declared_size)``: what a download does with the bytes of one attempt.
Consume = Callable[[AsyncIterator[bytes], int | None], Awaitable[None]]


def describe(ref: Reference) -> str:
    return f"attachment {ref.key} ({ref.filename or 'no filename'})"


def too_large(ref: Reference, size: int, limit: int) -> AttachmentTooLarge:
    return AttachmentTooLarge(
        f"{describe(ref)} is {size:,} bytes, over --max-attachment-mb {limit // 2**20} "
        "(raise it, or pass --attachments skip)"
    )


async def bounded(chunks: AsyncIterator[bytes], ref: Reference, limit: int) -> AsyncIterator[bytes]:
    """``chunks``, stopped with :class:`AttachmentTooLarge` once they pass ``limit`` bytes."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise too_large(ref, total, limit)
        yield chunk


async def download_url(client: BraintrustClient, ref: Reference, org_id: str) -> str:
    """Where to read ``ref``'s bytes; :class:`AttachmentUnavailable` when the deployment has
    none ready (the upload failed or is not done, or it does not know the key)."""
    params = {"key": ref.key, "filename": ref.filename, "content_type": ref.content_type, "org_id": org_id}
    try:
        meta = await client.get_json("/attachment", params=params)
    except NotFoundError as exc:
        raise AttachmentUnavailable(client.sided(f"{describe(ref)}: not found ({exc})")) from None
    status = (meta.get("status") or {}).get("upload_status") if isinstance(meta, dict) else None
    if status != "done" or not isinstance(meta.get("downloadUrl"), str):
        raise AttachmentUnavailable(
            client.sided(f"{describe(ref)}: not ready to read (upload status {status!r})")
        )
    url: str = meta["downloadUrl"]
    return url


async def is_uploaded(client: BraintrustClient, ref: Reference, org_id: str) -> bool:
    """Whether the deployment holds ``ref`` ready (an earlier run uploaded it)."""
    try:
        await download_url(client, ref, org_id)
    except AttachmentUnavailable:
        return False
    return True


async def _error(resp: aiohttp.ClientResponse) -> Response:
    return Response(resp.status, resp.headers, await resp.read())


async def download(client: BraintrustClient, ref: Reference, url: str, limit: int, consume: Consume) -> None:
    """Stream ``ref``'s bytes from ``url`` into ``consume``, again from the start on a retry."""

    async def attempt(session: aiohttp.ClientSession) -> Response:
        async with session.get(url) as resp:
            if resp.status >= 400:
                return await _error(resp)
            if resp.content_length is not None and resp.content_length > limit:
                raise too_large(ref, resp.content_length, limit)
            await consume(bounded(resp.content.iter_chunked(CHUNK_BYTES), ref, limit), resp.content_length)
            return Response(resp.status, resp.headers, b"")

    await client.signed_transfer(f"GET {describe(ref)}", attempt)


async def start_upload(client: BraintrustClient, ref: Reference, org_id: str) -> tuple[str, dict[str, str]]:
    """``POST /attachment`` for ``ref`` (its key the destination's): the signed URL and headers."""
    body = {"key": ref.key, "filename": ref.filename, "content_type": ref.content_type, "org_id": org_id}
    meta: Any = await client.post_json("/attachment", body)
    if not isinstance(meta, dict) or not isinstance(meta.get("signedUrl"), str):
        raise NotFoundError(client.sided(f"POST /attachment: no signedUrl in the answer for {describe(ref)}"))
    headers = meta.get("headers")
    return meta["signedUrl"], {
        str(k): str(v) for k, v in (headers if isinstance(headers, dict) else {}).items()
    }


async def _put(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: AsyncIterator[bytes],
    size: int | None,
) -> Response:
    sent = dict(headers)
    if size is not None:
        sent["Content-Length"] = str(size)
    async with session.put(url, data=body, headers=sent) as resp:
        return Response(resp.status, resp.headers, await resp.read())


async def finish_upload(client: BraintrustClient, ref: Reference, org_id: str) -> None:
    body = {"key": ref.key, "org_id": org_id, "status": {"upload_status": "done"}}
    await client.post_json("/attachment/status", body)


async def put_file(
    client: BraintrustClient, ref: Reference, url: str, headers: dict[str, str],
    body: Callable[[], AsyncIterator[bytes]], size: int,
) -> None:  # fmt: skip
    """``PUT`` ``size`` bytes to the signed ``url``: ``body()`` streams them, once per attempt."""

    async def attempt(session: aiohttp.ClientSession) -> Response:
        return await _put(session, url, headers, body(), size)

    await client.signed_transfer(f"PUT {describe(ref)}", attempt)


async def copy(
    source: BraintrustClient, ref: Reference, org_id: str,
    destination: BraintrustClient, new: Reference, to_org_id: str, limit: int,
) -> int:  # fmt: skip
    """Copy ``ref``'s bytes from ``source`` to ``destination`` as ``new``, streamed from the
    download straight into the upload (no file, one chunk in memory); the byte count."""
    url = await download_url(source, ref, org_id)
    put_url, headers = await start_upload(destination, new, to_org_id)
    sizes: list[int] = []

    async def attempt(session: aiohttp.ClientSession) -> Response:
        async with session.get(url) as got:
            if got.status >= 400:
                return await _error(got)
            size = got.content_length
            if size is not None and size > limit:
                raise too_large(ref, size, limit)
            sizes.append(size or 0)
            return await _put(session, put_url, headers, bounded(got.content.iter_chunked(CHUNK_BYTES), ref, limit), size)  # fmt: skip

    await source.signed_transfer(f"copy {describe(ref)}", attempt)
    await finish_upload(destination, new, to_org_id)
    return sizes[-1]
