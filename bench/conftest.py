"""pytest options and hooks of the benchmark: ``pytest bench/ --benchmark-only [--models ...]``.

One benchmark per model x runtime, grouped by model. The standard pytest-benchmark options
(``--benchmark-json``, ``--benchmark-save``, ``--benchmark-min-rounds``, ``--benchmark-max-time``...)
work as usual; the JSON they write is standard pytest-benchmark output with our facts in
``extra_info`` and ``machine_info``.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from functools import partial

import pytest

from bench.harness import CPU_PEERS, RUNTIMES, Harness, Options, default_runtimes, gpu_name, hardware_name
from models.errors import UserError

OPTIONS = pytest.StashKey[Options]()  # the run's options, parsed once in pytest_configure


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mnv2bench", "mnv2bench benchmark")
    group.addoption("--target", default="host", help="preset or triple (default: this host)")
    group.addoption("--mcpu", default=None, help="CPU model for LLVM")
    group.addoption("--arch", default=None, help="GPU architecture, e.g. sm_90")
    group.addoption("--models", default="headline",
                    help="comma-separated names, patterns or groups: headline, classification, detection, "
                         "segmentation, all (default: headline)")
    group.addoption("--runtimes", default=None,
                    help=f"comma-separated, from {', '.join(RUNTIMES)} (default: tvm and every CPU peer installed "
                         "here; tvm,torch,torch-cudagraph on a GPU; tvm alone on an RPC board)")
    group.addoption("--threads", type=int, default=None, help="threads for every runtime (default: all cores)")
    group.addoption("--batch", type=int, default=1, help="images per inference (default: 1, as in the paper)")
    group.addoption("--weights", default=None, help="PyTorch state-dict file (default: seeded random weights)")
    group.addoption("--schedules", default=None, help="schedules folder (default: the project's)")
    group.addoption("--force-schedules", action="store_true", help="use a database tuned for another target")
    group.addoption("--no-cuda-graph", action="store_true",
                    help="GPU: launch every kernel from the VM instead of replaying CUDA graphs")
    group.addoption("--no-cache", action="store_true", help="compile every TVM library again (default: reuse "
                    "the cached one built from the same model, target, schedules and TVM)")
    group.addoption("--no-interleave", action="store_true",
                    help="time each runtime on its own, one after another (default on this host: a model's "
                         "runtimes in alternating blocks, so that a noisy machine's drift hits them alike)")
    group.addoption("--rpc-tracker", default=None, metavar="HOST:PORT", help="TVM RPC tracker of remote boards")
    group.addoption("--rpc-key", default=None, help="key the remote boards registered under (default: the preset's)")
    group.addoption("--emulated-board", action="store_true",
                    help="the RPC board is emulated (QEMU): results are labelled emulated and never published")


def _options(config: pytest.Config) -> Options:
    from pathlib import Path

    from bench.runtimes import check_threads, pin_threads
    from models.registry import resolve_names
    from targets.registry import resolve_target

    given = config.getoption("runtimes")
    runtimes = [r.strip() for r in given.split(",") if r.strip()] if given else []
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise pytest.UsageError(f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")
    try:
        threads = check_threads(config.getoption("threads")) or os.cpu_count() or 1
    except UserError as exc:
        raise pytest.UsageError(str(exc)) from None
    pin_threads(threads)
    try:
        target = resolve_target(config.getoption("target"), config.getoption("mcpu"), config.getoption("arch"))
        models = resolve_names([m.strip() for m in config.getoption("models").split(",") if m.strip()])
        if config.getoption("batch") < 1:
            raise UserError(f"--batch must be at least 1 (got {config.getoption('batch')})")
    except UserError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("rpc_tracker"):
        try:
            from targets.rpc import parse_tracker

            parse_tracker(config.getoption("rpc_tracker"))
        except UserError as exc:
            raise pytest.UsageError(str(exc)) from None
        host_only = [r for r in runtimes if r in (*CPU_PEERS, "torch")]
        if host_only:
            raise pytest.UsageError(f"with --rpc-tracker only TVM runs on the board; drop {', '.join(host_only)} "
                                    "from --runtimes")
    runtimes = runtimes or default_runtimes(target, remote=bool(config.getoption("rpc_tracker")))
    weights = config.getoption("weights")
    schedules = config.getoption("schedules")
    return Options(
        target=target, models=models, runtimes=runtimes, threads=threads,
        weights=Path(weights) if weights else None, schedules=Path(schedules) if schedules else None,
        force_schedules=config.getoption("force_schedules"),
        no_cache=config.getoption("no_cache"),
        cuda_graph=not config.getoption("no_cuda_graph"),
        rpc_tracker=config.getoption("rpc_tracker"), rpc_key=config.getoption("rpc_key"),
        emulated=config.getoption("emulated_board"),
        device_rounds=config.getoption("benchmark_min_rounds", 5),
        interleave=not config.getoption("no_interleave"),
        max_time=float(config.getoption("benchmark_max_time", 1.0)),
        batch=config.getoption("batch"),
    )


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "models"):
        config.stash[OPTIONS] = _options(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"model", "runtime"} <= set(metafunc.fixturenames):
        options = metafunc.config.stash[OPTIONS]
        cases = [(m, r) for m in options.models for r in options.runtimes]
        metafunc.parametrize(("model", "runtime"), cases, ids=[f"{m}-{r}" for m, r in cases])


@pytest.fixture(scope="session")
def harness(request: pytest.FixtureRequest) -> Harness:
    cases = [(params["model"], params["runtime"]) for params in map(_case_params, request.session.items) if params]
    return Harness(request.config.stash[OPTIONS], cases)


def _case_params(item: pytest.Item) -> dict:
    """The model and runtime of a benchmark case, or {} for any other test."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return params if {"model", "runtime"} <= set(params) else {}


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    from targets.registry import cpu_model

    options = config.stash[OPTIONS]
    remote = options.rpc_tracker is not None
    machine_info.update(
        hardware=hardware_name(options.target, remote=remote, emulated=options.emulated),
        host_of_rpc_client=remote,
        cpu_model=cpu_model(),
        cores=os.cpu_count(),
        gpu=gpu_name(),
        target_key=options.target.key,
    )


@pytest.fixture
def progress(request: pytest.FixtureRequest):
    """``progress(text)``: one line on the terminal now, even while pytest captures the test's output."""
    return partial(write_progress, request.config)


def write_progress(config: pytest.Config, text: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        reporter.write_line(text)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before each case: which model on which runtime, and what is about to happen to it."""
    params = _case_params(item)
    if params:
        number = item.session.items.index(item) + 1
        write_progress(item.config, f"[{number}/{len(item.session.items)}] {params['model']} on {params['runtime']}: "
                                    "build, check against PyTorch, time ...")


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """A benchmark case that passed has written its own line (``progress``): no dot after it."""
    if report.when == "call" and report.passed and "test_latency" in report.nodeid:
        return "passed", "", "PASSED"
    return None
