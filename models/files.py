"""Atomic file writes, shared by every folder (``models`` is the package all the others may import).

Results, databases, caches and the README are rewritten by commands a user may interrupt: each file is
written to a temporary sibling and renamed over the old one, so a reader sees the old file or the new
one, never half of one, and an interrupted write leaves no litter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: Path | str, write: Callable[[Path], object]) -> Path:
    """Call ``write(staged)`` on a temporary sibling of ``path`` (same suffix, so writers that go by it
    still work), then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(staged)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


def write_text_atomically(path: Path | str, text: str) -> Path:
    return replace_atomically(path, lambda staged: staged.write_text(text, encoding="utf-8"))


def write_bytes_atomically(path: Path | str, data: bytes) -> Path:
    return replace_atomically(path, lambda staged: staged.write_bytes(data))
