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
from models.files import write_bytes_atomically


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
    library_cached: bool | None = None  # TVM: the compiled library came from the cache, nothing was compiled
    peak_memory_mib: float | None = None  # set by the harness (bench/memory.py): loading + first inference
    init_memory_mib: float | None = None  # loading alone
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

    def close(self) -> None:
        """Give back what only this runtime may hold (a board), once it is timed."""


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
        self.input_name = self.session.get_inputs()[0].name  # files exported elsewhere name it freely

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})


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


PEERS_INSTALL_HINT = "pip install -e '.[peers]'"


def import_peer(runtime: str):
    """The top module of an optional peer runtime (``openvino``, ``executorch``), or a UserError saying how to
    install it: these come with the ``peers`` extra, not with the project itself."""
    import importlib

    try:
        return importlib.import_module(runtime)
    except ImportError:
        raise UserError(f"{runtime} is not installed: {PEERS_INSTALL_HINT}") from None


def _cpu_only(runtime: str, gpu: bool) -> None:
    if gpu:
        raise UserError(f"{runtime} runs on this host's CPU only: drop it from --runtimes on a GPU target")


class OpenVinoRuntime(Runtime):
    """OpenVINO's CPU plugin on the exported ONNX file: latency hint (one stream), f32 precision (no bf16
    downcast on CPUs that have it), ``threads`` inference threads."""

    def __init__(self, onnx_path: Path, threads: int, gpu: bool = False) -> None:
        _cpu_only("openvino", gpu)
        ov = import_peer("openvino")
        from importlib.metadata import version

        super().__init__("openvino", version("openvino"), threads)
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        got = self.compiled.get_property("INFERENCE_NUM_THREADS")
        streams = self.compiled.get_property("NUM_STREAMS")
        self.notes.append(
            f"threads: INFERENCE_NUM_THREADS={threads} (the compiled model reports {got}), "
            f"PERFORMANCE_HINT=LATENCY ({streams} stream(s)), f32"
        )

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self.request.infer({0: x}, share_inputs=True).to_tuple())  # copies, in model output order


_executorch_pool_in_use: int | None = None  # thread count of the pool that loaded XNNPACK methods hold


def _executorch_threads(threads: int) -> int:
    """Size ExecuTorch's process-wide thread pool (the one its XNNPACK delegate runs on); return its size.

    The only knob is ``_unsafe_reset_threadpool``, which replaces the pool: a method loaded before keeps a
    pointer to the old one, so once methods exist the size can no longer change in this process."""
    global _executorch_pool_in_use
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        if _executorch_pool_in_use is not None:
            raise UserError(
                f"executorch already runs on {_executorch_pool_in_use} threads in this process and "
                f"cannot change to {threads}: run other thread counts in another process"
            )
        portable_lib._unsafe_reset_threadpool(threads)
    _executorch_pool_in_use = portable_lib._threadpool_get_thread_count()
    return _executorch_pool_in_use


class ExecuTorchRuntime(Runtime):
    """ExecuTorch with its XNNPACK delegate: the PyTorch model exported on ``x`` and lowered to a .pte file,
    cached (model, batch, weights, ExecuTorch version) so that a second run does not lower again."""

    def __init__(self, model: str, net, x: np.ndarray, threads: int, gpu: bool = False) -> None:
        _cpu_only("executorch", gpu)
        import_peer("executorch")
        from importlib.metadata import version

        from executorch.runtime import Runtime as EtRuntime

        super().__init__("executorch", version("executorch"), threads)
        et = EtRuntime.get()
        if not et.backend_registry.is_available("XnnpackBackend"):
            raise UserError(f"this executorch build has no XNNPACK backend: {PEERS_INSTALL_HINT}")
        pool = _executorch_threads(threads)  # before loading: the XNNPACK runtime keeps the pool it is made with
        pte, cached = self.lowered(model, net, x)
        self.method = et.load_program(pte).load_method("forward")
        self.notes.append(
            f"threads: ExecuTorch's thread pool (XNNPACK runs on it) set to {threads} with "
            f"portable_lib._unsafe_reset_threadpool before loading; it reports {pool}"
        )
        self.notes.append("program reused from the cache" if cached else "lowered to XNNPACK")

    @staticmethod
    def program_path(model: str, net, x: np.ndarray) -> Path:
        from importlib.metadata import version

        from models.export import cache_dir, weights_hash

        images = f"-b{x.shape[0]}" if x.shape[0] > 1 else ""  # the program is lowered for this input shape
        return cache_dir() / "pte" / f"{model}{images}-{weights_hash(net)[:8]}-executorch{version('executorch')}.pte"

    @classmethod
    def lowered(cls, model: str, net, x: np.ndarray) -> tuple[Path, bool]:
        """The model's .pte, lowered now unless the cache has it; and whether it had. The harness calls this
        before it measures memory: lowering is a compile step, not part of what the runtime needs."""
        pte = cls.program_path(model, net, x)
        cached = pte.exists()
        if not cached:
            _lower_to_xnnpack(net, x, pte)
        return pte, cached

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        return [t.numpy() for t in self.method.execute([torch.from_numpy(x)])]  # outputs are copied out


def _lower_to_xnnpack(net, x: np.ndarray, path: Path) -> None:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(net.eval(), (torch.from_numpy(x),))
    buffer = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    write_bytes_atomically(path, buffer)


class TorchCudaGraphRuntime(TorchRuntime):
    """PyTorch eager captured once in a CUDA graph and replayed (``torch.cuda.graphs``): what a PyTorch user
    does against launch overhead at batch 1. The input is copied into the graph's static input tensor."""

    def __init__(self, model, threads: int, gpu: bool = False) -> None:
        if not gpu:
            raise UserError("torch-cudagraph replays CUDA graphs: it needs a GPU target (--target h200)")
        super().__init__(model, threads, gpu=True)
        self.name = "torch-cudagraph"
        self._graph = None
        self._static_output = None

    def _capture(self, x: np.ndarray) -> None:
        import torch

        static_input = self._input(x)
        side = torch.cuda.Stream()  # warm-up on a side stream, as torch.cuda.graphs asks
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self.model(static_input)
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.inference_mode():
            out = self.model(static_input)
        self._static_output = out if isinstance(out, tuple) else (out,)

    def _replay(self, x: np.ndarray) -> None:
        if self._graph is None or tuple(self._input_tensor.shape) != x.shape:
            self._capture(x)
        else:
            self._input(x)  # copies into the captured input tensor
        self._graph.replay()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self._replay(x)
        return [t.cpu().numpy() for t in self._static_output]

    def device_run(self, x: np.ndarray) -> None:
        import torch

        self._input(x)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        self._graph.replay()
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
        self._input_tensor = self._input_view = None

    def _input(self, x: np.ndarray):
        """The VM's input tensor, holding ``x``. On this CPU ``x`` is copied in through a numpy view of the
        tensor: between two runs that costs about 40 us less than ``Tensor.copyfrom`` (bench/README.md)."""
        import tvm

        if self._input_tensor is None or tuple(self._input_tensor.shape) != x.shape:
            self._input_tensor = tvm.runtime.tensor(x, self._dev)
            self._input_view = np.from_dlpack(self._input_tensor) if self.device == "host" else None
        elif self._input_view is not None:
            np.copyto(self._input_view, x)
        else:
            self._input_tensor.copyfrom(x)
        return self._input_tensor

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self._outputs(self._main(self._input(x)))

    def _outputs(self, out) -> list[np.ndarray]:
        if self.device == "host":  # the VM's own buffers, not copies: as ONNX Runtime and PyTorch hand theirs out
            return [np.from_dlpack(t) for t in _tensors(out)]
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

    def close(self) -> None:
        """Drop every remote object and then the session, so that the board goes back to the tracker for
        the next case: pytest-benchmark keeps each device-timed case's clock, and so this runtime, to the end
        of the run, and a board serves one session at a time."""
        self.vm = self._main = self._input_tensor = self._array_size = self._array_item = None
        self._dev = self.session = None  # a remote device holds its session too

    def _outputs(self, out) -> list[np.ndarray]:
        if hasattr(out, "numpy"):
            return [out.numpy()]
        # A tuple of outputs stays on the board as a remote object: fetch it item by item.
        return [self._array_item(out, i).numpy() for i in range(self._array_size(out))]


def vm_outputs(out) -> list[np.ndarray]:
    """A VM result (one tensor or a tuple of them) as a list of numpy arrays, copied to the host."""
    return [t.numpy() for t in _tensors(out)]


def _tensors(out) -> list:
    return [out] if hasattr(out, "numpy") else list(out)


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
