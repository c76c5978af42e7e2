"""The target registry: presets, triples, keys, and clear errors."""

from __future__ import annotations

import pytest

from models.errors import UserError
from targets.registry import PRESETS, host_target, resolve_target


def test_host_is_detected() -> None:
    host = resolve_target("host")
    assert host.triple == "x86_64-linux-gnu" and host.mcpu and host.num_cores >= 1
    assert host.key == f"x86_64-linux-gnu-{host.mcpu}"
    assert host.is_native and host.cross_compiler is None
    assert resolve_target(None) == host_target()


def test_triple_with_mcpu() -> None:
    spec = resolve_target("aarch64-linux-gnu", mcpu="cortex-a55")
    assert spec.key == "aarch64-linux-gnu-cortex-a55"
    assert spec.tvm_config() == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a55", "mattr": ["+neon"],
                                 "num-cores": 4}
    assert spec.cross_compiler == "aarch64-linux-gnu-gcc" and not spec.is_native


@pytest.mark.parametrize("name,key", [("rpi4", "aarch64-linux-gnu-cortex-a72"), ("rpi5", "aarch64-linux-gnu-cortex-a76"),
                                      ("a53", "aarch64-linux-gnu-cortex-a53"), ("pixel1", "aarch64-linux-gnu-kryo"),
                                      ("a100", "cuda-sm_80"), ("h100", "cuda-sm_90")])
def test_presets(name: str, key: str) -> None:
    assert resolve_target(name).key == key
    assert name in PRESETS


def test_gpu_targets_carry_thread_limits() -> None:
    target = resolve_target("h100").tvm_target()
    assert target.kind.name == "cuda"
    assert int(target.attrs["max_threads_per_block"]) == 1024  # a bare cuda target lacks it and fails
    assert resolve_target("cuda", arch="sm_86").key == "cuda-sm_86"
    assert resolve_target("nvptx64-nvidia-cuda", arch="sm_90").tvm_target().kind.name == "cuda"


def test_errors_list_the_known_targets() -> None:
    with pytest.raises(UserError, match="unknown target 'riscv64-linux-gnu'.*rpi4.*aarch64-linux-gnu"):
        resolve_target("riscv64-linux-gnu")
    with pytest.raises(UserError, match="--arch applies to GPU"):
        resolve_target("rpi4", arch="sm_90")
    with pytest.raises(UserError, match="--mcpu applies to CPU"):
        resolve_target("h100", mcpu="znver3")
    with pytest.raises(UserError, match="sm_90"):
        resolve_target("cuda", arch="hopper")
