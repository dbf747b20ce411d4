"""Killing a CLI process at seeded random moments, and watching what it leaves visible.

:class:`Watcher` polls directories from a thread while a run is in progress: every file
visible under its final name must be whole (a data file parses completely, a ``.json``
file is valid JSON). Temp names (``.name.tmp``, see ``pipeline.common.storage``) are the
only files allowed to be partial.
"""

from __future__ import annotations

import gzip
import random
import signal
import subprocess
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import orjson
import pyarrow.parquet as pq

from pipeline.common.storage import is_temp_name


def check_whole(path: Path) -> str | None:
    """Why ``path`` is not a complete file, or None when it is (or vanished meanwhile)."""
    try:
        data = path.read_bytes()
        if path.suffix == ".json":
            orjson.loads(data)
        elif path.suffix == ".parquet":
            pq.read_table(path)
        elif path.name.endswith((".jsonl", ".jsonl.gz")):
            text = gzip.decompress(data) if path.name.endswith(".gz") else data
            if text and not text.endswith(b"\n"):
                return f"{path}: last line unterminated"
            for line in text.splitlines():
                orjson.loads(line)
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, OSError, EOFError, zlib.error, ValueError) as exc:
        return f"{path}: {type(exc).__name__}: {exc}"
    return None


class Watcher:
    """Checks every visible file under ``roots`` over and over until stopped."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = roots
        self.problems: list[str] = []
        self.checks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for root in self.roots:
                for path in sorted(root.rglob("*")) if root.exists() else []:
                    if is_temp_name(path.name) or not path.is_file():
                        continue
                    problem = check_whole(path)
                    self.checks += 1
                    if problem:
                        self.problems.append(problem)
            time.sleep(0.005)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def timed_run(cmd: Sequence[str], env: Mapping[str, str]) -> float:
    """Run ``cmd`` to completion (it must succeed); the seconds it took, to place kill moments."""
    start = time.monotonic()
    done = subprocess.run(list(cmd), env=dict(env), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - start


def kill_and_resume(
    cmd: Sequence[str], env: Mapping[str, str], kills: int, seconds: float, rng: random.Random
) -> int:
    """Start ``cmd``, SIGKILL it at a random moment, repeat ``kills`` times, then let it
    finish. A clean run takes ``seconds``; each moment falls within a ``kills``-th of that
    (plus start-up), so every run is still busy when killed and the job still progresses.
    Returns how many runs were really killed mid-way."""
    window = min(seconds, 0.5 + seconds / kills)
    killed = 0
    for _ in range(kills):
        proc = subprocess.Popen(list(cmd), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(0.1, window))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err
    done = subprocess.run(list(cmd), env=dict(env), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return killed
