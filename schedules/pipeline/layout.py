"""Channels-last (NHWC) convolutions for CPUs.

ONNX convolutions are NCHW. On a CPU that layout puts the vector lanes along a feature map's width,
which is short and ragged in MobileNetV2 (7, 14, 28 ...), while its channel counts (96, 144, 384, 960)
are multiples of the vector width. In NHWC a pointwise convolution is a plain GEMM whose output
channels are contiguous, and a depthwise one reads and writes whole vectors of channels: MetaSchedule
then finds kernels two to three times faster for the same trials. The transposes Relax inserts at the
model's edges (input, head) are the only extra work.

One obstacle: the ONNX frontend turns ``Clip`` (ReLU6) into opaque ``call_tir`` kernels, which
``ConvertLayout`` cannot see through, so every ReLU6 would be wrapped in a pair of transposes.
``clip_as_elementwise_ops`` first rewrites them as the Relax operators they are.

A second one: a graph that transposes NCHW to NHWC itself (SSDLite's heads, before they flatten their
boxes and scores) is left by ``ConvertLayout`` with an identity ``permute_dims(axes=[0, 1, 2, 3])``.
Fused into the head's convolution as a last copy stage, it kept the kernel at 79 GFLOP/s after 217
trials (94 after 409 without it); ``drop_identity_permutes`` removes it.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from schedules.pipeline.rewrites import rewrite_functions
from targets.registry import TargetSpec

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_PERMUTE_DIMS = tvm.ir.Op.get("relax.permute_dims")
_CLIP_HALVES = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}  # the frontend's Clip kernels


@mutator
class _ClipAsElementwiseOps(PyExprMutator):
    """``call_tir(maximum|minimum, (x, scalar constant))`` -> ``R.maximum|R.minimum(x, constant)``."""

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op != _CALL_TIR:
            return call
        kernel = call.args[0].name_hint.rstrip("0123456789")
        args = call.args[1].fields
        bound = args[1] if len(args) == 2 else None
        if kernel in _CLIP_HALVES and isinstance(bound, tvm.ir.expr.Constant) and len(bound.ty.shape) == 0:
            return _CLIP_HALVES[kernel](args[0], bound)
        return call


@tvm.transform.module_pass(opt_level=0, name="ClipAsElementwiseOps")
def clip_as_elementwise_ops(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    mod = relax.transform.FoldConstant()(mod)  # the frontend's NaN guards on constant bounds fold away
    return relax.transform.DeadCodeElimination()(rewrite_functions(mod, _ClipAsElementwiseOps(mod)))


@mutator
class _DropIdentityPermutes(PyExprMutator):
    """``permute_dims(x, axes=[0, 1, ..., n-1])`` -> ``x``."""

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op != _PERMUTE_DIMS or call.attrs.axes is None:
            return call
        if [int(a) for a in call.attrs.axes] == list(range(len(call.attrs.axes))):
            return call.args[0]
        return call


@tvm.transform.module_pass(opt_level=0, name="DropIdentityPermutes")
def drop_identity_permutes(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return relax.transform.CanonicalizeBindings()(rewrite_functions(mod, _DropIdentityPermutes(mod)))


def convert_layout(spec: TargetSpec) -> tvm.transform.Pass:
    """The passes that give ``spec``'s convolutions their layout (nothing for NCHW targets)."""
    if spec.data_layout == "NCHW":
        return tvm.transform.Sequential([])
    desired = {
        "relax.nn.conv2d": [spec.data_layout, "OHWI"],
        # DeepLab's final upsampling writes 21 x 513 x 513 NCHW logits: resized channels-last, they would
        # need a strided transpose of all of them afterwards; transposing the 33 x 33 map before is free.
        "relax.image.resize2d": ["NCHW"],
    }
    return tvm.transform.Sequential(
        [clip_as_elementwise_ops, relax.transform.ConvertLayout(desired), drop_identity_permutes]
    )
