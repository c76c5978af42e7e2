"""The emulated aarch64 board: a real TVM RPC tracker and server, a cross-compiled Relax module.

Build the board first with `bash targets/emulated/build_aarch64_board.sh`; without it the
board tests are skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from targets.emulated.board import BOARD_NOT_BUILT_REASON, emulated_rpc_server, is_built
from targets.rpc import (
    BoardUnavailable,
    free_port,
    local_tracker,
    parse_tracker,
    request_session,
    upload_and_load,
)

AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}
KEY = "aarch64-emu"


@I.ir_module
class MatmulAddBias:
    @R.function
    def main(
        x: R.Tensor((8, 16), "float32"), w: R.Tensor((16, 4), "float32")
    ) -> R.Tensor((8, 4), "float32"):
        with R.dataflow():
            y = R.matmul(x, w)
            z = R.add(y, R.const(1.0, "float32"))
            R.output(z)
        return z


def test_parse_tracker() -> None:
    assert parse_tracker("127.0.0.1:9190") == ("127.0.0.1", 9190)
    assert parse_tracker("board.lan:9190") == ("board.lan", 9190)
    for bad in ("nohost", ":9190", "host:", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_tracker(bad)


def test_request_session_without_board_fails_fast() -> None:
    with local_tracker() as (host, port):
        start = time.monotonic()
        with pytest.raises(BoardUnavailable, match="no board under key 'no-such-board'"):
            request_session(f"{host}:{port}", "no-such-board", timeout_s=1.0)
        assert time.monotonic() - start < 10


def test_request_session_without_tracker_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(BoardUnavailable, match="unreachable"):
        request_session(f"127.0.0.1:{free_port()}", KEY, timeout_s=1.0)
    assert time.monotonic() - start < 5


@pytest.mark.slow
@pytest.mark.skipif(not is_built(), reason=BOARD_NOT_BUILT_REASON)
def test_relax_module_runs_on_emulated_board(tmp_path: Path) -> None:
    executable = tvm.compile(MatmulAddBias, target=tvm.target.Target(AARCH64_TARGET))
    lib_path = tmp_path / "matmul_add.so"
    executable.export_library(
        str(lib_path), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-gcc")
    )
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((8, 16), dtype=np.float32)
    w_np = rng.standard_normal((16, 4), dtype=np.float32)

    with local_tracker() as (host, port), emulated_rpc_server(host, port, KEY):
        session = request_session(f"{host}:{port}", KEY, timeout_s=30)
        dev = session.cpu()
        vm = relax.VirtualMachine(upload_and_load(session, lib_path), dev)
        x, w = tvm.runtime.tensor(x_np, dev), tvm.runtime.tensor(w_np, dev)

        out = vm["main"](x, w).numpy()
        np.testing.assert_allclose(out, x_np @ w_np + 1.0, rtol=1e-5, atol=1e-5)

        timing = vm.time_evaluator("main", dev, number=2, repeat=2)(x, w)
        assert len(timing.results) == 2
        assert timing.mean > 0
        # Free the remote objects while the board still answers.
        del vm, x, w, session
