"""Host-side helpers for TVM RPC: a local tracker, tracker addresses, sessions on remote boards.

A board (real or emulated) runs ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``
and registers with a TVM RPC tracker; the host asks the tracker for a board by key and talks to it
through an :class:`tvm.rpc.RPCSession`.

The tracker needs the ``rpc`` extra of apache-tvm on the host (tornado, psutil, cloudpickle).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tvm import rpc as tvm_rpc

from models.errors import UserError

LOCALHOST = "127.0.0.1"


class BoardUnavailable(UserError):
    """No board answered: the tracker is unreachable, or no board under the key came free in time."""


class BadTrackerAddress(UserError, ValueError):
    """``--rpc-tracker`` is not HOST:PORT."""


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def parse_tracker(s: str) -> tuple[str, int]:
    """Split a tracker address ``"HOST:PORT"`` into ``(host, port)``.

    Raises ValueError with a message that says what was expected.
    """
    host, sep, port_str = s.strip().rpartition(":")
    if not sep or not host or not port_str.isdigit() or not 0 < int(port_str) < 65536:
        raise BadTrackerAddress(
            f"invalid tracker address {s!r}: expected HOST:PORT with a port in 1..65535, "
            "e.g. 127.0.0.1:9190"
        )
    return host, int(port_str)


@contextlib.contextmanager
def local_tracker(host: str = LOCALHOST) -> Iterator[tuple[str, int]]:
    """Run a real TVM RPC tracker (``tvm.rpc.tracker.Tracker``) on a free port of ``host``.

    Yields ``(host, port)``; the tracker process stops on exit.
    """
    from tvm.rpc.tracker import Tracker  # needs tornado

    tracker, last_err = None, None
    for _ in range(5):  # the free port may be taken between free_port() and the tracker's bind
        port = free_port(host)
        try:
            tracker = Tracker(host=host, port=port, port_end=port + 1, silent=True)
            break
        except Exception as err:  # noqa: BLE001 - the popen worker re-raises bind errors generically
            last_err = err
            time.sleep(0.1)
    if tracker is None:
        raise RuntimeError(f"could not start a TVM RPC tracker on {host}: {last_err}") from last_err
    try:
        yield host, tracker.port
    finally:
        tracker.terminate()


def tracker_summary(tracker: str, connect_timeout_s: float = 5) -> dict[str, Any]:
    """The tracker's summary: ``{"queue_info": {key: {"free", "pending"}}, "server_info": [...]}``.

    Raises BoardUnavailable when the tracker cannot be reached.
    """
    host, port = parse_tracker(tracker)
    _check_reachable(host, port, connect_timeout_s)
    try:
        session = tvm_rpc.connect_tracker(host, port)
        try:
            return session.summary()
        finally:
            session.close()
    except (OSError, RuntimeError) as err:
        raise BoardUnavailable(f"RPC tracker {host}:{port} did not answer: {err}") from err


def free_boards(tracker: str, key: str) -> int:
    """How many boards under ``key`` the tracker has free right now."""
    queue = tracker_summary(tracker).get("queue_info", {})
    return int(queue.get(key, {}).get("free", 0))


def default_timeout_s() -> float:
    """How long to wait for a free board: ``$MNV2BENCH_RPC_TIMEOUT`` seconds, 60 by default."""
    import os

    return float(os.environ.get("MNV2BENCH_RPC_TIMEOUT", "60"))


def request_session(
    tracker: str, key: str, timeout_s: float | None = None, session_timeout_s: float = 0
) -> tvm_rpc.RPCSession:
    """Ask the tracker at ``tracker`` ("HOST:PORT") for a board registered under ``key``.

    Waits up to ``timeout_s`` for a board to come free. ``session_timeout_s`` (0: none) lets the
    board end the session after that long. Raises BoardUnavailable with a one-line message when
    the tracker is unreachable or no board answers in time.
    """
    host, port = parse_tracker(tracker)
    timeout_s = default_timeout_s() if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    _check_reachable(host, port, min(timeout_s, 5))
    try:
        tracker_session = tvm_rpc.connect_tracker(host, port)
    except (OSError, RuntimeError) as err:
        raise BoardUnavailable(f"RPC tracker {host}:{port} did not answer: {err}") from err
    try:
        # TrackerSession.request blocks until a board is free; bound the wait with a socket
        # timeout. On timeout the tracker drops the request when this connection closes.
        tracker_session._sock.settimeout(max(deadline - time.monotonic(), 0.1))
        return tracker_session.request(key, session_timeout=session_timeout_s, max_retry=1)
    except (OSError, RuntimeError) as err:
        tracker_session.close()
        known = _known_keys(tracker)
        raise BoardUnavailable(
            f"no board under key {key!r} answered within {timeout_s:g} s at tracker "
            f"{host}:{port} (keys with boards: {', '.join(known) or 'none'})"
        ) from err
    finally:
        tracker_session.close()


def upload_and_load(session: tvm_rpc.RPCSession, lib_path: str | Path) -> Any:
    """Upload the exported library ``lib_path`` to the board and load it there.

    Returns the remote ``tvm.runtime.Module`` (wrap it in ``tvm.relax.VirtualMachine(mod,
    session.cpu())`` for a Relax executable).
    """
    lib_path = Path(lib_path)
    session.upload(str(lib_path))
    return session.load_module(lib_path.name)


def _check_reachable(host: str, port: int, timeout_s: float) -> None:
    """Fail fast (TVM's own connect retries for 60 s when the port is closed)."""
    try:
        with socket.create_connection((host, port), timeout=max(timeout_s, 0.1)):
            pass
    except OSError as err:
        raise BoardUnavailable(f"RPC tracker {host}:{port} is unreachable: {err}") from err


def _known_keys(tracker: str) -> list[str]:
    try:
        summary = tracker_summary(tracker)
    except BoardUnavailable:
        return []
    keys = {info.get("key", "").removeprefix("server:") for info in summary["server_info"]}
    return sorted(k for k in keys if k)
