"""Query timeouts: a busy real deployment answers 504 to a ``/btql`` query that runs too long.

Time on a real deployment grows with the rows a query reads, so the emulator measures a
query by its scan: with ``query_timeout_rows`` N, a query may read N rows in the
deployment's own timeout (:data:`DEPLOYMENT_TIMEOUT_SECONDS`, about what real deployments
allow) and answers 504 when it would read more. Rows *read* are counted, not rows returned:
the compiler puts ``bt_scan(<row>)`` first among the conditions the index cannot answer, so
every row the scan visits calls it once, and a paged read (``ORDER BY seq LIMIT n`` on the
seq index) stops after its page plus the row versions the index could not skip.

A client's ``query_timeout_seconds`` shortens that budget in proportion (a client cannot
lengthen the deployment's timeout), and is also honoured as a wall-clock limit through
SQLite's progress handler. Without either, queries are neither counted nor timed: the page
read stays as fast as it ever was.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

#: The timeout real deployments apply to a ``/btql`` query (about 30 s).
DEPLOYMENT_TIMEOUT_SECONDS: Final = 30.0
#: The SQL function the compiler calls once per row a scan reads (only when counting).
SCAN_FUNCTION: Final = "bt_scan"
#: SQLite virtual-machine steps between two looks at the clock.
_CLOCK_STEPS: Final = 10_000


class QueryTimeout(Exception):
    """A query over its budget; the message is the 504 body."""


@dataclass(frozen=True)
class Budget:
    rows: int | None  # rows the scan may read
    seconds: float | None  # wall-clock limit the client asked for


def budget(query_timeout_rows: int | None, query_timeout_seconds: float | None) -> Budget:
    """The budget of one query: the deployment's row limit, scaled down by a shorter
    client timeout, and the client's timeout as a wall-clock limit."""
    rows = None
    if query_timeout_rows is not None:
        share = 1.0
        if query_timeout_seconds is not None:
            share = min(query_timeout_seconds, DEPLOYMENT_TIMEOUT_SECONDS) / DEPLOYMENT_TIMEOUT_SECONDS
        rows = int(query_timeout_rows * share)
    return Budget(rows, query_timeout_seconds)


class _Scan:
    """The ``bt_scan`` function of one query: counts rows, fails past the budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def __call__(self, row: object) -> int:
        self.count += 1
        if self.count > self.limit:
            raise RuntimeError("scan budget exceeded")  # SQLite stops the query: OperationalError
        return 1


@contextmanager
def enforced(conn: sqlite3.Connection, limit: Budget) -> Iterator[None]:
    """Run the queries of the block under ``limit``; :class:`QueryTimeout` when over it."""
    scan = _Scan(limit.rows) if limit.rows is not None else None
    if scan is not None:
        conn.create_function(SCAN_FUNCTION, 1, scan)
    deadline = None if limit.seconds is None else time.monotonic() + limit.seconds
    if deadline is not None:
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _CLOCK_STEPS)
    try:
        yield
    except sqlite3.OperationalError:
        if scan is not None and scan.count > scan.limit:
            raise QueryTimeout(
                f"query timed out: it would read more than {scan.limit} rows, all this deployment"
                " reads before its timeout (use a smaller limit or a narrower filter)"
            ) from None
        if deadline is not None and time.monotonic() > deadline:
            raise QueryTimeout(f"query timed out after query_timeout_seconds ({limit.seconds:g} s)") from None
        raise
    finally:
        if deadline is not None:
            conn.set_progress_handler(None, 0)
