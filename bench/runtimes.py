"""Runtime adapters: the systems under test, separate from how they are timed.

Each adapter loads one model for one runtime and exposes ``run(x) -> list[np.ndarray]`` (the call the
harness times) plus the facts a result must carry (name, version, threads, target, schedules).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.export import INPUT_NAME


@dataclass
class Runtime:
    """What every adapter reports about itself."""

    name: str  # tvm, tvm-untuned, onnxruntime, torch
    version: str
    threads: int
    tvm_target: str | None = None
    schedules: str | None = None  # "<target key>@<content hash>", "untuned", or None for non-TVM runtimes
    device: str = "host"
    notes: list[str] = field(default_factory=list)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


class OnnxRuntime(Runtime):
    def __init__(self, onnx_path: Path, threads: int) -> None:
        import onnxruntime as ort

        super().__init__("onnxruntime", ort.__version__, threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the default
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {INPUT_NAME: x})


class TorchRuntime(Runtime):
    def __init__(self, model, threads: int) -> None:
        import torch

        super().__init__("torch", torch.__version__, threads)
        torch.set_num_threads(threads)
        self.model = model.eval()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(x))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


class TvmRuntime(Runtime):
    """A compiled library in the local Relax VM. Threads come from TVM_NUM_THREADS (see ``pin_threads``)."""

    def __init__(self, library: Path, name: str, threads: int, tvm_target: str, schedules: str) -> None:
        import tvm
        from tvm import relax

        super().__init__(name, tvm.__version__, threads, tvm_target, schedules)
        self.device = "host"
        self._dev = tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self._dev)
        self._main = self.vm["main"]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        import tvm

        return vm_outputs(self._main(tvm.runtime.tensor(x, self._dev)))

    def time_evaluator(self, x: np.ndarray, number: int, repeat: int) -> list[float]:
        """Per-run seconds measured by TVM itself (no Python in the loop)."""
        import tvm

        timer = self.vm.time_evaluator("main", self._dev, number=number, repeat=repeat)
        return list(timer(tvm.runtime.tensor(x, self._dev)).results)


def vm_outputs(out) -> list[np.ndarray]:
    """A VM result (one tensor or a tuple of them) as a list of numpy arrays."""
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [o.numpy() for o in out]


def pin_threads(threads: int) -> None:
    """Give every runtime the same thread count. TVM reads TVM_NUM_THREADS when its pool starts."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
