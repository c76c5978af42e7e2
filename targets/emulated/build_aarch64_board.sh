#!/usr/bin/env bash
# Build an emulated aarch64 "board": an aarch64 userland that runs a real TVM RPC server
# under qemu-aarch64-static (user mode: no chroot, no binfmt, nothing mounted).
#
#   targets/emulated/build_aarch64_board.sh        # idempotent; skips work when READY exists
#
# Result, in ${MNV2BENCH_CACHE:-$HOME/.cache/mnv2bench}/aarch64-board:
#   rootfs/            Debian 12 arm64 python3.11 and its dependency packages (dpkg -x), plus
#                      the aarch64 wheels of apache-tvm (runtime only), apache-tvm-ffi, numpy, ...
#                      in rootfs/usr/lib/python3/dist-packages
#   bin/python3.11     x86 shell launcher: qemu-aarch64-static -L rootfs rootfs/usr/bin/python3.11
#   MANIFEST           the .deb packages and wheels it was built from
#   READY              written last; its absence means "not built"
#
# The build goes into a temporary sibling directory that is renamed at the end, so an interrupted
# build never leaves a half board that looks complete.
set -euo pipefail

TVM_VERSION="0.27.0.post1"
# 0.1.15.post2 segfaults when serialising (see shared NOTES); any 0.1.14 patch works over RPC.
TVM_FFI_VERSION="0.1.14.post1"
WHEELS=(
  "apache-tvm==${TVM_VERSION}"
  "apache-tvm-ffi==${TVM_FFI_VERSION}"
  numpy ml_dtypes typing_extensions cloudpickle psutil
)
# Arch-dependent packages that python3.11's dependency closure names but the board never runs:
# the package manager's own tools (and perl, reached through them).
SKIP_DEBS_RE='^(dpkg|tar|install-info|perl|perl-base|perl-modules-.*|libperl.*)$'

CACHE="${MNV2BENCH_CACHE:-$HOME/.cache/mnv2bench}"
BOARD="${CACHE}/aarch64-board"
PIP_PYTHON="${MNV2BENCH_PIP_PYTHON:-python3}"

say() { printf '[aarch64-board] %s\n' "$*"; }
die() { printf '[aarch64-board] error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "need root (or sudo) to install Debian packages"
  SUDO=(sudo)
fi
APT_ENV=(env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes)

# --- host packages ------------------------------------------------------------------------------
# qemu-user-static runs the board; the cross gcc links aarch64 libraries for it, and needs the
# arm64 C library's development files (crti.o, ...), which it only Recommends.
missing=()
for pkg in qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do
  dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("${pkg}")
done
if ((${#missing[@]})); then
  say "installing host packages: ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" "${APT_ENV[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ -f "${BOARD}/READY" ]]; then
  say "already built: ${BOARD}"
  exit 0
fi

# --- arm64 package lists ------------------------------------------------------------------------
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  say "dpkg --add-architecture arm64"
  "${SUDO[@]}" dpkg --add-architecture arm64
fi
if ! apt-cache show python3.11:arm64 >/dev/null 2>&1; then
  say "apt-get update (arm64 package lists)"
  "${SUDO[@]}" apt-get update -qq
fi
apt-cache show python3.11:arm64 >/dev/null 2>&1 || die "python3.11:arm64 not found after apt-get update"

# --- workspace ----------------------------------------------------------------------------------
mkdir -p "${CACHE}"
# Leftovers of builds killed more than an hour ago.
find "${CACHE}" -maxdepth 1 -name 'aarch64-board.tmp.*' -mmin +60 -exec rm -rf {} +
WORK="$(mktemp -d "${BOARD}.tmp.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT
ROOTFS="${WORK}/rootfs"
mkdir -p "${WORK}/debs" "${WORK}/wheels" "${ROOTFS}" "${WORK}/bin"
chmod 755 "${WORK}" "${WORK}/debs"

# --- Debian arm64 userland ----------------------------------------------------------------------
# python3.11's Depends/Pre-Depends closure (no Recommends), arm64 packages only (the Architecture:
# all ones it names, media-types/mime-support/readline-common, are data the board does not need),
# plus libstdc++6 for the TVM and numpy wheels.
mapfile -t debs < <(
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances python3.11:arm64 libstdc++6:arm64 \
    | grep -v '^[ <]' | grep ':arm64$' | sed 's/:arm64$//' | grep -Ev "${SKIP_DEBS_RE}" | sort -u
)
for required in python3.11 python3.11-minimal libpython3.11-stdlib libc6 libffi8 libssl3 \
  zlib1g libstdc++6 libgcc-s1; do
  printf '%s\n' "${debs[@]}" | grep -qx "${required}" || die "dependency list lacks ${required}"
done
((${#debs[@]} >= 25 && ${#debs[@]} <= 60)) \
  || die "unexpected dependency closure of ${#debs[@]} packages: ${debs[*]}"

say "downloading ${#debs[@]} arm64 packages"
(cd "${WORK}/debs" && apt-get download -qq -o APT::Sandbox::User=root "${debs[@]/%/:arm64}")
say "unpacking them"
for deb in "${WORK}"/debs/*.deb; do
  dpkg -x "${deb}" "${ROOTFS}"
done

# --- Python wheels ------------------------------------------------------------------------------
say "downloading aarch64 wheels: ${WHEELS[*]}"
"${PIP_PYTHON}" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  --platform manylinux_2_17_aarch64 --python-version 3.11 --implementation cp \
  --abi cp311 --abi abi3 --abi none -d "${WORK}/wheels" "${WHEELS[@]}" 2>&1 \
  | { grep -v "^WARNING: Location .* is ignored" || true; }
SITE="${ROOTFS}/usr/lib/python3/dist-packages"
mkdir -p "${SITE}"
say "unpacking wheels into ${SITE#"${WORK}/"}"
for whl in "${WORK}"/wheels/*.whl; do
  "${PIP_PYTHON}" -m zipfile -e "${whl}" "${SITE}"
done
# The board is the runtime end of an RPC link: drop the 240 MB compiler library. Without it,
# `import tvm` falls back to runtime-only mode (the launcher also sets TVM_USE_RUNTIME_LIB=1).
rm -f "${SITE}/tvm/lib/libtvm_compiler.so"

# --- launcher and sitecustomize -----------------------------------------------------------------
cat >"${WORK}/bin/python3.11" <<'EOF'
#!/bin/sh
# x86 launcher for the emulated aarch64 python3.11 (no binfmt needed).
BOARD=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
export TVM_USE_RUNTIME_LIB="${TVM_USE_RUNTIME_LIB:-1}"
exec qemu-aarch64-static -L "$BOARD/rootfs" "$BOARD/rootfs/usr/bin/python3.11" "$@"
EOF
chmod 755 "${WORK}/bin/python3.11"

# Debian's sitecustomize.py is an absolute symlink into /etc (which would resolve on the host):
# replace it with one that points sys.executable at the launcher, so that subprocesses that
# re-launch sys.executable (TVM's PopenWorker, multiprocessing spawn) run under qemu too.
rm -f "${ROOTFS}/usr/lib/python3.11/sitecustomize.py"
cat >"${ROOTFS}/usr/lib/python3.11/sitecustomize.py" <<'EOF'
# mnv2bench emulated aarch64 board: sys.executable -> the x86 qemu launcher.
import os as _os
import sys as _sys

# <board>/rootfs/usr/lib/python3.11/sitecustomize.py -> <board>/bin/python3.11
_launcher = _os.path.join(
    _os.path.dirname(_os.path.realpath(__file__)), "..", "..", "..", "..", "bin", "python3.11"
)
_launcher = _os.path.normpath(_launcher)
if _os.path.isfile(_launcher):
    _sys.executable = _launcher
del _os, _sys, _launcher
EOF

# --- smoke test ---------------------------------------------------------------------------------
# Precompile the Python sources on the host (same 3.11 bytecode), so that the emulated python
# does not spend its first start compiling them under qemu.
say "precompiling Python sources"
"${PIP_PYTHON}" -m compileall -q -j 0 -s "${WORK}" -p "${BOARD}" "${ROOTFS}/usr/lib/python3.11" "${SITE}" >/dev/null 2>&1 || true

say "smoke test: import tvm, numpy under qemu"
smoke="$("${WORK}/bin/python3.11" -c '
import platform, sys, numpy, tvm
from tvm import rpc
print(platform.machine(), sys.version.split()[0], tvm.__version__, numpy.__version__, sys.executable)
')" || die "the emulated python failed the smoke test"
read -r machine pyver tvmver npver exe <<<"${smoke}"
[[ "${machine}" == aarch64 ]] || die "smoke test ran on ${machine}, not aarch64"
[[ "$(realpath "${exe}")" == "$(realpath "${WORK}/bin/python3.11")" ]] || die "sitecustomize did not set sys.executable (${exe})"
say "python ${pyver} (aarch64), tvm ${tvmver}, numpy ${npver}"

{
  echo "# debs"
  (cd "${WORK}/debs" && ls -1 -- *.deb)
  echo "# wheels"
  (cd "${WORK}/wheels" && ls -1 -- *.whl)
} >"${WORK}/MANIFEST"
rm -rf "${WORK}/debs" "${WORK}/wheels"
date -u +%Y-%m-%dT%H:%M:%SZ >"${WORK}/READY"

# Replace a stale, incomplete board (no READY) and move the new one into place.
if [[ -d "${BOARD}" && ! -f "${BOARD}/READY" ]]; then
  rm -rf "${BOARD}"
fi
if mv -T "${WORK}" "${BOARD}" 2>/dev/null; then
  trap - EXIT
  say "ready: ${BOARD} ($(du -sh "${BOARD}" | cut -f1))"
elif [[ -f "${BOARD}/READY" ]]; then
  say "another build finished first; using ${BOARD}"
else
  die "could not move ${WORK} to ${BOARD}"
fi
