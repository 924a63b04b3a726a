"""Engine buffers that a new input shape replaces go back to the system, not into the heap.

An engine compiled for dynamic shapes (OpenVINO here) allocates its
intermediate buffers for each new input size and frees the old ones. glibc
serves allocations under its mmap threshold from the heap, and that
threshold grows with every large block freed, up to 32 MiB, so after the
first photo the engine's 8-32 MB buffers come from the heap. Photos of
slightly different sizes then leave the heap fragmented: the process held
more memory with every new shape. Measured on the 2-core EPYC, Magenta int8
on OpenVINO, seven photos of about 1 MP and seven shapes: the engine alone,
in one process, over the loaded runtime, 192 → 265 MiB by default, 184 →
200 MiB with large blocks mapped during each engine call; `styleship
stylize` on the folder, five interleaved rounds, 364 → 348 MiB at the same
wall time (1.87 s). A fresh infer request per new shape saved 7 MiB more
but cost 0.2 s (every buffer faulted in again), so requests are kept.

So during an engine call the threshold is 4 MiB (a block above it that no
free chunk of the heap holds is mapped, and unmapped when freed, instead of
growing the heap), and after it 32 MiB, where glibc's own dynamic
threshold ends up: the numpy temporaries around the call (12 MB per 1 MP
float image) keep reusing heap memory instead of paying page faults for a
fresh mapping each time (a fixed 4 MiB threshold for the whole process cost
about 0.1 s over the seven photos). Only on glibc; elsewhere a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Callable, Iterator

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
DURING_CALL = 4 << 20
BETWEEN_CALLS = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc


def _find_mallopt() -> Callable[[int, int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


_MALLOPT = _find_mallopt()


@contextlib.contextmanager
def buffers_mapped() -> Iterator[None]:
    """Allocations over DURING_CALL made inside the block are mapped, so freeing them
    returns them to the system. Safe across threads: mallopt takes glibc's lock, and a
    call that overlaps another only maps a little less."""
    if _MALLOPT is None:
        yield
        return
    _MALLOPT(M_MMAP_THRESHOLD, DURING_CALL)
    try:
        yield
    finally:
        _MALLOPT(M_MMAP_THRESHOLD, BETWEEN_CALLS)
