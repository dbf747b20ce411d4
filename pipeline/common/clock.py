"""How long this process has run, counted from its start rather than from an import.

Time to first row (process start to the first page written) is what a user waits before an
export shows progress, interpreter start-up and imports included, so it is measured from the
start the kernel recorded for the process (both it and the uptime count from boot, to 10 ms).
"""

from __future__ import annotations

import os
import time

_IMPORTED = time.monotonic()


def seconds_since_start() -> float:
    """Seconds since this process started (since this module's import where the kernel's
    record cannot be read)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            started_ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED
