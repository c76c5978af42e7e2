"""Targets and hardware presets: one entry per board, CPU or GPU.

A target is what ``mnv2bench tune/compile --target`` accepts: a preset name (``host``, ``rpi4``,
``h100``...) or a target triple (``x86_64-linux-gnu``, ``aarch64-linux-gnu``, ``cuda``) with an optional
``--mcpu`` / ``--arch``. Each resolves to a :class:`TargetSpec`: the TVM target, the cross compiler
that exports a library for it, and its *key*, the folder name its tuned schedules live under:

    <triple>-<cpu>          x86_64-linux-gnu-znver3, aarch64-linux-gnu-cortex-a72
    cuda-<arch>             cuda-sm_90

Two machines with the same key run the same generated code, so they can share a schedule database.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field, replace
from functools import cache

from models.errors import UserError

CPU_TRIPLES = {
    "x86_64-linux-gnu": {"cross_compiler": None, "default_mcpu": "x86-64-v3", "mattr": ()},
    "aarch64-linux-gnu": {
        "cross_compiler": "aarch64-linux-gnu-gcc", "default_mcpu": "generic", "mattr": ("+neon",), "cores": 4,
    },
    "armv7l-linux-gnueabihf": {
        "cross_compiler": "arm-linux-gnueabihf-gcc",
        "default_mcpu": "cortex-a7",
        "mattr": ("+neon", "+vfp4"),
        "cores": 4,
    },
}
GPU_TRIPLES = ("cuda", "nvptx64-nvidia-cuda")  # both mean TVM's cuda kind (the nvptx kind fails in 0.27)
CUDA_TAGS = {"sm_80": "nvidia/nvidia-a100", "sm_90": "nvidia/nvidia-h100"}  # tags fill in thread limits


@dataclass(frozen=True)
class TargetSpec:
    """Everything the project needs to know to compile for, and reach, one kind of hardware."""

    name: str
    triple: str
    description: str
    mcpu: str | None = None  # CPU model for LLVM (``-mcpu``)
    arch: str | None = None  # GPU architecture, e.g. sm_90
    num_cores: int | None = None
    mattr: tuple[str, ...] = ()
    rpc_key: str | None = None  # the key its boards register under with a TVM RPC tracker
    notes: str = field(default="", compare=False)

    @property
    def is_gpu(self) -> bool:
        return self.arch is not None

    @property
    def data_layout(self) -> str:
        """Convolution layout the schedules are tuned for: channels-last on CPUs, so that vectors run
        along channels; NCHW on GPUs, where DLight's default schedules expect it."""
        return "NCHW" if self.is_gpu else "NHWC"

    @property
    def key(self) -> str:
        return f"cuda-{self.arch}" if self.is_gpu else f"{self.triple}-{self.mcpu}"

    @property
    def cross_compiler(self) -> str | None:
        """Compiler that links an exported library, or None for the host's own."""
        return None if self.is_gpu else CPU_TRIPLES[self.triple]["cross_compiler"]

    @property
    def is_native(self) -> bool:
        """Whether a library for this target runs on this machine without a board or a GPU."""
        return not self.is_gpu and self.triple == host_triple()

    def tvm_config(self) -> dict:
        """The TVM target as a dict (0.27 accepts no target strings)."""
        if self.is_gpu:
            base = {"tag": CUDA_TAGS[self.arch]} if self.arch in CUDA_TAGS else {"kind": "cuda", "arch": self.arch}
            return base
        config: dict = {"kind": "llvm", "mtriple": self.triple, "mcpu": self.mcpu}
        if self.mattr:
            config["mattr"] = list(self.mattr)
        if self.num_cores:
            config["num-cores"] = self.num_cores
        return config

    def tvm_target(self):
        """The ``tvm.target.Target``; a GPU target carries the host CPU as its host."""
        import tvm

        if self.is_gpu:
            return tvm.target.Target(self.tvm_config(), host={"kind": "llvm"})
        return tvm.target.Target(self.tvm_config())


def host_triple() -> str | None:
    machine = platform.machine()
    triple = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "armv7l": "armv7l-linux-gnueabihf"}.get(
        machine
    )
    return triple if platform.system() == "Linux" else None


@cache
def host_cpu() -> str:
    """The host CPU as LLVM names it (``znver3`` on the AMD EPYC machines here)."""
    import tvm

    return str(tvm.get_global_func("target.llvm_get_system_cpu")())


def cpu_model() -> str:
    """The CPU's marketing name, for result files (``AMD EPYC``)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_target() -> TargetSpec:
    triple = host_triple()
    if triple is None:
        raise UserError(f"unsupported host {platform.system()} {platform.machine()}")
    return TargetSpec(
        name="host",
        triple=triple,
        description="this machine, detected",
        mcpu=host_cpu(),
        num_cores=os.cpu_count(),
        mattr=CPU_TRIPLES[triple]["mattr"],
    )


PRESETS: dict[str, TargetSpec] = {}


def register(spec: TargetSpec) -> TargetSpec:
    PRESETS[spec.name] = spec
    return spec


# One entry per board or GPU. Core counts are the cores the runtime uses (big cores only where stated).
register(TargetSpec("rpi4", "aarch64-linux-gnu", "Raspberry Pi 4 (Cortex-A72, 4 cores)", "cortex-a72", None, 4, ("+neon",), "rpi4"))
register(TargetSpec("rpi5", "aarch64-linux-gnu", "Raspberry Pi 5 / Cortex-A76 class (4 cores)", "cortex-a76", None, 4, ("+neon", "+dotprod"), "rpi5"))
register(TargetSpec("a53", "aarch64-linux-gnu", "Cortex-A53 class board (4 cores)", "cortex-a53", None, 4, ("+neon",), "a53"))
register(TargetSpec("pixel1", "aarch64-linux-gnu", "Google Pixel 1 class, Kryo; the paper timed one big core", "kryo", None, 1, ("+neon",), "pixel1"))
register(TargetSpec("a100", "cuda", "NVIDIA A100 (sm_80)", arch="sm_80"))
register(TargetSpec("h100", "cuda", "NVIDIA H100 (sm_90)", arch="sm_90"))
register(TargetSpec("h200", "cuda", "NVIDIA H200 (sm_90: the H100's chip with 141 GB of HBM3e)", arch="sm_90"))


def known_names() -> list[str]:
    return ["host", *PRESETS, *CPU_TRIPLES, *GPU_TRIPLES]


def resolve_target(name: str | None = None, mcpu: str | None = None, arch: str | None = None,
                   num_cores: int | None = None) -> TargetSpec:
    """A preset name or a triple (``None`` means the host), refined by ``--mcpu`` / ``--arch``."""
    name = name or "host"
    if name == "host":
        spec = host_target()
    elif name in PRESETS:
        spec = PRESETS[name]
    elif name in CPU_TRIPLES:
        is_host = name == host_triple()
        spec = TargetSpec(
            name=name,
            triple=name,
            description="host triple" if is_host else "generic CPU of this triple",
            mcpu=host_cpu() if is_host else CPU_TRIPLES[name]["default_mcpu"],
            # MetaSchedule needs a core count; boards of these triples have 4 (override: --num-cores)
            num_cores=os.cpu_count() if is_host else CPU_TRIPLES[name].get("cores"),
            mattr=CPU_TRIPLES[name]["mattr"],
        )
    elif name in GPU_TRIPLES:
        spec = TargetSpec(name="cuda", triple="cuda", description="NVIDIA GPU", arch=detect_gpu_arch() or "sm_80")
    else:
        raise UserError(f"unknown target {name!r}; known targets: {', '.join(known_names())}")
    if mcpu:
        if spec.is_gpu:
            raise UserError(f"--mcpu applies to CPU targets, not {name!r} (use --arch)")
        spec = replace(spec, mcpu=mcpu)
    if arch:
        if not spec.is_gpu:
            raise UserError(f"--arch applies to GPU targets, not {name!r} (use --mcpu)")
        if not (arch.startswith("sm_") and arch[3:].isdigit()):
            raise UserError(f"--arch must look like sm_90, got {arch!r}")
        spec = replace(spec, arch=arch)
    if num_cores:
        spec = replace(spec, num_cores=num_cores)
    return spec


def detect_gpu_arch() -> str | None:
    """The arch of GPU 0 as ``sm_XY``, or None when this machine has no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"sm_{out[0].replace('.', '')}" if out else None


def targets_table():
    """Every preset and triple with its TVM target, key, cross compiler and RPC key (a pandas DataFrame)."""
    import json

    import pandas as pd

    rows = []
    for name in known_names():
        if name == "nvptx64-nvidia-cuda":
            continue  # an alias of cuda
        spec = resolve_target(name)
        rows.append(
            {
                "name": name,
                "triple": spec.triple,
                "key": spec.key,
                "description": spec.description,
                "tvm_target": json.dumps(spec.tvm_config()),
                "cross_compiler": spec.cross_compiler or "",
                "rpc_key": spec.rpc_key or "",
            }
        )
    return pd.DataFrame(rows)
