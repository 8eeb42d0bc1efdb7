"""Give freed memory back to the system after bursts of large image decodes.

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MB),
after which large buffers come from the heap and stay in the process once freed: a burst
of 4-megapixel decodes left RSS over a gigabyte. A fixed threshold keeps large buffers in
their own mappings, returned on free; malloc_trim returns what is left between bursts.
Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024
# Each thread that allocates may get its own arena; two keep fragmentation in check.
ARENA_MAX = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 (probe: only glibc has these)
        libc.malloc_trim  # noqa: B018 (probe: only glibc has these)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def tune_allocator() -> bool:
    """Set a fixed mmap threshold and cap the arenas; call once at start-up."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    libc.mallopt(M_ARENA_MAX, ARENA_MAX)
    return True


def release_free_memory() -> None:
    """Return free heap memory to the system (malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
