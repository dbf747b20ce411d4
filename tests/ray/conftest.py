"""One local Ray per test module (on 127.0.0.1, two CPUs, no dashboard, no usage statistics)
and an emulator of its own, whose faults and rate limit a test may change without touching
the emulator the other tests share. Skipped when Ray is not installed (it comes with ``.[dev]``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray.data", reason="Ray is not installed (pip install 'btpipe[ray]')")

from pipeline.emulator.faults import FaultConfig  # noqa: E402
from pipeline.emulator.server import RunningServer, ServerConfig  # noqa: E402
from tests.conftest import TEST_MAX_REQUEST_BYTES, Emulator  # noqa: E402
from tests.helpers import insert, post, unique  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("ray-emulator") / "emulator.db"
    config = ServerConfig(port=0, db=str(db), max_request_bytes=TEST_MAX_REQUEST_BYTES)
    with RunningServer(config) as running:
        yield running


@pytest.fixture(scope="module")
def emulator(server: RunningServer) -> Emulator:
    return Emulator(url=server.url, max_request_bytes=TEST_MAX_REQUEST_BYTES)


@pytest.fixture(scope="module")
def local_ray(emulator: Emulator) -> Iterator[None]:
    """Ray for the module; its workers inherit the key's variable, set before it starts."""
    from pipeline.ray import cluster

    with pytest.MonkeyPatch.context() as env:
        env.setenv("BRAINTRUST_API_KEY", emulator.key)
        env.setenv("BRAINTRUST_API_URL", emulator.url)
        for name, value in cluster.LOCAL_ENVIRONMENT.items():
            env.setenv(name, value)
        cluster.start(num_cpus=2)
        try:
            yield
        finally:
            import ray as ray_core

            ray_core.shutdown()


@pytest.fixture
def faults(server: RunningServer) -> Iterator[Any]:
    """Set the module emulator's faults for one test; cleared after it."""

    def set_faults(**settings: Any) -> None:
        server.faults.replace(FaultConfig(**settings))

    yield set_faults
    server.faults.replace(FaultConfig())


def log_rows(count: int, tag: str) -> list[dict[str, Any]]:
    """``count`` spans with nested input, output, metadata and scores."""
    return [
        {
            "id": f"{tag}-{i:05d}",
            "input": {"question": f"q{i}", "context": ["a", "b", {"n": i}]},
            "output": f"answer {i} " + "x" * (i % 50),
            "metadata": {"tag": tag, "i": i, "big": 2**60 + i},
            "scores": {"accuracy": (i % 10) / 10},
            "tags": ["t1"] if i % 2 else [],
        }
        for i in range(count)
    ]


def seeded_project(emulator: Emulator, rows: int, tag: str = "ray") -> dict[str, Any]:
    """A new project holding ``rows`` log spans."""
    project = post(emulator.url, emulator.key, "/v1/project", {"name": unique(tag)})
    insert(emulator.url, emulator.key, "project_logs", project["id"], log_rows(rows, tag))
    return project


@pytest.fixture
def ray_env(emulator: Emulator) -> Iterator[None]:
    """The key and URL in this process's environment, as ``read_braintrust`` reads them."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BRAINTRUST_API_KEY", emulator.key)
        env.setenv("BRAINTRUST_API_URL", emulator.url)
        yield
