"""Peak memory of a runtime, reported the way TFLite's benchmark_model reports it: the rise of the process's
resident set at initialisation (loading the model) and overall (loading plus the first inference).

Linux keeps the resident set's high-water mark (``VmHWM``) and lets a process reset it to the current
resident set (``clear_refs`` = 5). Freed memory that allocators keep (glibc's arenas, TVM's pooled
allocator) would hide a new runtime's allocations in pages already resident, so ``release_free_memory``
hands it back first. Elsewhere (macOS, no procfs) nothing is recorded rather than a wrong figure.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from pathlib import Path
from typing import Self

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def release_free_memory() -> None:
    """Return what earlier runtimes freed to the OS: Python's garbage, TVM's memory pools, glibc's free lists."""
    gc.collect()
    if "tvm" in sys.modules:
        clear = sys.modules["tvm"].get_global_func("vm.builtin.memory_manager.clear", allow_missing=True)
        if clear is not None:
            clear()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakMemory:
    """``with PeakMemory() as peak: load; peak.loaded(); infer`` then ``peak.init_mib`` and ``peak.mib``:
    how far the resident set's peak rose above where it stood at the start (MiB), or None."""

    def __init__(self) -> None:
        self.mib: float | None = None
        self.init_mib: float | None = None
        self._start_kib: int | None = None

    def __enter__(self) -> Self:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return self
        self._start_kib = _status_kib("VmRSS")
        return self

    def _rise(self) -> float | None:
        peak = _status_kib("VmHWM")
        if self._start_kib is None or peak is None:
            return None
        return max(peak - self._start_kib, 0) / 1024

    def loaded(self) -> None:
        """Marks the end of initialisation."""
        self.init_mib = self._rise()

    def __exit__(self, *exc) -> None:
        self.mib = self._rise()
