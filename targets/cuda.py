"""NVIDIA GPUs: the device code inside a compiled library, and nvcc to check it for an architecture.

Where TVM's CUDA runtime cannot load (no driver: CI, the build machines), a library built for ``cuda``
holds CUDA C source, compiled when a GPU machine loads it; on a GPU machine the build itself compiles it
(NVRTC, through ``tvm_callback_cuda_compile``). A build that lacks device schedules can also "succeed"
with every kernel on the host; ``cuda_source`` refuses such a library, and ``compile_cubin`` proves
(with no GPU) that the source compiles for the target's architecture.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


class NoDeviceCode(RuntimeError):
    """A GPU build without a CUDA module: its kernels would run on the host CPU."""


def cuda_source(module) -> str:
    """The CUDA C source of a built executable or loaded library (searched through its imports)."""
    stack = [getattr(module, "mod", module)]
    while stack:
        current = stack.pop()
        if current.kind == "cuda":
            return current.inspect_source("cuda")
        stack.extend(current.imports)
    raise NoDeviceCode("the library has no CUDA module: every kernel was compiled for the host")


def kernel_count(source: str) -> int:
    return source.count('extern "C" __global__')


def compile_cubin(source: str, arch: str, timeout_s: float = 600) -> bytes:
    """Compile CUDA source for ``arch`` (``sm_90``) with nvcc; returns the cubin."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on the PATH")
    with tempfile.TemporaryDirectory(prefix="mnv2bench-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.cubin"
        src.write_text(source)
        result = subprocess.run([nvcc, "-cubin", f"-arch={arch}", "-w", "-o", str(out), str(src)],
                                capture_output=True, text=True, timeout=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed for {arch}: {result.stderr.strip().splitlines()[-1:]}")
        return out.read_bytes()
