"""Giving the C heap's freed memory back to the operating system.

glibc's malloc serves a buffer below its mmap threshold from the heap, and raises that threshold (up to 32 MiB)
whenever a larger buffer it had mapped is freed; so after frames of varied sizes (decoded images, resized
copies, the model's activations) the heap holds freed memory that it does not return on its own: a node fed
compressed frames of random sizes grew by 200 MiB in two minutes, and stayed flat with the heap trimmed.
`malloc_trim` returns the free pages anywhere in the heap; where the C library is not glibc, nothing is done.
"""
from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system; False where that is not possible here."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
