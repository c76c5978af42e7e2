"""Where one inference spends its time: TVM's kernels beside ONNX Runtime's nodes, by kernel kind.

(Not ``profile.py``: ``python bench/perf_vs_ort.py`` puts ``bench/`` first on ``sys.path``, where that
name hid the standard library's ``profile``, which ``cProfile`` and so ``torch.onnx.export`` import.)

    mnv2bench profile MODEL [--threads N] [--runs 30] [--top 15]

Each side is read from the runtime's own per-kernel view of the same input on the same threads: the
Relax VM calls an instrument hook around every kernel (timed here with ``perf_counter``, so each call
carries the hook's microsecond or so and small kernels read a little slow), and ONNX Runtime's profiler
records each node's kernel time. Convolutions are sorted into the tuner's kinds (depthwise, pointwise,
conv) on both sides from their weight shapes, so a row compares like with like: the TVM/ORT ratio per
kind says which kernels the tuning has yet to win. End-to-end latency is ``bench/perf_vs_ort.py``'s job.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from schedules.tasks import KINDS, Task, conv_kind

# SplitLayoutRewritePreproc renames the kernels whose weights it pre-packs.
_PREPACKED_SUFFIX = "_prepacked"


def tvm_kernel_times(runtime, x: np.ndarray, runs: int) -> pd.DataFrame:
    """kernel, calls and milliseconds per inference (median over ``runs``) of every kernel of a
    ``TvmRuntime`` (whose VM keeps the hook: profile with a runtime of its own)."""
    calls: list[tuple[int, str, float]] = []
    run, started = [0], [0.0]

    def hook(func, name: str, before_run: bool, ret, *args) -> int:
        if name.startswith("vm.builtin."):
            return 0  # the VM's own bookkeeping (allocation, tuples), not a kernel
        if before_run:
            started[0] = time.perf_counter()
        else:
            calls.append((run[0], name.removesuffix(_PREPACKED_SUFFIX), time.perf_counter() - started[0]))
        return 0

    runtime.vm.set_instrument(hook)
    for run[0] in range(runs):
        runtime.run(x)
    return _per_inference(pd.DataFrame(calls, columns=["run", "kernel", "seconds"]))


def ort_node_times(runtime, x: np.ndarray, runs: int) -> pd.DataFrame:
    """kernel (node), op, kind, calls and milliseconds per inference of every ONNX Runtime node.

    ``runtime`` is an ``OnnxRuntime`` made with a ``profile_prefix``; its profile ends here."""
    for _ in range(1 + runs):  # a warm-up, as on TVM's side; the profiler records it too
        runtime.run(x)
    events = json.loads(Path(runtime.session.end_profiling()).read_text())
    rows, kinds = [], {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        args = event["args"]
        kernel = event["name"].removesuffix("_kernel_time")
        shapes = [next(iter(s.values())) for s in args.get("input_type_shape", [])]
        kinds[kernel] = ort_kind(args["op_name"], shapes)
        rows.append((kernel, event["dur"] * 1e-6))
    frame = pd.DataFrame(rows, columns=["kernel", "seconds"])
    frame["run"] = frame.groupby("kernel").cumcount()  # one call per node and inference
    frame = frame[frame.run >= frame.run.max() + 1 - runs]  # the warm-up drops out
    return _per_inference(frame).assign(kind=lambda f: f.kernel.map(kinds))


def ort_kind(op: str, input_shapes: list[list[int]]) -> str:
    """The tuner's kind of an ONNX Runtime node, from its weight's shape (OIHW) where it has one."""
    if op in ("Conv", "FusedConv") and len(input_shapes) > 1 and len(input_shapes[1]) == 4:
        (out_channels, in_per_group, kh, kw), channels = input_shapes[1], input_shapes[0][1]
        return conv_kind(out_channels, in_per_group, kh, kw, channels)
    if op in ("Gemm", "MatMul", "FusedGemm", "FusedMatMul"):
        return "dense"
    return "other"


def _per_inference(frame: pd.DataFrame) -> pd.DataFrame:
    per_run = frame.groupby(["kernel", "run"], sort=False).seconds.agg(["sum", "count"])
    table = per_run.groupby("kernel", sort=False).agg(calls=("count", "median"), seconds=("sum", "median"))
    table = table.reset_index().assign(ms=lambda f: f.seconds * 1e3, calls=lambda f: f.calls.astype(int))
    return table.drop(columns="seconds")


def with_tasks(kernels: pd.DataFrame, tasks: list[Task]) -> pd.DataFrame:
    """Add each TVM kernel's kind and GFLOP/s from the model's tuning tasks (same names)."""
    by_name = {t.name: t for t in tasks}
    kind = kernels.kernel.map(lambda k: by_name[k].kind if k in by_name else "other")
    flops = kernels.kernel.map(lambda k: by_name[k].flops if k in by_name else 0.0)
    return kernels.assign(kind=kind, gflops=flops * kernels.calls / (kernels.ms * 1e-3) / 1e9)


def by_kind(tvm_kernels: pd.DataFrame, ort_nodes: pd.DataFrame) -> pd.DataFrame:
    """Milliseconds per inference of each kind on both sides, their ratio, and the totals."""
    def totals(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.groupby("kind").agg(ms=("ms", "sum"), calls=("calls", "sum"))

    table = totals(tvm_kernels).join(totals(ort_nodes), lsuffix="_tvm", rsuffix="_ort", how="outer")
    table = table.reindex([k for k in KINDS if k in table.index]).fillna(0.0)
    table.loc["total"] = table.sum()
    table["tvm/ort"] = table.ms_tvm / table.ms_ort.where(table.ms_ort > 0)
    return table.astype({"calls_tvm": int, "calls_ort": int})


def profile_model(model: str, spec, threads: int, runs: int, schedules: Path | None = None,
                  untuned: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Build (or reuse) the model's library and profile one input on both runtimes: by kind, TVM's
    kernels, and the schedules label."""
    from bench.build import compile_to_library
    from bench.harness import library_path
    from bench.runtimes import OnnxRuntime, TvmRuntime
    from models.export import load_onnx, onnx_input_shape, sample_input

    built = compile_to_library(model, spec, library_path(model, spec, untuned, None, schedules),
                               schedules=schedules, untuned=untuned)
    x = sample_input(onnx_input_shape(load_onnx(built.onnx_path)))
    tvm_rt = TvmRuntime(built.library, "tvm", threads, str(spec.tvm_config()), built.schedules)
    tvm_rt.run(x)  # warm-up, before the hook
    kernels = with_tasks(tvm_kernel_times(tvm_rt, x, runs), built.tasks)
    with tempfile.TemporaryDirectory(prefix="mnv2bench-ort-profile-") as tmp:
        ort_rt = OnnxRuntime(built.onnx_path, threads, profile_prefix=Path(tmp) / "ort")
        nodes = ort_node_times(ort_rt, x, runs)
    return by_kind(kernels, nodes), kernels, built.schedules


def format_profile(model: str, kinds: pd.DataFrame, kernels: pd.DataFrame, schedules: str, threads: int,
                   runs: int, top: int) -> str:
    total = kernels.ms.sum()
    slowest = kernels.sort_values("ms", ascending=False).head(top).assign(share=lambda f: f.ms / total)
    return "\n".join([
        f"{model}: {threads} threads, median of {runs} inferences; TVM schedules {schedules}",
        "",
        kinds.to_string(float_format=lambda v: f"{v:.3f}"),
        "",
        f"TVM's {top} slowest kernels:",
        slowest[["kernel", "kind", "calls", "ms", "share", "gflops"]].to_string(
            index=False, formatters={"share": "{:.1%}".format, "gflops": "{:.1f}".format, "ms": "{:.3f}".format}),
    ])
