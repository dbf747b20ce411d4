"""Keep a long export's resident memory flat.

Pages are a few MB each and Parquet row groups several more; glibc's malloc raises its mmap
threshold after such blocks are freed, so later ones land in the heap, fragment it and are
never returned: the process's RSS creeps up by hundreds of MB although live data stays
small. Fixing the threshold (large blocks always mmapped, returned on free) keeps RSS close
to what is actually live. Arrow's buffers go to jemalloc where the wheel has it: it reuses
freed memory for the next page (mapping fresh memory for every buffer costs page faults,
which made Parquet export a quarter slower) and hands idle memory back after a short decay.
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
    if not sys.platform.startswith("linux"):
        return
    if "pyarrow" in sys.modules:
        import pyarrow as pa

        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:  # a build without jemalloc
            pa.set_memory_pool(pa.system_memory_pool())
    else:  # read when pyarrow first needs a pool; importing it here would slow every start-up
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
