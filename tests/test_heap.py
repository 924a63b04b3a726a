"""Large blocks allocated inside heap.buffers_mapped do not grow the heap."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from styleship.runtime import heap

pytestmark = pytest.mark.skipif(
    heap._MALLOPT is None, reason=f"mallopt is glibc's ({platform.libc_ver()[0] or 'no libc'})"
)

# Run in a fresh interpreter: a heap that earlier tests left with large free chunks would
# serve the blocks from those (glibc maps only what the heap cannot already hold).
PROBE = """
import ctypes, json
import numpy as np
from styleship.runtime import heap

sbrk = ctypes.CDLL(None).sbrk
sbrk.restype = ctypes.c_void_p
with open("/proc/self/maps") as f:
    start = next(int(l.split("-")[0], 16) for l in f if l.rstrip().endswith("[heap]"))

def on_heap(a):  # between the heap's start and the program break
    return start <= a.ctypes.data < sbrk(0)

size = 8 << 20  # between the thresholds: an 8-channel 1 MP map in uint8
heap._MALLOPT(heap.M_MMAP_THRESHOLD, heap.BETWEEN_CALLS)  # where glibc's own one ends up
before = np.empty(size, np.uint8)
with heap.buffers_mapped():
    inside = np.empty(size, np.uint8)
after = np.empty(size, np.uint8)
print(json.dumps([on_heap(before), on_heap(inside), on_heap(after)]))
"""


def test_an_engine_sized_block_is_mapped_inside_and_from_the_heap_outside():
    run = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    before, inside, after = json.loads(run.stdout)
    assert before  # the precondition: a block this size comes from the heap
    assert not inside  # mapped: unmapped again as soon as the engine frees it
    assert after  # numpy temporaries between calls keep reusing heap memory
