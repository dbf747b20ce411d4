"""Keep a long export's resident memory flat.

Pages are a few MB each and Parquet row groups several more; glibc's malloc raises its mmap
threshold after such blocks are freed, so later ones land in the heap, fragment it and are
never returned: the process's RSS creeps up by hundreds of MB although live data stays
small. Fixing the threshold (large blocks always mmapped, returned on free) and routing Arrow
through the system allocator keeps RSS close to what is actually live, at a small CPU cost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1024 * 1024


def keep_memory_flat() -> None:
    """Apply the allocator settings above; a no-op where they do not apply."""
    if "pyarrow" in sys.modules:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    else:  # read when pyarrow first needs a pool; importing it here would slow every start-up
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
