"""Runtime adapters: the systems under test, separate from how they are timed.

Each adapter loads one model for one runtime and exposes ``run(x) -> list[np.ndarray]`` (the call the
harness times) plus the facts a result must carry (name, version, threads, target, schedules).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import UserError
from models.export import INPUT_NAME


@dataclass
class Runtime:
    """What every adapter reports about itself."""

    name: str  # tvm, tvm-untuned, onnxruntime, torch
    version: str
    threads: int
    tvm_target: str | None = None
    schedules: str | None = None  # "<target key>@<content hash>", "untuned", or None for non-TVM runtimes
    device: str = "host"  # host, cuda:0, rpc:<key>
    notes: list[str] = field(default_factory=list)
    kernels: dict | None = None  # TVM: kernels tuned / transferred / default, and where transfers came from
    cuda_graph: bool | None = None  # TVM on a GPU: kernel launches replayed as CUDA graphs
    emulated: bool = False  # a board under QEMU: proves the build runs, never published as a latency
    device_seconds: float = 0.0  # summed by device_run: the device's own time of the runs so far
    device_timer: str = "time_evaluator"  # what device_run reads: TVM's time_evaluator, or CUDA events

    @property
    def device_timed(self) -> bool:
        """Timed by the device's own clock (GPU, board) rather than by pytest-benchmark's."""
        return False

    def device_clock(self) -> float:
        """Only moves while the device computes: pytest-benchmark's timer for device-timed cases."""
        return self.device_seconds

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


class OnnxRuntime(Runtime):
    """ONNX Runtime with default optimisations; on a GPU target its CUDA provider when installed."""

    def __init__(self, onnx_path: Path, threads: int, gpu: bool = False, profile_prefix: Path | None = None) -> None:
        """``profile_prefix``: record ONNX Runtime's own per-node profile there (see ``bench/kernel_profile.py``)."""
        import onnxruntime as ort

        use_cuda = gpu and "CUDAExecutionProvider" in ort.get_available_providers()
        super().__init__("onnxruntime", ort.__version__, threads, device="cuda:0" if use_cuda else "host")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the default
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {INPUT_NAME: x})


class TorchRuntime(Runtime):
    """PyTorch eager, the model as defined. On a GPU target it runs on CUDA (cuDNN) and is timed like
    TVM there: one inference between two CUDA events, input already on the device, no copies."""

    def __init__(self, model, threads: int, gpu: bool = False) -> None:
        import torch

        super().__init__("torch", torch.__version__, threads, device="cuda:0" if gpu else "host",
                         device_timer="cuda-events")
        torch.set_num_threads(threads)
        self._torch_device = torch.device("cuda:0" if gpu else "cpu")
        # A copy on the GPU: the harness's CPU model also gives the reference outputs.
        self.model = (copy.deepcopy(model) if gpu else model).eval().to(self._torch_device)
        self._input_tensor = None

    def _input(self, x: np.ndarray):
        import torch

        if self._torch_device.type == "cpu":
            return torch.from_numpy(x)  # no copy
        if self._input_tensor is None or tuple(self._input_tensor.shape) != x.shape:
            self._input_tensor = torch.empty(x.shape, dtype=torch.float32, device=self._torch_device)
        self._input_tensor.copy_(torch.from_numpy(x))
        return self._input_tensor

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(self._input(x))
        return [t.cpu().numpy() for t in (out if isinstance(out, tuple) else (out,))]

    @property
    def device_timed(self) -> bool:
        return self.device != "host"

    def device_run(self, x: np.ndarray) -> None:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.inference_mode():
            inputs = self._input(x)
            start.record()
            self.model(inputs)
            end.record()
        end.synchronize()
        self.device_seconds += start.elapsed_time(end) / 1e3


class TvmRuntime(Runtime):
    """A compiled library in a Relax VM: on this CPU, on a local GPU, or (subclass) on a board.

    CPU threads come from TVM_NUM_THREADS (see ``pin_threads``). ``device_run`` times one inference
    with TVM's own ``time_evaluator`` (device-synchronised, no Python or RPC in the figure) and
    advances ``device_clock``, a timer pytest-benchmark can use for GPUs and boards.
    """

    def __init__(self, library: Path, name: str, threads: int, tvm_target: str, schedules: str,
                 gpu: bool = False) -> None:
        import tvm

        super().__init__(name, tvm.__version__, threads, tvm_target, schedules, "cuda:0" if gpu else "host")
        self._dev = tvm.cuda(0) if gpu else tvm.cpu()
        self._load(tvm.runtime.load_module(str(library)))

    def _load(self, module) -> None:
        from tvm import relax

        self.vm = relax.VirtualMachine(module, self._dev)
        self._main = self.vm["main"]
        self._input_tensor = None

    def _input(self, x: np.ndarray):
        import tvm

        if self._input_tensor is None or tuple(self._input_tensor.shape) != x.shape:
            self._input_tensor = tvm.runtime.tensor(x, self._dev)
        else:
            self._input_tensor.copyfrom(x)
        return self._input_tensor

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self._outputs(self._main(self._input(x)))

    def _outputs(self, out) -> list[np.ndarray]:
        return vm_outputs(out)

    def time_evaluator(self, x: np.ndarray, number: int, repeat: int) -> list[float]:
        """Per-run seconds measured by TVM itself."""
        timer = self.vm.time_evaluator("main", self._dev, number=number, repeat=repeat)
        return list(timer(self._input(x)).results)

    @property
    def device_timed(self) -> bool:
        return self.device != "host"

    def device_run(self, x: np.ndarray) -> None:
        self.device_seconds += self.time_evaluator(x, number=1, repeat=1)[0]


class RemoteTvmRuntime(TvmRuntime):
    """A library on a board behind a TVM RPC tracker: uploaded, loaded and run in the board's VM."""

    def __init__(self, library: Path, session, name: str, threads: int, tvm_target: str, schedules: str,
                 board: str, emulated: bool) -> None:
        import tvm

        from targets.rpc import upload_and_load

        Runtime.__init__(self, name, tvm.__version__, threads, tvm_target, schedules, f"rpc:{board}",
                         emulated=emulated)
        self.session = session
        self._array_size = session.get_function("ffi.ArraySize")
        self._array_item = session.get_function("ffi.ArrayGetItem")
        self._dev = session.cpu()
        self._load(upload_and_load(session, library))

    def _outputs(self, out) -> list[np.ndarray]:
        if hasattr(out, "numpy"):
            return [out.numpy()]
        # A tuple of outputs stays on the board as a remote object: fetch it item by item.
        return [self._array_item(out, i).numpy() for i in range(self._array_size(out))]


def vm_outputs(out) -> list[np.ndarray]:
    """A VM result (one tensor or a tuple of them) as a list of numpy arrays."""
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [o.numpy() for o in out]


def pin_threads(threads: int) -> None:
    """Give every runtime the same thread count. TVM reads TVM_NUM_THREADS when its pool starts."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def check_threads(threads: int | None) -> int | None:
    """``threads`` unchanged, or a ``UserError`` if it is below 1: the one check (and message) behind every
    --threads option (``mnv2bench run`` and ``profile``, ``pytest bench/``, ``perf_vs_ort.py``). None: all cores."""
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1 (got {threads}); leave it out to use every core")
    return threads
