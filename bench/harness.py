"""The benchmark harness behind ``pytest bench/``: prepares each model x runtime case.

pytest-benchmark owns the statistics; this module owns what is timed and, on this host, when: a
model's runtimes take turns in alternating blocks (``bench/interleave.py``) and their times are handed
to pytest-benchmark. A case is ready only when its runtime's output matched the PyTorch reference on
the seeded input, so a build that is fast but wrong fails instead of publishing a number.
"""

from __future__ import annotations

import copy
import os
import platform
from dataclasses import dataclass, field
from functools import cached_property, lru_cache, partial
from pathlib import Path

import numpy as np

from bench.memory import PeakMemory, release_free_memory
from models.complexity import count_madds, count_params
from models.errors import UserError
from models.export import assert_close, cache_dir, export_model, sample_input, torch_outputs
from models.registry import create_model, get_spec
from targets.registry import TargetSpec

RUNTIMES = ("tvm", "tvm-untuned", "onnxruntime", "torch", "torch-cudagraph", "openvino", "executorch")
CPU_PEERS = ("onnxruntime", "openvino", "executorch")  # the runtimes a CPU user would otherwise deploy with
GPU_RUNTIMES = ("tvm", "torch", "torch-cudagraph")
WARMUP_MIN_RUNS = 3
WARMUP_MIN_SECONDS = 0.5
# TVM reorders float sums (tiling, vectorisation): allow a little more than the exporter check does.
RTOL, ATOL = 2e-3, 2e-4


@dataclass
class Options:
    target: TargetSpec
    models: list[str]
    runtimes: list[str]
    threads: int
    weights: Path | None = None
    schedules: Path | None = None  # schedules root (default: the project's)
    force_schedules: bool = False
    rpc_tracker: str | None = None
    rpc_key: str | None = None  # default: the target preset's key
    emulated: bool = False  # the board is emulated (tests): results are labelled and never published
    device_rounds: int = 5  # --benchmark-min-rounds: device-timed cases' rounds, alternating cases' minimum
    no_cache: bool = False  # compile every library again instead of reusing the cached one
    cuda_graph: bool = True  # GPU libraries replay their kernel launches as CUDA graphs
    batch: int = 1  # images per inference (the paper's figures are batch 1)
    interleave: bool = True  # time a model's runtimes in alternating blocks (bench/interleave.py) on this host
    max_time: float = 1.0  # seconds of timing per case: --benchmark-max-time


@dataclass
class Case:
    """One model on one runtime, built, checked and warmed up: ready to be timed."""

    model: str
    runtime: object  # bench.runtimes.Runtime
    x: np.ndarray
    max_abs_error: float
    warmup_runs: int
    extra: dict = field(default_factory=dict)
    times: list[float] | None = None  # seconds per inference, taken in alternating blocks with its model's others

    def run(self) -> list[np.ndarray]:
        return self.runtime.run(self.x)

    def device_run(self) -> None:
        self.runtime.device_run(self.x)


class Harness:
    """Builds cases on demand and keeps what several cases share (models, references, exports).

    ``cases`` are the (model, runtime) pairs this run will time; on this host a model's runtimes are built
    together and timed in alternating blocks (``case``) unless ``options.interleave`` is off."""

    def __init__(self, options: Options, cases: list[tuple[str, str]] | None = None) -> None:
        self.options = options
        self.cases = cases if cases is not None else [(m, r) for m in options.models for r in options.runtimes]
        self._references: dict[str, list[np.ndarray]] = {}
        self._built: dict[tuple[str, str], object] = {}  # libraries compiled ahead, before memory is measured
        self._ready: dict[tuple[str, str], Case | Exception] = {}  # interleaved cases, timed, not yet reported

    @cached_property
    def hardware(self) -> str:
        return hardware_name(self.options.target, remote=self.remote, emulated=self.options.emulated)

    @property
    def remote(self) -> bool:
        return self.options.rpc_tracker is not None

    @property
    def rpc_key(self) -> str:
        return self.options.rpc_key or self.options.target.rpc_key or self.options.target.name

    def reference(self, model: str) -> list[np.ndarray]:
        if model not in self._references:
            net = reference_model(model, self.options.weights)
            self._references[model] = torch_outputs(net, self.input(model))
        return self._references[model]

    def input(self, model: str) -> np.ndarray:
        return sample_input(self.spec(model).input_shape)

    def spec(self, model: str):
        """The registered variant at this run's batch size."""
        return get_spec(model).with_batch(self.options.batch)

    @property
    def interleaves(self) -> bool:
        """Alternating blocks need every runtime on this host's clock: not on a GPU or a board."""
        return self.options.interleave and not (self.remote or self.options.target.is_gpu)

    def case(self, model: str, runtime: str, progress=None) -> Case:
        """The case ready to report: prepared now, or (interleaving) prepared and timed with the model's
        other runtimes when its first case came up. A runtime that failed raises here, in its own test."""
        if not self.interleaves:
            return self.prepare(model, runtime)
        if (model, runtime) not in self._ready:
            self._prepare_and_time(model, progress)
        outcome = self._ready.pop((model, runtime))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _prepare_and_time(self, model: str, progress=None) -> None:
        from bench.interleave import LATENCY_SOURCE, time_alternating

        names = [r for m, r in self.cases if m == model]
        for name in names:
            try:
                self._ready[model, name] = self.prepare(model, name)
            except Exception as exc:  # noqa: BLE001 - reported by that runtime's own test, not by this one
                self._ready[model, name] = exc
        ready = {name: self._ready[model, name] for name in names if isinstance(self._ready[model, name], Case)}
        if len(ready) < 2:  # nothing to alternate with: pytest-benchmark's own loop times it
            return
        if progress is not None:
            progress(f"    {', '.join(ready)} built and checked: timing them in alternating blocks")
        times = time_alternating({name: case.run for name, case in ready.items()}, self.options.max_time,
                                 self.options.device_rounds)
        for name, case in ready.items():
            case.times = times[name]
            case.extra.update(latency_source=LATENCY_SOURCE,
                              alternated_with=[other for other in ready if other != name])

    def prepare(self, model: str, runtime: str) -> Case:
        """Build the runtime for ``model``, check it against PyTorch, warm it up."""
        x = self.input(model)
        self._compile_ahead(model, runtime, x)  # compiling is not what the runtime needs to run: not measured
        release_free_memory()
        with PeakMemory() as memory:
            adapter = self._make_runtime(model, runtime)
            memory.loaded()
            outputs = adapter.run(x)
        if not self.remote:  # a board's memory is not this process's
            adapter.peak_memory_mib, adapter.init_memory_mib = memory.mib, memory.init_mib
        expected = self.reference(model)
        assert_close(outputs, expected, f"{model} on {runtime} vs PyTorch", rtol=RTOL, atol=ATOL)
        error = max(float(np.abs(a - e).max()) for a, e in zip(outputs, expected))
        warmup_runs = warm_up(adapter, x)
        return Case(model, adapter, x, error, warmup_runs, self._extra_info(model, adapter, error, warmup_runs))

    def _compile_ahead(self, model: str, runtime: str, x: np.ndarray) -> None:
        """Build what a runtime loads (TVM's library, ExecuTorch's program) so that loading it is all that
        the memory measurement sees. Cached: ``_make_runtime`` then finds it."""
        if runtime in ("tvm", "tvm-untuned"):
            self._built[(model, runtime)] = self._tvm_build(model, runtime)
        elif runtime == "executorch":
            from bench.runtimes import ExecuTorchRuntime

            ExecuTorchRuntime.lowered(model, reference_model(model, self.options.weights), x)

    def _make_runtime(self, model: str, runtime: str):
        from bench import runtimes

        threads = self.options.threads
        if self.remote and runtime in ("onnxruntime", "torch", "openvino", "executorch"):
            raise UserError(f"{runtime} runs on this host, not on the board: benchmark it on the board itself")
        if runtime == "onnxruntime":
            return runtimes.OnnxRuntime(export_model(model, self.options.weights, batch=self.options.batch), threads,
                                        gpu=self.options.target.is_gpu)
        if runtime == "torch":  # its own copy of the weights, so that loading them is measured like the others'
            return runtimes.TorchRuntime(copy.deepcopy(reference_model(model, self.options.weights)), threads,
                                         gpu=self.options.target.is_gpu)
        if runtime == "torch-cudagraph":
            return runtimes.TorchCudaGraphRuntime(reference_model(model, self.options.weights), threads,
                                                  gpu=self.options.target.is_gpu)
        if runtime == "openvino":
            return runtimes.OpenVinoRuntime(export_model(model, self.options.weights, batch=self.options.batch), threads,
                                            gpu=self.options.target.is_gpu)
        if runtime == "executorch":
            return runtimes.ExecuTorchRuntime(model, reference_model(model, self.options.weights), self.input(model),
                                              threads, gpu=self.options.target.is_gpu)
        if runtime in ("tvm", "tvm-untuned"):
            return self._tvm_runtime(model, runtime)
        raise ValueError(f"unknown runtime {runtime!r}")

    def _tvm_build(self, model: str, runtime: str):
        """The compiled library (from the cache unless --no-cache), built once per case."""
        from bench.build import cached_build, compile_to_library

        if (model, runtime) in self._built:
            return self._built.pop((model, runtime))
        spec = self.options.target
        if not (spec.is_native or spec.is_gpu or self.remote):
            raise UserError(f"a library for {spec.key} does not run here: give --rpc-tracker and --rpc-key")
        untuned = runtime == "tvm-untuned"
        library = library_path(model, spec, untuned, self.options.weights, self.options.schedules,
                               self.options.cuda_graph, self.options.batch)
        build = partial(compile_to_library, check=False) if self.options.no_cache else cached_build
        return build(model, spec, library, weights=self.options.weights, schedules=self.options.schedules,
                     force=self.options.force_schedules, untuned=untuned, cuda_graph=self.options.cuda_graph,
                     batch=self.options.batch)

    def _tvm_runtime(self, model: str, runtime: str):
        from bench.runtimes import TvmRuntime

        spec = self.options.target
        built = self._tvm_build(model, runtime)
        target = str(spec.tvm_config())
        if self.remote:
            from bench.runtimes import RemoteTvmRuntime
            from targets.rpc import request_session

            session = request_session(self.options.rpc_tracker, self.rpc_key)
            adapter = RemoteTvmRuntime(built.library, session, runtime, self.options.threads, target,
                                       built.schedules, self.rpc_key, self.options.emulated)
        else:
            adapter = TvmRuntime(built.library, runtime, self.options.threads, target, built.schedules,
                                 gpu=spec.is_gpu)
        adapter.notes += [built.coverage.summary()] + (["library reused from the cache"] if built.cached else [])
        adapter.kernels = {**built.coverage.counts(), "transferred_from": built.coverage.sources()}
        adapter.cuda_graph = built.cuda_graph
        adapter.library_cached = built.cached
        return adapter

    def _extra_info(self, model: str, adapter, error: float, warmup_runs: int) -> dict:
        spec = self.spec(model)
        net = reference_model(model, self.options.weights)
        paper = spec.paper if spec.batch == 1 else None  # the paper's figures are for one image
        import tvm

        return {
            "model": model,
            "runtime": adapter.name,
            "task": spec.task,
            "input_shape": list(spec.input_shape),
            "batch": spec.batch,
            "params": count_params(net),
            "madds": count_madds(net, spec.input_shape),
            "paper": None if paper is None else dict(vars(paper)),
            "runtime_version": adapter.version,
            "tvm_version": tvm.__version__,
            "tvm_target": adapter.tvm_target,
            "schedules": adapter.schedules,
            "threads": adapter.threads,
            "device": adapter.device,
            "emulated": adapter.emulated,
            "hardware": self.hardware,
            "weights": str(self.options.weights) if self.options.weights else "random (seed 0)",
            "max_abs_error_vs_torch": error,
            "warmup_runs": warmup_runs,
            "latency_source": adapter.device_timer if adapter.device_timed else "pytest-benchmark",
            "notes": "; ".join(adapter.notes),
            "kernels": adapter.kernels,
            "cuda_graph": adapter.cuda_graph,
            "library_cached": adapter.library_cached,
            "peak_memory_mib": adapter.peak_memory_mib,
            "init_memory_mib": adapter.init_memory_mib,
            "peak_memory_source": "host resident set: rise of its peak over loading (init) and loading plus the "
                                  "first inference (peak), freed memory returned to the OS before",
        }


@lru_cache(maxsize=2)
def reference_model(model: str, weights: Path | None):
    """The PyTorch model, built once per model: reference outputs, the torch runtime, counts, cache keys."""
    return create_model(model, weights)


def warm_up(adapter, x: np.ndarray) -> int:
    """Run until caches, thread pools and lazy initialisation have settled; return the run count."""
    import time

    runs, start = 0, time.perf_counter()
    while runs < WARMUP_MIN_RUNS or time.perf_counter() - start < WARMUP_MIN_SECONDS:
        adapter.run(x)
        runs += 1
    return runs


def library_path(model: str, spec: TargetSpec, untuned: bool, weights: Path | None, schedules: Path | None,
                 cuda_graph: bool = True, batch: int = 1) -> Path:
    """Where the compiled library is cached; the name changes with everything that changes it."""
    import tvm

    from models.export import weights_hash
    from schedules import database as db_files

    digest = weights_hash(reference_model(model, weights))[:8]
    schedule = "untuned" if untuned else db_files.sources_hash(spec, schedules)
    graphs = "-nographs" if spec.is_gpu and not cuda_graph else ""
    images = f"-b{batch}" if batch > 1 else ""
    name = f"{model}{images}-{spec.key}-{schedule}-{digest}{graphs}-{compiler_hash()}-tvm{tvm.__version__}.so"
    return cache_dir() / "lib" / name


@lru_cache(maxsize=1)
def compiler_hash() -> str:
    """A hash of our compile path's source (import, layout, rewrites, transfer, defaults, targets): a library
    built by other code is never taken from the cache, even with the same schedules and TVM."""
    import hashlib

    import schedules
    import targets

    root = Path(schedules.__file__).parent
    files = [*sorted((root / "pipeline").glob("*.py")), root / "search" / "transfer.py", root / "search" / "fallback.py",
             Path(targets.__file__).parent / "registry.py"]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:8]


def hardware_name(spec: TargetSpec, remote: bool = False, emulated: bool = False) -> str:
    """The machine's name in results/: ``x86_64-znver4-2c``, ``aarch64-cortex-a72-4c``, ``nvidia-h100``."""
    if spec.is_gpu:
        return gpu_name() or f"cuda-{spec.arch}"
    if remote:
        name = f"{spec.triple.split('-')[0]}-{spec.mcpu}" + (f"-{spec.num_cores}c" if spec.num_cores else "")
        return f"{name}-emulated" if emulated else name
    return f"{platform.machine()}-{spec.mcpu}-{os.cpu_count()}c"


def default_runtimes(target: TargetSpec, remote: bool) -> list[str]:
    """What a run compares when ``--runtimes`` is not given: TVM against what a user would otherwise run on
    that hardware. On a CPU, every CPU peer installed here (ONNX Runtime always; OpenVINO and ExecuTorch
    with the ``peers`` extra, which ``make`` installs); on a GPU, PyTorch eager and with CUDA graphs; on an
    RPC board TVM alone, since the peers run on this host only."""
    import importlib.util

    if remote:
        return ["tvm"]
    if target.is_gpu:
        return list(GPU_RUNTIMES)
    return ["tvm"] + [peer for peer in CPU_PEERS if importlib.util.find_spec(peer) is not None]


def gpu_name() -> str | None:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip().lower().replace(" ", "-") if out else None

