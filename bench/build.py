"""From a model name (or ONNX file) to a checked, deployable TVM library for a target."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from models.errors import UserError
from models.export import assert_close, export_model, load_onnx, onnx_input_shape, onnxruntime_outputs, sample_input
from models.files import write_text_atomically
from models.registry import get_spec
from schedules import database as db_files
from schedules.pipeline.compile import compile_onnx, export
from schedules.pipeline.coverage import Coverage
from schedules.search.transfer import Sources, transfer_sources
from targets.registry import TargetSpec, detect_gpu_arch


@dataclass
class BuildResult:
    library: Path
    onnx_path: Path
    spec: TargetSpec
    schedules: str  # "<key>@<hash>", "<key>@<hash> + transfers from <key>@<hash>", or "untuned"
    coverage: Coverage
    parity: str = "not checked"
    tasks: list = field(default_factory=list)  # schedules.tasks.Task, one per distinct kernel
    cached: bool = False  # reused from an earlier build, not compiled now
    cuda_graph: bool = False  # a GPU library that replays its kernel launches as CUDA graphs
    compile_s: float = 0.0  # seconds the compile took (with --measure-transfers, mostly timing)

    def __str__(self) -> str:
        lines = [
            f"wrote {self.library} for {self.spec.key} ({self.spec.tvm_config()})",
            f"schedules: {self.schedules}; {self.coverage.summary()}",
        ]
        if self.spec.is_gpu:
            lines.append(f"CUDA graphs: {'on' if self.cuda_graph else 'off'}")
        if self.coverage.transferred:
            lines.append(f"transferred (replayed from {', '.join(self.coverage.sources())}): "
                         + ", ".join(self.coverage.transferred))
        if self.coverage.measured:
            lines.append(f"chosen by timing: {self.coverage.measured} transferred schedules measured for "
                         f"{len(self.coverage.transferred)} kernels, the fastest kept (compile took {self.compile_s:.0f} s)")
        reasons = [reason for skipped in self.coverage.skipped.values() for reason in skipped]
        if reasons:
            lines.append(f"source traces that did not apply: {len(reasons)} (e.g. {reasons[0]})")
        if self.coverage.default:
            lines.append("default schedules: " + ", ".join(self.coverage.default))
        lines.append(f"parity with ONNX Runtime: {self.parity}")
        return "\n".join(lines)


def resolve_onnx(model: str, weights: Path | None = None, batch: int = 1) -> tuple[Path, onnx.ModelProto]:
    """A registered model name (exported with ``batch`` images, cached) or a path to an ONNX file."""
    path = Path(model)
    if model.endswith(".onnx") or path.is_file():
        if weights is not None:
            raise UserError("--weights applies to registered models, not to an ONNX file")
        if batch != 1:
            raise UserError("--batch applies to registered models: an ONNX file keeps its own input shape")
        return path, load_onnx(path)
    get_spec(model)  # unknown names fail here, with the list hint
    exported = export_model(model, weights, batch=batch)
    return exported, onnx.load(str(exported))


def schedule_databases(spec: TargetSpec, root: Path | None, force: bool = False) -> tuple[object, Sources, str]:
    """The target's own database (or None), the tuned workloads transfers may draw from (its own, those
    of the other databases of its architecture, then another architecture's), and a label naming them all."""
    database = db_files.open_database(spec, root, force=force)
    sources = transfer_sources(spec, root, database)
    labels = [f"{key}@{db_files.content_hash((root or db_files.schedules_root()) / key)}"
              for key in db_files.transfer_keys(spec, root)]
    if database is None and not labels:
        return None, Sources(), "untuned"
    own = labels.pop(0) if database is not None else None
    donors = f"transfers from {', '.join(labels)}" if labels else ""
    return database, sources, " + ".join(label for label in (own, donors) if label)


def compile_to_library(
    model: str,
    spec: TargetSpec,
    output: Path,
    weights: Path | None = None,
    schedules: Path | None = None,
    force: bool = False,
    check: bool = True,
    untuned: bool = False,
    cuda_graph: bool = True,
    rpc: tuple[str, str] | None = None,
    batch: int = 1,
    measure_transfers: bool = False,
) -> BuildResult:
    """Compile with the target's database and transfers (unless ``untuned``), export, check the library.
    ``measure_transfers``: time a few transferred schedules per kernel (here, or on the ``rpc`` board) and
    keep the fastest, instead of the nearest source's best unmeasured."""
    onnx_path, proto = resolve_onnx(model, weights, batch)
    database, sources, label = (None, Sources(), "untuned") if untuned else schedule_databases(spec, schedules, force)
    start = time.perf_counter()
    compiled = compile_onnx(proto, spec, database, sources, cuda_graph=cuda_graph,
                            measure=transfer_timer(spec, rpc) if measure_transfers else None)
    library = export(compiled.executable, output, spec)
    result = BuildResult(library, onnx_path, spec, label, compiled.coverage, tasks=compiled.tasks,
                         cuda_graph=spec.is_gpu and cuda_graph, compile_s=time.perf_counter() - start)
    if check and rpc is not None:
        from bench.runtimes import RemoteTvmRuntime
        from targets.rpc import request_session

        tracker, key = rpc
        board = RemoteTvmRuntime(library, request_session(tracker, key), "tvm", 0, "", "", key, emulated=False)
        result.parity = check_library(board, onnx_path, proto) + f" (on board {key!r})"
    elif check and (spec.is_native or spec.is_gpu and detect_gpu_arch() is not None):
        from bench.runtimes import TvmRuntime

        result.parity = check_library(TvmRuntime(library, "tvm", 0, "", "", gpu=spec.is_gpu), onnx_path, proto)
    elif check:
        result.parity = "not checked: the library is for another machine (give --rpc-tracker/--rpc-key to run it there)"
    return result


def transfer_timer(spec: TargetSpec, rpc: tuple[str, str] | None):
    """What times transferred schedules for ``compile --measure-transfers``: this machine when it runs the
    target's code, else the board behind ``rpc``; a one-line error when neither can."""
    from schedules.search.measure import RPCOptions, schedule_timer

    if spec.is_gpu:
        raise UserError("--measure-transfers applies to CPU targets (GPU kernels without records take DLight's rules)")
    if rpc is not None:
        return schedule_timer(spec, RPCOptions(*rpc))
    if not spec.is_native:
        raise UserError(f"--measure-transfers times schedules where they run: {spec.key} does not run here "
                        "(give --rpc-tracker/--rpc-key)")
    return schedule_timer(spec)


def cached_build(model: str, spec: TargetSpec, library: Path, **options) -> BuildResult:
    """``compile_to_library`` into ``library``, unless it was built before: the name of a cached library
    holds everything that changes it (``bench.harness.library_path``), and a record beside it keeps what
    the build reported. The library is not checked (the harness and perf_vs_ort check their outputs)."""
    record = library.with_suffix(".json")
    if library.exists() and record.exists():
        saved = json.loads(record.read_text())
        return BuildResult(library, Path(saved["onnx_path"]), spec, saved["schedules"], Coverage(**saved["coverage"]),
                           parity="not checked (cached)", cached=True, cuda_graph=saved["cuda_graph"])
    built = compile_to_library(model, spec, library, check=False, **options)
    write_text_atomically(record, json.dumps({"onnx_path": str(built.onnx_path), "schedules": built.schedules,
                                              "coverage": dataclasses.asdict(built.coverage),
                                              "cuda_graph": built.cuda_graph}))
    return built


def check_library(runtime, onnx_path: Path, proto: onnx.ModelProto) -> str:
    """Run the library (local, GPU or board) and compare with ONNX Runtime here on the seeded input."""
    x = sample_input(onnx_input_shape(proto))
    actual = runtime.run(x)
    expected = onnxruntime_outputs(onnx_path, x)
    try:
        assert_close(actual, expected, "TVM library vs ONNX Runtime")
    except AssertionError as exc:
        raise UserError(str(exc)) from None
    err = max(float(np.abs(a - e).max()) for a, e in zip(actual, expected))
    return f"ok (max abs difference {err:.2e})"
