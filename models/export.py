"""ONNX export with torch's current (dynamo) exporter, checked and cached.

Every export is validated twice before it is trusted: by the ONNX checker, and numerically, by
running it in ONNX Runtime against PyTorch on a seeded random input. Exports are cached under a key
made of the model name, resolution and a hash of the weights, so a run re-exports only what changed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from models.errors import UserError
from models.files import write_bytes_atomically
from models.registry import ModelSpec, create_model, get_spec

INPUT_NAME = "input"
OPSET = 20
RTOL, ATOL = 1e-3, 1e-4


def cache_dir() -> Path:
    """``$MNV2BENCH_CACHE`` or ``~/.cache/mnv2bench``: exports and other rebuildable artefacts."""
    return Path(os.environ.get("MNV2BENCH_CACHE", Path.home() / ".cache" / "mnv2bench"))


def sample_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """The seeded input every parity check uses: standard normal, like a normalised image."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"torch {torch.__version__} opset {OPSET}".encode())
    return digest.hexdigest()[:16]


def torch_outputs(model: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def assert_close(actual: list[np.ndarray], expected: list[np.ndarray], what: str, rtol=RTOL, atol=ATOL) -> None:
    """Outputs must match within tolerance, scaled by each output's magnitude."""
    if len(actual) != len(expected):
        raise AssertionError(f"{what}: {len(actual)} outputs, expected {len(expected)}")
    for i, (a, e) in enumerate(zip(actual, expected)):
        if a.shape != e.shape:
            raise AssertionError(f"{what}: output {i} has shape {a.shape}, expected {e.shape}")
        scale = max(float(np.abs(e).max()), 1.0)
        err = float(np.abs(a - e).max())
        if not err <= atol * scale + rtol * scale:
            raise AssertionError(f"{what}: output {i} differs by {err:.3g} (output scale {scale:.3g})")


def onnxruntime_outputs(path: Path, x: np.ndarray, threads: int = 0) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})  # files exported elsewhere name it freely


def export_model(
    name: str, weights: str | Path | None = None, out: Path | None = None, spec: ModelSpec | None = None,
    batch: int = 1,
) -> Path:
    """Export a registered model to ONNX (``batch`` images, input named ``input``) and return the file's path.

    ``spec`` overrides the registered one (tests use it for a smaller resolution).
    """
    spec = (spec or get_spec(name)).with_batch(batch)
    model = create_model(name, weights)
    key = f"{spec.name}-{spec.resolution}{f'-b{batch}' if batch > 1 else ''}-{weights_hash(model)}"
    cached = cache_dir() / "onnx" / f"{key}.onnx"
    if not cached.exists():
        _export_checked(model, spec, cached)
    if out is None:
        return cached
    return write_bytes_atomically(out, cached.read_bytes())


def _export_checked(model: nn.Module, spec: ModelSpec, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = sample_input(spec.input_shape)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_path = Path(tmp) / path.name
        program = torch.onnx.export(
            model, (torch.from_numpy(x),), dynamo=True, input_names=[INPUT_NAME], opset_version=OPSET, verbose=False
        )
        program.save(str(tmp_path))
        onnx.checker.check_model(str(tmp_path), full_check=True)
        assert_close(onnxruntime_outputs(tmp_path, x), torch_outputs(model, x), f"{spec.name}: ONNX Runtime vs PyTorch")
        os.replace(tmp_path, path)


def onnx_input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    """The first graph input's shape (0 where a dimension is dynamic)."""
    return tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and check a user-supplied ONNX file; a bad one is a one-line error, not a traceback."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise UserError(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise UserError(f"{path}: expected one input tensor, found {len(inputs)}")
    return model
