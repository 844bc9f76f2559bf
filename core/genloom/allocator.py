"""Keep the memory a training step frees for the next step (glibc's malloc, on Linux).

A training step on a CPU allocates and frees the same activations every step. glibc's
malloc hands out a block above its mmap threshold (128 KiB at start) as a fresh mapping
and unmaps it when freed, and it returns free memory at the top of its heap to the kernel
once that exceeds its trim threshold; either way the next step faults the pages in again
and the kernel zeroes them. glibc raises both thresholds by itself after it frees a large
mapped block, so whether a process pays depends on what it happened to allocate before:
the same Trainer step ran 8% slower on a corpus read from the token cache than on the same
corpus held in memory (whose loading had freed large buffers), with 270,599 against
177,416 minor page faults over 170 steps (docs/benchmarks.md).

:func:`keep_freed_memory` fixes the two thresholds (mmap 32 MiB, the most every glibc
accepts; trim 512 MiB), so freed activations stay in the heap and are reused: the cost is
that a process keeps up to 512 MiB of freed memory instead of returning it, which a
training process, whose next step needs it again, does not miss. Blocks above 32 MiB are
still mapped per use. Leaves malloc alone where the user tuned it (any ``MALLOC_*``
variable or a ``glibc.malloc`` tunable), and where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 512 << 20

_kept: bool | None = None  # the first call's answer: the settings are process-wide


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to 32 MiB for reuse; whether it now does.

    Idempotent and process-wide. False, changing nothing, off Linux or glibc or when the
    environment already tunes malloc.
    """
    global _kept
    if _kept is None:
        _kept = _set_thresholds()
    return _kept


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    chosen = [name for name in os.environ if name.startswith("MALLOC_")]
    if chosen or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        log.debug("malloc is tuned by the environment (%s); left as it is",
                  ", ".join(chosen) or "GLIBC_TUNABLES")
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has no such symbol
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc malloc: mmap threshold %d MiB, trim threshold %d MiB (%s)",
              MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20, "set" if kept else "refused")
    return kept
