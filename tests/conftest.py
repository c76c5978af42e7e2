"""Shared fixtures. The slow tests (export, compile, tune end to end) are marked ``slow``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(tmp_path):
    """Run ``python -m bench`` as a user would; returns the CompletedProcess."""

    def run(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
        import os

        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True, timeout=timeout,
            cwd=tmp_path, env=full_env,
        )

    return run
