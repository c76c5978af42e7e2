"""An emulated aarch64 board: a real TVM RPC server in an aarch64 userland under qemu-user.

The userland is built by ``targets/emulated/build_aarch64_board.sh`` (Debian arm64 python3.11 and
the aarch64 wheels of apache-tvm, apache-tvm-ffi, numpy, ...); its ``bin/python3.11`` launcher runs
``qemu-aarch64-static -L rootfs rootfs/usr/bin/python3.11``. No chroot, binfmt or mount is needed.

    with local_tracker() as (host, port), emulated_rpc_server(host, port, "aarch64-emu"):
        session = request_session(f"{host}:{port}", "aarch64-emu")
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().with_name("build_aarch64_board.sh")
BOARD_NOT_BUILT_REASON = (
    "the emulated aarch64 board is not built: run `bash targets/emulated/build_aarch64_board.sh` "
    "(needs root or sudo for apt-get, and network access; about 100 MB of downloads)"
)
SERVER_START_TIMEOUT_S = 120.0


def board_dir() -> Path:
    """Where the build script puts the board: ``$MNV2BENCH_CACHE/aarch64-board``."""
    cache = os.environ.get("MNV2BENCH_CACHE") or Path.home() / ".cache" / "mnv2bench"
    return Path(cache) / "aarch64-board"


def launcher() -> Path:
    """The x86 shell launcher of the emulated python3.11."""
    return board_dir() / "bin" / "python3.11"


def is_built() -> bool:
    """True when the build script finished (it writes ``READY`` last)."""
    return (board_dir() / "READY").is_file() and os.access(launcher(), os.X_OK)


@dataclass(frozen=True)
class EmulatedServer:
    """A running emulated RPC server, as yielded by :func:`emulated_rpc_server`."""

    key: str
    host: str
    port: int
    pid: int
    log_path: Path

    def log_tail(self, n_chars: int = 2000) -> str:
        """The end of the server's stdout and stderr."""
        return _tail(self.log_path, n_chars)


@contextlib.contextmanager
def emulated_rpc_server(
    tracker_host: str, tracker_port: int, key: str, port: int | None = None
) -> Iterator[EmulatedServer]:
    """Run ``tvm.exec.rpc_server`` on the emulated board, registered with the tracker under ``key``.

    The server binds 127.0.0.1:``port`` (a free port when None). Returns once the tracker lists the
    server as free under ``key`` (usually a few seconds; RuntimeError with the server's log tail if
    it exits or is not listed within 120 s). The server's whole process group is terminated on exit.
    """
    from targets.rpc import free_port

    if not is_built():
        raise RuntimeError(BOARD_NOT_BUILT_REASON)
    host = "127.0.0.1"
    port = free_port(host) if port is None else port
    tracker = f"{tracker_host}:{tracker_port}"
    cmd = [
        str(launcher()), "-m", "tvm.exec.rpc_server",
        "--host", host, "--port", str(port), "--port-end", str(port + 1),
        "--tracker", tracker, "--key", key, "--custom-addr", host,
    ]  # fmt: skip
    # The board only runs compiled libraries: load libtvm_runtime alone (start in seconds).
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1", "PYTHONUNBUFFERED": "1"}
    log_fd, log_name = tempfile.mkstemp(prefix=f"mnv2bench-rpc-{key}-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(log_fd, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own process group: popen worker, per-session forks
        )  # fmt: skip
    server = EmulatedServer(key=key, host=host, port=port, pid=proc.pid, log_path=log_path)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _registered(tracker, key, port):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"emulated RPC server exited with code {proc.returncode} before registering "
                    f"with tracker {tracker}; log tail:\n{server.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"emulated RPC server did not register with tracker {tracker} under key "
                    f"{key!r} within {SERVER_START_TIMEOUT_S:g} s; log tail:\n{server.log_tail()}"
                )
            time.sleep(0.5)
        yield server
    finally:
        _stop_group(proc)
        log_path.unlink(missing_ok=True)


def _registered(tracker: str, key: str, port: int) -> bool:
    """True when the tracker lists our server (by port) and a free board under ``key``."""
    from targets.rpc import BoardUnavailable, tracker_summary

    try:
        summary = tracker_summary(tracker)
    except BoardUnavailable:
        return False
    ours = any(
        info.get("key") == f"server:{key}" and list(info.get("addr", []))[1:] == [port]
        for info in summary.get("server_info", [])
    )
    return ours and summary.get("queue_info", {}).get(key, {}).get("free", 0) > 0


def _stop_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its children (forked sessions) may still linger in the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)


def _tail(path: Path, n_chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-n_chars:]
    except OSError:
        return "(no log)"
