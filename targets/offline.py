"""Carry TVM to a machine that reaches no package registry and takes a limited upload (a lent GPU box).

``pack`` writes a bundle folder: one tar.xz of this environment's apache-tvm (a ``py3-none`` wheel, so
any CPython 3 runs it) and of the wheels of its two compiled companions for the other machine's Python:
apache-tvm-ffi (the pinned version; see pyproject.toml) and xgboost-cpu (MetaSchedule's cost model; the
``xgboost`` wheel carries CUDA: 230 MB installed, and NCCL). xz's x86 filter finds the repeats in machine code,
and libtvm_compiler.so is 250 MB of it: for Python 3.12 the bundle is 64 MiB, cut into parts for uploads
with a size limit. ``install`` needs nothing but the standard library, since the other machine has no
TVM yet::

    make offline-bundle PY=3.12                                    # here: .offline/
    python3 -m targets.offline install .offline /tmp/site          # there, from the repo root
    export PYTHONPATH=/tmp/site:$PWD
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

ARCHIVE = "site.tar.xz"
MANIFEST = "MANIFEST.json"
# CUTLASS's headers serve TVM's CUTLASS offload, which a build from this repo never uses.
SKIPPED = ("tvm/3rdparty/cutlass/", "__pycache__/")
# The wheels pip may pick for a manylinux x86_64 machine (pip matches each tag exactly).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")


class BundleError(Exception):
    """A bundle that cannot be made or installed; the message is the one line the user sees."""


def companions() -> list[str]:
    """The requirements pip downloads for the other Python, at this environment's versions."""
    try:
        return [f"apache-tvm-ffi=={metadata.version('apache-tvm-ffi')}", f"xgboost-cpu=={metadata.version('xgboost')}"]
    except metadata.PackageNotFoundError as exc:
        raise BundleError(f"{exc.name} is not installed here: pack from the project's environment (make)") from None


def pack(out: Path, python: str, part_mib: float = 48, preset: int = 6, distribution: str = "apache-tvm",
         wheels: list[str] | None = None) -> dict:
    """Write the bundle to ``out`` (built beside it, then renamed: an interrupted pack leaves no half
    bundle) in parts of at most ``part_mib``, for uploads with a size limit; returns its manifest.
    ``wheels`` defaults to :func:`companions`."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "wheels").mkdir(parents=True)
    requirements = companions() if wheels is None else wheels
    try:
        download_wheels(requirements, python, staging / "wheels")
    except BundleError:
        shutil.rmtree(staging)
        raise
    with lzma.open(staging / ARCHIVE, "wb", format=lzma.FORMAT_XZ,
                   filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": preset}]) as xz, \
            tarfile.open(fileobj=xz, mode="w") as tar:
        add_distribution(tar, distribution)
        for wheel in sorted((staging / "wheels").glob("*.whl")):
            add_wheel(tar, wheel)
    shutil.rmtree(staging / "wheels")
    data = (staging / ARCHIVE).read_bytes()
    manifest = {"python": python, "packages": [f"{distribution}=={metadata.version(distribution)}", *requirements],
                "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest["parts"] = split(staging / ARCHIVE, data, int(part_mib * 2**20))
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return manifest


def add_distribution(tar: tarfile.TarFile, name: str) -> None:
    """An installed distribution's files, its dist-info too (so ``importlib.metadata`` sees it there)."""
    dist = metadata.distribution(name)
    for file in dist.files or []:
        posix = file.as_posix()
        if not any(part in posix for part in SKIPPED) and not posix.startswith(".."):
            tar.add(dist.locate_file(file), arcname=posix)


def add_wheel(tar: tarfile.TarFile, wheel: Path) -> None:
    """A wheel's files as installed: a wheel is a zip of the site-packages tree (these have no .data)."""
    with zipfile.ZipFile(wheel) as zf:
        for entry in zf.infolist():
            if entry.is_dir():
                continue
            info = tarfile.TarInfo(entry.filename)
            info.size = entry.file_size
            info.mode = (entry.external_attr >> 16) & 0o777 or 0o644
            with zf.open(entry) as data:
                tar.addfile(info, data)


def split(path: Path, data: bytes, part_bytes: int) -> list[str]:
    """Replace ``path`` (holding ``data``) by ``path.00``, ``path.01``, ... of at most ``part_bytes``;
    returns their names."""
    names = []
    for index, start in enumerate(range(0, len(data), part_bytes)):
        names.append(f"{path.name}.{index:02d}")
        (path.parent / names[-1]).write_bytes(data[start:start + part_bytes])
    path.unlink()
    return names


def download_wheels(requirements: list[str], python: str, folder: Path) -> None:
    if not requirements:
        return
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", *platforms, "--dest", str(folder), *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or ["pip download failed"]
        raise BundleError(f"{lines[-1]} (for Python {python})")  # the last: the first may list yanked versions


def install(bundle: Path, into: Path) -> dict:
    """Unpack a bundle into ``into`` (a folder for PYTHONPATH) after checking it against its manifest:
    an upload cut short fails here, by name, not at ``import tvm``."""
    try:
        manifest = json.loads((bundle / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{bundle} is not a bundle: {exc}") from None
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python"] != here:
        raise BundleError(f"the bundle was packed for Python {manifest['python']}, this is Python {here}")
    parts = [bundle / name for name in manifest["parts"]]
    missing = [str(part) for part in parts if not part.exists()]
    if missing:
        raise BundleError(f"{', '.join(missing)} missing: upload every part of the bundle")
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as archive:
        for part in parts:  # joined and hashed in one pass
            data = part.read_bytes()
            digest.update(data)
            archive.write(data)
        if digest.hexdigest() != manifest["sha256"]:
            raise BundleError(f"{bundle}: the parts are not the ones that were packed (an upload cut short?)")
        archive.seek(0)
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=archive, mode="r:xz") as tar:
            tar.extractall(into, filter="data")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m targets.offline", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    p_pack = sub.add_parser("pack", help="write a bundle of this environment's TVM for another machine")
    p_pack.add_argument("--python", required=True, help="the other machine's Python, as 3.12")
    p_pack.add_argument("--out", type=Path, default=Path(".offline"), help="the bundle folder (default: .offline)")
    p_pack.add_argument("--part-mib", type=float, default=48, help="the largest part, for upload limits (default: 48)")
    p_install = sub.add_parser("install", help="unpack a bundle (standard library only)")
    p_install.add_argument("bundle", type=Path)
    p_install.add_argument("into", type=Path, help="a folder to put on PYTHONPATH")
    args = p.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.out, args.python, args.part_mib)
            print(f"{args.out}: {', '.join(manifest['packages'])} for Python {args.python}, "
                  f"{manifest['bytes'] / 2**20:.1f} MiB in {len(manifest['parts'])} parts")
        else:
            manifest = install(args.bundle, args.into)
            print(f"{args.into}: {', '.join(manifest['packages'])}; export PYTHONPATH={args.into}:$PWD")
    except (BundleError, OSError) as exc:
        print(f"offline: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
