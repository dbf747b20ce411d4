"""Joining or starting Ray, and what every btpipe task does first on a worker: find its key.

A local Ray (no address) stays on this machine: it listens on 127.0.0.1 only, with no
dashboard and no usage statistics, and a small object store, since btpipe moves pages and
files, not large objects, through it.

The API key never travels with a task: tasks carry the *name* of the environment variable
that holds it (``api_key_env``), and read it on the worker, where the cluster set it (for
example from a Kubernetes secret in KubeRay, or a runtime-env ``env_vars`` entry the operator
controls). So it is in no task argument, log line or dashboard page that btpipe produces.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import ray
from anyio.from_thread import BlockingPortal, start_blocking_portal
from ray._private import ray_constants

from pipeline.api.client import BraintrustClient, ClientSettings
from pipeline.common.errors import AuthError, BtpipeError, UsageError, variable_name
from pipeline.ray.budget import SharedPermits

#: The local Ray's object store: pages and Arrow blocks pass through it, a few MB each.
LOCAL_OBJECT_STORE_BYTES = 150 * 2**20
#: What a local Ray is told through its environment: no usage reports, no cluster beyond here.
LOCAL_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def start(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Connect to the Ray cluster at ``address``, or start a local one on 127.0.0.1; nothing
    if this process is connected already (a caller that called ``ray.init`` itself).

    ``ray.init`` replaces the process's SIGTERM handler with one that exits at once; the one
    it found (btpipe's, which stops a run as Ctrl-C does) is put back."""
    if ray.is_initialized():
        return
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        _init(address, num_cpus)
    finally:
        if on_term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)


def _init(address: str | None, num_cpus: int | None) -> None:
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ValueError, ConnectionError) as exc:  # a malformed address, ray:// without the client
            reason = (str(exc).strip().strip("'\"").splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"--ray-address {address}: {reason}") from None
        return
    # Ray's processes read these when they start; this process read them when it imported ray,
    # so the one constant that keeps a local node on 127.0.0.1 (rather than the address of the
    # machine's network interface) is set here too. A driver joining a cluster keeps both.
    for name, value in LOCAL_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    ray_constants.ENABLE_RAY_CLUSTER = os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] != "0"
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )


def key_from(api_key_env: str) -> str:
    """The API key, from the environment variable named ``api_key_env`` of this process."""
    key = os.environ.get(api_key_env, "")
    if not key:
        raise AuthError(
            f"the environment variable {variable_name(api_key_env)} is not set on this Ray worker; set it on every "
            "node (or in the job's runtime environment) to the API key"
        )
    return key


def worker_settings(settings: ClientSettings) -> ClientSettings:
    """``settings`` without the key, fit to send to a task."""
    return replace(settings, api_key="")


@asynccontextmanager
async def worker_client(
    settings: ClientSettings, api_key_env: str, budget: ray.actor.ActorHandle | None
) -> AsyncIterator[BraintrustClient]:
    """A client on a worker: the key read there, every request taking a permit of ``budget``."""
    keyed = replace(settings, api_key=key_from(api_key_env))
    permits = SharedPermits(budget) if budget is not None else None
    async with BraintrustClient(keyed, permits=permits) as client:
        yield client


@contextmanager
def portal() -> Iterator[BlockingPortal]:
    """An event loop in a thread of this task, for the async code (client, pager, insert
    pool) that a task's synchronous body drives."""
    with start_blocking_portal() as found:
        yield found


def unwrap(exc: BaseException) -> BaseException:
    """The btpipe error a Ray task raised, rather than Ray's wrapper of it, whose text is a
    whole traceback: a failed task is one line like any other failure."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        return unwrap(cause)
    return exc


async def awaited(ref: Any) -> Any:
    """``await ref``, with a btpipe error of the task raised as itself (see :func:`unwrap`)."""
    try:
        return await ref
    except ray.exceptions.RayTaskError as exc:
        found = unwrap(exc)
        if isinstance(found, BtpipeError):
            raise found from None
        raise
