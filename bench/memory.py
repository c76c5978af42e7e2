"""Peak memory of a runtime, read the way TFLite's benchmark_model reports it: the process's resident set.

Linux keeps the resident set's high-water mark (``VmHWM``) and lets a process reset it to the current
resident set (``clear_refs`` = 5), so ``PeakMemory`` brackets a runtime's load and first inference and
reports how far the resident set rose above where it stood before: weights, workspace and whatever the
runtime allocates. Elsewhere (macOS, no procfs) it records nothing rather than a wrong figure.
"""

from __future__ import annotations

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


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.mib``: the rise of the resident set's peak, or None."""

    def __init__(self) -> None:
        self.mib: float | None = None
        self._start_kib: int | None = None

    def __enter__(self) -> Self:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return self
        self._start_kib = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_kib("VmHWM")
        if self._start_kib is not None and peak is not None:
            self.mib = max(peak - self._start_kib, 0) / 1024
