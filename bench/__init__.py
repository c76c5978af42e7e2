"""Measurement and reporting: runtimes, the pytest-benchmark harness, result tables, the CLI."""
