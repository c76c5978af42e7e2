"""ONNX export: validity, the ``input`` contract, ORT parity, caching, and trained weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from models.export import export_model, onnxruntime_outputs, sample_input, torch_outputs
from models.registry import create_model, get_spec

pytestmark = pytest.mark.slow
SMALL = "mobilenet_v2_0.35_96"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNV2BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_export_is_valid_and_matches_pytorch(cache) -> None:
    path = export_model(SMALL)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    assert graph_input.name == "input"
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [1, 3, 96, 96]
    x = sample_input((1, 3, 96, 96), seed=1)
    (ours,) = onnxruntime_outputs(path, x)
    (ref,) = torch_outputs(create_model(SMALL), x)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_export_is_cached_by_content(cache, tmp_path) -> None:
    first = export_model(SMALL)
    stamp = first.stat().st_mtime_ns
    assert export_model(SMALL) == first and first.stat().st_mtime_ns == stamp  # not re-exported
    state = create_model(SMALL).state_dict()
    state["classifier.1.bias"] += 1.0
    weights = tmp_path / "w.pth"
    torch.save(state, weights)
    other = export_model(SMALL, weights)
    assert other != first  # other weights, other cache entry
    out = export_model(SMALL, weights, out=tmp_path / "copy.onnx")
    assert out.read_bytes() == other.read_bytes()


def test_detection_export_has_both_heads(cache) -> None:
    path = export_model("ssdlite_mobilenet_v2_320")
    outputs = onnx.load(str(path)).graph.output
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in outputs]
    assert shapes == [[1, 2034, 4], [1, 2034, 91]]
    assert get_spec("ssdlite_mobilenet_v2_320").input_shape == (1, 3, 320, 320)


def test_onnx_runtime_feeds_a_file_whose_input_has_another_name(tmp_path) -> None:
    """Files exported elsewhere name their input freely ("x", "images"): the peer and the parity check
    feed whatever the file declares instead of assuming our own name."""
    from bench.runtimes import OnnxRuntime

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    path = tmp_path / "other.onnx"
    torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False, input_names=["x"], opset_version=17)
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(onnxruntime_outputs(path, x)[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(OnnxRuntime(path, threads=1).run(x)[0], expected, rtol=1e-5, atol=1e-5)
