"""Build and export functions for MetaSchedule's builder workers.

The stock ``LocalBuilder`` build function imports ``tvm.s_tir.tensor_intrin``, which takes about 43 s
in a fresh worker process, while the builder starts fresh workers for every batch with a 30 s timeout:
every candidate then "fails to build", tuning measures nothing and finishes as if it had succeeded
(see shared NOTES). These functions do the same build without that import. They live in an importable
module so the worker processes can unpickle them by reference.
"""

from __future__ import annotations

import os
import tempfile


def build_candidate(mod, target, _params):
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def use_threads(threads: int) -> None:
    """Runner worker initializer: time every candidate on the threads the model will run on.

    Unset, TVM's thread pool takes half of an x86 machine's cores (it assumes SMT siblings): one thread
    on the 2-vCPU build machines, so the tuner ranked schedules for one core while the benchmarks run
    the models on two. The pool reads the variable when it first starts, after this has run.
    """
    os.environ["TVM_NUM_THREADS"] = str(threads)


def export_shared_library(rt_mod, cross_compiler: str | None = None) -> str:
    """A shared library, so an RPC board can load it without a compiler of its own."""
    path = os.path.join(tempfile.mkdtemp(prefix="mnv2bench-candidate-"), "candidate.so")
    if cross_compiler:
        from tvm.support.cc import cross_compiler as make_cross_compiler

        rt_mod.export_library(path, fcompile=make_cross_compiler(cross_compiler))
    else:
        rt_mod.export_library(path)
    return path


def alloc_arguments_from_host(session, device, args_info, alloc_repeat: int):
    """Candidate inputs made on the host and copied to the board.

    MetaSchedule's default fills them on the board with ``tvm.contrib.random``, which a runtime-only
    TVM (what a board installs) does not have: every measurement would fail.
    """
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    rng = np.random.default_rng(0)

    def fill(tensor) -> None:
        tensor.copyfrom(rng.uniform(-1.0, 1.0, size=tuple(tensor.shape)).astype(tensor.dtype))

    return alloc_argument_common(fill, device, args_info, alloc_repeat)
