"""Emulated boards: an aarch64 userland under qemu-user that runs a real TVM RPC server."""
