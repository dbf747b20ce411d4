"""Keep a long export's resident memory flat.

Pages are a few MB each and Parquet row groups several more; glibc's malloc raises its mmap
threshold after such blocks are freed (up to 32 MB), so later ones land in the heap, fragment
it and are never returned: RSS creeps up although live data stays small. A fixed threshold
of 4 MB keeps anything larger mmapped and returned on free, while a page-sized block (one
/btql page is about 2.5 MB) is reused from the heap: mapping fresh memory for each costs a
page fault per 4 KiB, which cost the Parquet export a fifth of its CPU at a 1 MB threshold.
Arrow's buffers go to jemalloc where the wheel has it, for the same reason: it reuses freed
memory for the next page and hands idle memory back after a short decay.

An encoder process needs no numpy, but pyarrow loads it whenever it is installed (pandas, Ray
Data and Spark bring it along): with it, an encoder's peak memory on a 1,000,000-span export
was about 50 MB higher. Encoders keep it out (:func:`keep_numpy_out`); pyarrow works without.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


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
    try:
        libc = _libc()
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return


def _libc() -> ctypes.CDLL:
    """The C library, by its usual name first: ``find_library`` runs ``ldconfig`` in a
    subprocess, and its module alone took 20 ms of every start."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        from ctypes import util

        name = util.find_library("c")
        if not name:
            raise
        return ctypes.CDLL(name)


def keep_numpy_out() -> None:
    """Make ``import numpy`` fail in this process, so pyarrow runs without it (see above). Call
    it before anything imports pyarrow; a process that has numpy already keeps it."""
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]
