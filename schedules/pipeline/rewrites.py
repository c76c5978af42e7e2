"""Graph rewrites that give CPU kernels a shape the auto-scheduler can make fast.

``separable_linear_resize``: Mobile DeepLabv3 ends by upsampling 21 x 33 x 33 logits to 513 x 513
bilinearly. TVM's ``resize2d`` kernel recomputes the source coordinates, their floors and clamps for
every one of the 5.5 M outputs; no schedule removes that arithmetic, and the kernel took 10 ms of the
model's 45 on 2 cores. Bilinear interpolation is separable and its taps depend only on the sizes, so the
rewrite precomputes them as constants (two source indices and a weight per output row and per output
column) and interpolates in two passes: along the width into a narrow map (21 x 33 x 513), then along
the height, where every output row blends two whole source rows and vectorises. The same arithmetic
as the ONNX ``Resize``, with the index math done once at compile time.

``pad_output_channels``: MetaSchedule tiles a loop only by divisors of its extent, so a convolution's
output channels are its vector lanes only as far as their count allows. SSDLite's class heads have
273 and 546 (3 and 6 anchors x 91 classes = 2 x 3 x 7 x 13): their channels-last kernels vectorise by
13 or 21 lanes: the 576 -> 273 head at 20 x 20 stayed at 1.34 ms (94 GFLOP/s) after 409 trials, and
took 1.15 ms after as many with 288 channels. The rewrite gives such a convolution zero output
channels up to a multiple of 16 (an AVX-512 vector of fp32, four of NEON's) when that adds at most an
eighth to its work, and slices the real channels back out; the weights are padded once, at compile time.

``gather_rows_concat``: SSDLite flattens each head's channels-last output into rows of box codes or
class logits (``reshape(x, (1, -1, 91))``) and concatenates the six heads' rows. Fused, the reshapes
unravel every output *element*'s flat index into (h, w, c) with divisions and remainders, and the
tuned class-logit concat took 0.22 ms for 0.7 MB (an unscheduled build of the same graph, reshapes
materialised, 0.05 ms on one thread). The rewrite computes the source position once per *row* of
``k`` channels, which are then one contiguous copy (0.03 ms unscheduled).

``skip_padding_taps``: DeepLab's ASPP convolutions are 3 x 3 with dilation 12, 24 and 36 (at output stride
8) on a 65 x 65 map, padded by as much. Near the borders most of their taps read padding: at dilation 36
three fifths of the multiply-adds are by zero, and the generic kernel does them all (ONNX Runtime's NCHWc
kernels skip the taps outside the image). Along each axis the outputs fall into a few intervals, each of which reads real input
through a fixed range of taps; the rewrite computes each rectangle of the grid as an unpadded
convolution with only those taps, on the slice of the input they read, and concatenates the rectangles.
The same sums without the zeros; applied where it saves at least a fifth of the work.

``stitch_concat_trees``: the rectangles of those convolutions are joined by concatenations along the
height and the width, and the ASPP joins its branches along the channels. Fused, such a tree becomes one
kernel whose every element walks a chain of selects, and where the chain turns on the channel its
vectorised loop is scalarised. The rewrite computes the whole tree as one ``stitch`` kernel of shape
(N, H, W, C / g, g), with g the channel count all parts share: which part an element comes from is decided
by its row, column and channel group, so each run of g channels is a plain copy.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

_RESIZE = tvm.ir.Op.get("relax.image.resize2d")
_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")
_CONCAT = tvm.ir.Op.get("relax.concat")
_RESHAPE = tvm.ir.Op.get("relax.reshape")
_MODES = ("align_corners", "half_pixel", "pytorch_half_pixel", "asymmetric")


def linear_taps(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lower, upper) and the upper one's weight for each output position (ONNX Resize)."""
    out = np.arange(out_size, dtype=np.float64)
    if mode == "align_corners":
        coord = out * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(out)
    elif mode == "asymmetric":
        coord = out * in_size / out_size
    elif mode == "pytorch_half_pixel" and out_size == 1:
        coord = np.zeros_like(out)
    else:  # half_pixel, pytorch_half_pixel
        coord = (out + 0.5) * in_size / out_size - 0.5
    coord = np.clip(coord, 0, in_size - 1)  # outside the image the nearest edge pixel is repeated
    lower = np.floor(coord).astype("int32")
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (coord - lower).astype("float32")


def _clamped(taps, size: int):
    """Tap ``k`` as an in-range index: the tables are in range, but the tuner measures on random ones."""
    from tvm import te

    return lambda k: te.max(te.min(taps[k], size - 1), 0)


def interpolate(data, taps, axis: int, name: str):
    """TE, one pass along ``axis`` (2: height, 3: width): each output blends two source slices. Along the
    width it gathers two source columns per output column; along the height every output row blends two
    whole source rows, contiguous, so it vectorises."""
    from tvm import te

    size = data.shape[axis]
    lower, upper, weight = _clamped(taps[0], size), _clamped(taps[1], size), taps[2]
    shape = [*data.shape[:axis], weight.shape[0], *data.shape[axis + 1 :]]

    def blend(*index):
        k = index[axis]

        def source(tap):
            return data[(*index[:axis], tap(k), *index[axis + 1 :])]

        return source(lower) * (1 - weight[k]) + source(upper) * weight[k]

    return te.compute(shape, blend, name=name)


@mutator
class _SeparableLinearResize(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op != _RESIZE or not _supported(call):
            return call
        _, _, in_h, in_w = (int(d) for d in call.args[0].ty.shape)
        out_h, out_w = (int(d) for d in call.args[1].values)
        mode = str(call.attrs.coordinate_transformation_mode)
        rows = [relax.const(a) for a in linear_taps(in_h, out_h, mode)]
        cols = [relax.const(a) for a in linear_taps(in_w, out_w, mode)]
        narrow = self.builder_.emit(self.builder_.call_te(interpolate, call.args[0], cols, 3, "resize_columns",
                                                          primfunc_name_hint="resize_columns"))
        return self.builder_.call_te(interpolate, narrow, rows, 2, "resize_rows", primfunc_name_hint="resize_rows")


def _supported(call) -> bool:
    attrs, data = call.attrs, call.args[0]
    shape = _static_shape(data)
    return (
        str(attrs.method) == "linear"
        and str(attrs.layout) == "NCHW"
        and str(attrs.coordinate_transformation_mode) in _MODES
        and all(float(v) == 0.0 for v in attrs.roi)
        and str(data.ty.dtype) == "float32"
        and shape is not None
        and len(shape) == 4
        and isinstance(call.args[1], relax.ShapeExpr)
        and all(isinstance(d, tvm.tirx.IntImm) for d in call.args[1].values)
    )


def _static_shape(expr) -> list[int] | None:
    """The tensor's shape as ints, or None where it is unknown or symbolic."""
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return [int(d) for d in shape]


def rewrite_functions(mod: tvm.IRModule, rewriter: PyExprMutator) -> tvm.IRModule:
    """``mod`` with each Relax function rewritten by ``rewriter``, and any kernels it added."""
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()


@tvm.transform.module_pass(opt_level=0, name="SeparableLinearResize")
def separable_linear_resize(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return rewrite_functions(mod, _SeparableLinearResize(mod))


CHANNEL_MULTIPLE = 16  # output channels are padded up to a multiple of this ...
MAX_EXTRA_WORK = 1 / 8  # ... when the padding adds at most this share of the convolution's work


def padded_channels(channels: int) -> int:
    """The output channel count to compute ``channels`` with: itself, or the next multiple of 16."""
    padded = -(-channels // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
    return padded if padded - channels <= MAX_EXTRA_WORK * channels else channels


@mutator
class _PadOutputChannels(PyExprMutator):
    """``conv2d(x, w)`` -> ``strided_slice(conv2d(x, pad(w)), real channels)`` for NHWC/OHWI convs."""

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op != _CONV2D or not _dense_channels_last(call):
            return call
        channels = int(call.args[1].ty.shape[0])
        padded = padded_channels(channels)
        if padded == channels:
            return call
        weight = relax.op.nn.pad(call.args[1], [0, padded - channels, 0, 0, 0, 0, 0, 0])
        wide = self.builder_.emit(relax.Call(call.op, [call.args[0], weight], call.attrs))
        return relax.op.strided_slice(wide, axes=[3], begin=[0], end=[channels])


def _dense_channels_last(call) -> bool:
    attrs = call.attrs
    return (
        int(attrs.groups) == 1
        and (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) == ("NHWC", "OHWI", "NHWC")
        and isinstance(call.args[1].ty.shape[0], tvm.tirx.IntImm)
    )


@tvm.transform.module_pass(opt_level=0, name="PadOutputChannels")
def pad_output_channels(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return rewrite_functions(mod, _PadOutputChannels(mod))


def gather_rows(*inputs, k: int):
    """TE: ``concat([reshape(x, (1, -1, k)) for x in inputs], axis=1)`` for inputs (1, ..., C) whose last
    dimension is a multiple of ``k``: the index arithmetic is done per output row, not per element."""
    from tvm import te

    ends = list(np.cumsum([_static_size(x.shape[1:]) // k for x in inputs]))
    starts = [0, *ends[:-1]]

    def source(x, local, j):
        *spatial, channels = (int(d) for d in x.shape[1:])
        groups = channels // k  # rows per spatial position
        rest, index = local // groups, []
        for size in reversed(spatial[1:]):
            index.insert(0, rest % size)
            rest = rest // size
        return x[(0, rest, *index, local % groups * k + j)]

    def row(n, r, j):
        value = source(inputs[-1], r - starts[-1], j)
        for x, start, end in reversed(list(zip(inputs[:-1], starts[:-1], ends[:-1]))):
            value = te.if_then_else(r < end, source(x, r - start, j), value)
        return value

    return te.compute((1, int(ends[-1]), k), row, name="gather_rows")


def _static_size(shape) -> int:
    return int(np.prod([int(d) for d in shape]))


@mutator
class _GatherRowsConcat(PyExprMutator):
    """``concat([reshape(x_i, (1, rows_i, k))], axis=1)`` -> ``gather_rows(x_i)``."""

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op != _CONCAT or int(call.attrs.axis) != 1:
            return call
        shape = _static_shape(call)
        if shape is None or len(shape) != 3 or shape[0] != 1:
            return call
        parts = call.args[0]
        parts = self.lookup_binding(parts) if isinstance(parts, relax.Var) else parts
        if not isinstance(parts, relax.Tuple):
            return call
        k = shape[2]
        sources = [self._reshaped(part, k) for part in parts.fields]
        if any(x is None for x in sources):
            return call
        return self.builder_.call_te(gather_rows, *sources, k=k, primfunc_name_hint="gather_rows")

    def _reshaped(self, part, k: int):
        """What ``part`` reshapes into rows of ``k``, if it is such a reshape of a (1, ..., C) tensor."""
        bound = self.lookup_binding(part) if isinstance(part, relax.Var) else None
        if not isinstance(bound, relax.Call) or bound.op != _RESHAPE:
            return None
        x = bound.args[0]
        shape = _static_shape(x)
        return x if shape is not None and len(shape) >= 3 and shape[0] == 1 and shape[-1] % k == 0 else None


@tvm.transform.module_pass(opt_level=0, name="GatherRowsConcat")
def gather_rows_concat(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return relax.transform.DeadCodeElimination()(rewrite_functions(mod, _GatherRowsConcat(mod)))


MAX_COMPUTED_SHARE = 0.8  # split a convolution when at least a fifth of its multiply-adds read padding


def tap_intervals(size: int, taps: int, dilation: int, pad_before: int, out_size: int):
    """For one axis of a stride-1 convolution: ``[(start, end, first, last)]``, the intervals of output
    positions ``[start, end)`` whose taps ``first..last`` (a contiguous range) read real input and the
    others padding. None when some outputs read padding alone."""
    edges = {0, out_size}
    for tap in range(taps):
        low = pad_before - tap * dilation  # tap reads real input for outputs in [low, low + size)
        edges.update(e for e in (low, low + size) if 0 < e < out_size)
    edges = sorted(edges)
    intervals = []
    for start, end in zip(edges, edges[1:]):
        real = [t for t in range(taps) if 0 <= start - pad_before + t * dilation < size]
        if not real:
            return None
        intervals.append((start, end, real[0], real[-1]))
    return intervals


def computed_share(intervals, taps: int, out_size: int) -> float:
    """The share of an axis's (output, tap) pairs that the intervals compute."""
    return sum((end - start) * (last - first + 1) for start, end, first, last in intervals) / (out_size * taps)


_EPILOGUES = {tvm.ir.Op.get(f"relax.{name}") for name in ("nn.relu", "add", "multiply", "maximum", "minimum")}


@mutator
class _SkipPaddingTaps(PyExprMutator):
    """A stride-1 NHWC/OHWI convolution -> the concatenation of unpadded convolutions over the regions of its
    output that read the same taps. Its per-channel epilogue (bias, ReLU, clip) is applied to each region
    before the concatenation, so each region fuses into one kernel of the structure the original had (and
    borrows its tuned schedules)."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.grids: list[tuple[relax.Var, list[list[relax.Var]]]] = []  # each split's result and its tiles
        self.slices: list[tuple[relax.Expr, tuple, relax.Var]] = []  # input slices emitted: (data, bounds, slice)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op == _CONV2D and _dense_channels_last(call) and (axes := _padding_axes(call)) is not None:
            return self._joined([[self._region(call, rows, cols) for cols in axes[1]] for rows in axes[0]])
        grid = self._grid_of(call.args[0]) if call.op in _EPILOGUES else None
        if grid is None or not all(_per_channel(arg) for arg in call.args[1:]):
            return call
        return self._joined([[relax.Call(call.op, [tile, *call.args[1:]], call.attrs) for tile in row] for row in grid])

    def _joined(self, grid: list[list]) -> relax.Var:
        """Emit the tiles, then their rows (concatenated along the width) and the rows along the height."""
        tiles = [[self.builder_.emit(tile) for tile in row] for row in grid]
        bands = [self.builder_.emit(relax.op.concat(row, axis=2)) if len(row) > 1 else row[0] for row in tiles]
        joined = self.builder_.emit(relax.op.concat(bands, axis=1)) if len(bands) > 1 else bands[0]
        self.grids.append((joined, tiles))
        return joined

    def _grid_of(self, expr):
        """The tiles of a split whose result ``expr`` is (through aliases), or None."""
        while isinstance(expr, relax.Var):
            for joined, tiles in self.grids:
                if joined.same_as(expr):
                    return tiles
            expr = self.lookup_binding(expr)
        return None

    def _region(self, call, rows, cols):
        """The convolution of one rectangle: the input slice it reads (shared by the rectangles that read
        the same one), the taps that read it, no padding."""
        data, weight = call.args
        attrs = call.attrs
        pads, dilation = [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation]
        begins = [start - pads[axis] + first * dilation[axis] for axis, (start, _, first, _) in enumerate((rows, cols))]
        ends = [end - pads[axis] + last * dilation[axis] for axis, (_, end, _, last) in enumerate((rows, cols))]
        bounds = (*begins, *ends)
        piece = next((v for d, b, v in self.slices if d.same_as(data) and b == bounds), None)
        if piece is None:
            piece = self.builder_.emit(relax.op.strided_slice(data, axes=[1, 2], begin=begins, end=ends))
            self.slices.append((data, bounds, piece))
        kernel = relax.op.strided_slice(weight, axes=[1, 2], begin=[rows[2], cols[2]],
                                        end=[rows[3] + 1, cols[3] + 1])
        one_tap = [first == last for _, _, first, last in (rows, cols)]
        return relax.op.nn.conv2d(
            piece, kernel, strides=1, padding=0, dilation=[1 if one else d for one, d in zip(one_tap, dilation)],
            data_layout="NHWC", kernel_layout="OHWI", out_layout="NHWC", out_dtype=str(call.ty.dtype),
        )


def _per_channel(expr) -> bool:
    """A scalar or a tensor that varies along the channels alone (NHWC), so it applies tile by tile."""
    shape = _static_shape(expr)
    return shape is not None and all(d == 1 for d in shape[:-1])


def _padding_axes(call):
    """The (rows, columns) intervals of ``tap_intervals`` when splitting the convolution saves enough work."""
    attrs = call.attrs
    in_shape, out_shape, w_shape = _static_shape(call.args[0]), _static_shape(call), _static_shape(call.args[1])
    if None in (in_shape, out_shape, w_shape) or any(int(s) != 1 for s in attrs.strides):
        return None
    pads, dilation = [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation]
    axes = [tap_intervals(in_shape[1 + a], w_shape[1 + a], dilation[a], pads[a], out_shape[1 + a]) for a in (0, 1)]
    if None in axes:
        return None
    share = computed_share(axes[0], w_shape[1], out_shape[1]) * computed_share(axes[1], w_shape[2], out_shape[2])
    return axes if share <= MAX_COMPUTED_SHARE else None


@tvm.transform.module_pass(opt_level=0, name="SkipPaddingTaps")
def skip_padding_taps(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return relax.transform.DeadCodeElimination()(rewrite_functions(mod, _SkipPaddingTaps(mod)))


def _extent(tree, parts, axis: int) -> int:
    """The size along ``axis`` of a concatenation tree: a part's index, or ``(axis, subtrees)``."""
    if isinstance(tree, int):
        return int(parts[tree].shape[axis])
    along, subtrees = tree
    sizes = [_extent(subtree, parts, axis) for subtree in subtrees]
    return sum(sizes) if along == axis else sizes[0]


def stitch(*parts, tree, group: int):
    """TE: the concatenation tree ``tree`` of 4-D ``parts`` as an (N, H, W, C / group, group) tensor. The
    part is chosen by row, column and channel group, so the inner ``group`` channels copy without a select."""
    from tvm import te

    def element(node, n, at: list, j):  # at: (row, column, channel group)
        if isinstance(node, int):
            return parts[node][n, at[0], at[1], at[2] * group + j]
        axis, subtrees = node
        unit = group if axis == 3 else 1
        ends = [int(e) for e in np.cumsum([_extent(s, parts, axis) // unit for s in subtrees])]
        starts = [0, *ends[:-1]]

        def shifted(subtree, start):
            return element(subtree, n, [c - start if a == axis else c for a, c in zip((1, 2, 3), at)], j)

        value = shifted(subtrees[-1], starts[-1])
        for subtree, start, end in reversed(list(zip(subtrees[:-1], starts, ends))):
            value = te.if_then_else(at[axis - 1] < end, shifted(subtree, start), value)
        return value

    batch, height, width, channels = (_extent(tree, parts, a) for a in range(4))
    return te.compute((batch, height, width, channels // group, group),
                      lambda n, h, w, s, j: element(tree, n, [h, w, s], j), name="stitch")


@mutator
class _StitchConcatTrees(PyExprMutator):
    """A concatenation of concatenations of 4-D tensors (along rows, columns or channels) -> ``stitch``,
    reshaped. A single concatenation is left to TOPI's kernel (and to the schedules tuned for it)."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.originals: dict[relax.Var, relax.Call] = {}  # each stitch's result -> the concatenation it replaced

    def visit_call_(self, call):
        call = super().visit_call_(call)
        shape = _static_shape(call)
        if call.op != _CONCAT or shape is None or len(shape) != 4:
            return call
        parts: list[relax.Expr] = []
        tree = self._tree(call, parts)
        if isinstance(tree, int) or all(isinstance(subtree, int) for subtree in tree[1]):
            return call
        if any(_static_shape(part) is None for part in parts):
            return call
        group = math.gcd(*(_static_shape(part)[3] for part in parts))
        stitched = self.builder_.emit(self.builder_.call_te(stitch, *parts, tree=tree, group=group,
                                                            primfunc_name_hint="stitch"))
        joined = self.builder_.emit(relax.op.reshape(stitched, shape))
        self.originals[joined] = call
        return joined

    def _tree(self, expr, parts: list):
        """The concatenation tree under ``expr``: ``(axis, subtrees)``, or the index of a part in ``parts``."""
        call = expr
        while isinstance(call, relax.Var):  # through aliases, to a binding or a stitch's concatenation
            call = self.originals[call] if call in self.originals else self.lookup_binding(call)
        fields = call.args[0] if isinstance(call, relax.Call) and call.op == _CONCAT else None
        fields = self.lookup_binding(fields) if isinstance(fields, relax.Var) else fields
        axis = int(call.attrs.axis) % 4 if fields is not None else 0
        if not isinstance(fields, relax.Tuple) or axis == 0 or _static_shape(call) is None:
            parts.append(expr)
            return len(parts) - 1
        return axis, tuple(self._tree(field, parts) for field in fields.fields)


@tvm.transform.module_pass(opt_level=0, name="StitchConcatTrees")
def stitch_concat_trees(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    return relax.transform.DeadCodeElimination()(rewrite_functions(mod, _StitchConcatTrees(mod)))
