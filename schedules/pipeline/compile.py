"""ONNX -> Relax -> (tuned) library, as named steps a user can see and a test can call alone.

    import_onnx      ONNX model -> Relax IRModule, weights bound as constants
    lower            the target's layout (NHWC on CPUs, see layout.py) and CPU rewrites (rewrites.py),
                     legalise to TIR and fuse: the module whose PrimFuncs are the tuning tasks
    cover            every kernel's schedule: its tuned record, else one transferred from a tuned
                     kernel of the same kind (``coverage``), else a default
    apply_schedules  the chosen schedules; CPU weights pre-packed at compile time;
                     GPU kernels without a record get DLight default schedules
    build / export   Relax VM executable (CUDA graphs on GPUs), and a deployable library (cross-linked
                     for a board)

On CPUs the tasks are lowered with layout-free weight buffers (``AttachAttrLayoutFreeBuffers``), so a
tuned schedule may choose the weight layout that suits its loops; after the database is applied the
re-layout is split off, lifted and constant-folded, so ``main`` still takes the input alone and the
packing costs nothing at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
import tvm
from tvm import relax

from models.errors import UserError
from models.files import replace_atomically
from schedules.pipeline.coverage import Coverage, Measure, cover
from schedules.pipeline.layout import convert_layout
from schedules.pipeline.rewrites import (
    gather_rows_concat,
    pad_output_channels,
    separable_linear_resize,
    skip_padding_taps,
    stitch_concat_trees,
)
from schedules.search.transfer import Sources
from schedules.tasks import Task, extract_tasks
from targets.registry import TargetSpec


def import_onnx(model: onnx.ModelProto, input_shape: tuple[int, ...] | None = None) -> tvm.IRModule:
    """Import with the weights as constants (they fold into the kernels' neighbours and the library)."""
    from tvm.relax.frontend.onnx import from_onnx

    from models.export import onnx_input_shape

    graph_input = model.graph.input[0]
    if input_shape is None:
        input_shape = onnx_input_shape(model)
        if any(d <= 0 for d in input_shape):
            raise UserError(f"input {graph_input.name!r} has a dynamic shape; only fixed shapes are supported")
    try:
        mod = from_onnx(model, shape_dict={graph_input.name: list(input_shape)}, keep_params_in_input=False)
    except Exception as exc:
        raise UserError(f"TVM cannot import this ONNX model: {str(exc).splitlines()[0]}") from None
    return mod


def lower(mod: tvm.IRModule, spec: TargetSpec) -> tvm.IRModule:
    """Convert the layout, legalise and fuse: every PrimFunc of the result is one tuning task."""
    cpu_rewrites = [] if spec.is_gpu else [separable_linear_resize, skip_padding_taps, stitch_concat_trees,
                                           pad_output_channels, gather_rows_concat]
    passes = [
        convert_layout(spec),
        *cpu_rewrites,
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
    if not spec.is_gpu:
        passes.append(relax.transform.AttachAttrLayoutFreeBuffers())
    with spec.tvm_target():
        return tvm.transform.Sequential(passes)(mod)


def apply_schedules(mod: tvm.IRModule, spec: TargetSpec, database=None) -> tvm.IRModule:
    """Apply the database's best schedules; give the GPU's untuned kernels DLight defaults."""
    from tvm.s_tir import dlight as dl
    from tvm.s_tir import meta_schedule as ms

    database = database if database is not None else ms.database.MemoryDatabase()
    with spec.tvm_target(), database:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        if spec.is_gpu:
            mod = dl.ApplyDefaultSchedule(
                # No dl.gpu.GEMV(): its analysis asserts on some of SSDLite's fused kernels in 0.27.
                dl.gpu.Matmul(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()
            )(mod)
        else:
            mod = tvm.transform.Sequential(
                [
                    relax.transform.SplitLayoutRewritePreproc(),
                    relax.transform.LiftTransformParams(),
                    relax.transform.FoldConstant(),
                    # The folded weights arrive as a tuple of constants per kernel, built and unpacked
                    # by the VM on every run (about 500 instructions for SSDLite): pass them directly.
                    relax.transform.CanonicalizeBindings(),
                    relax.transform.DeadCodeElimination(),
                ]
            )(mod)
    return mod


def build(mod: tvm.IRModule, spec: TargetSpec, cuda_graph: bool = True) -> relax.VMExecutable:
    """The Relax VM executable. On a GPU the kernel launches of each static region are captured into a
    CUDA graph on the first run and replayed after it (at batch 1, launches are most of the time)."""
    config = {"relax.backend.use_cuda_graph": True} if spec.is_gpu and cuda_graph else {}
    with tvm.transform.PassContext(config=config):
        return tvm.compile(mod, target=spec.tvm_target())


def export(executable: relax.VMExecutable, path: str | Path, spec: TargetSpec) -> Path:
    """Write a deployable shared library, linked by the target's cross compiler where it has one."""
    fcompile = None
    if spec.cross_compiler:
        from tvm.support.cc import cross_compiler

        fcompile = cross_compiler(spec.cross_compiler)
    return replace_atomically(path, lambda staged: executable.export_library(str(staged), fcompile=fcompile))


@dataclass
class CompiledModel:
    executable: relax.VMExecutable
    coverage: Coverage  # which kernels are tuned, transferred, default
    tasks: list[Task]  # one per distinct kernel


def compile_onnx(model: onnx.ModelProto, spec: TargetSpec, database=None, sources: Sources | None = None,
                 cuda_graph: bool = True, measure: Measure | None = None) -> CompiledModel:
    """The whole path: import, lower, cover every kernel (the database's records, else schedules
    transferred from ``sources``, the fastest of a few if ``measure`` times them, else a default),
    build (with CUDA graphs on GPUs unless told not to)."""
    lowered = lower(import_onnx(model), spec)
    tasks = extract_tasks(lowered, spec)
    schedules, coverage = cover(tasks, spec, database, sources, measure=measure)
    executable = build(apply_schedules(lowered, spec, schedules), spec, cuda_graph)
    if spec.is_gpu:
        from targets.cuda import cuda_source

        cuda_source(executable)  # raises when the kernels silently went to the host
    return CompiledModel(executable, coverage, tasks)


def model_tasks(name: str, spec: TargetSpec, weights=None) -> list[Task]:
    """The tuning tasks of a registered model (exported, imported and lowered for ``spec``)."""
    from models.export import export_model

    return extract_tasks(lower(import_onnx(onnx.load(export_model(name, weights))), spec), spec)
