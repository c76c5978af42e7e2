"""``mnv2bench``: the command line. Each subcommand is a thin layer over the library.

Bad input (a ``UserError`` from any layer) prints one line and exits with code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from models.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_third_party_logs()
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"mnv2bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnv2bench: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnv2bench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_models_parser, _export_parser, _compile_parser, _tune_parser, _schedules_parser, _run_parser,
                _profile_parser, _compare_parser, _targets_parser):
        add(sub)
    return parser


def version() -> str:
    """``mnv2bench 0.1.0 (TVM 0.27.0)``, from the installed packages' metadata: no TVM import, so it is fast."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    def of(*packages: str) -> str:
        for package in packages:
            try:
                return installed(package)
            except PackageNotFoundError:
                pass
        return "not installed"

    return f"mnv2bench {of('mnv2bench')} (TVM {of('apache-tvm', 'tvm')})"


def _subcommand(sub, name: str, summary: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does and how it is used, examples included."""
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    return sub.add_parser(name, help=summary, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _models_parser(sub) -> None:
    p = _subcommand(sub, "models", "the registered models, their complexity and the paper's figures",
                    "List the registered models: task, parameters and multiply-adds counted here, beside the\n"
                    "paper's figures (accuracy, MAdds, Pixel 1 latency).",
                    ["mnv2bench models headline", "mnv2bench models 'mobilenet_v2_1.0_*' --json"])
    p.add_argument("names", nargs="*", default=["all"], help="names, patterns or groups (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)


def _export_parser(sub) -> None:
    p = _subcommand(sub, "export", "export a model to ONNX (checked against PyTorch in ONNX Runtime)",
                    "Export a registered model to ONNX. The file is checked with the ONNX checker and its\n"
                    "outputs in ONNX Runtime against PyTorch's.",
                    ["mnv2bench export mobilenet_v2_1.0_224 -o mnv2.onnx",
                     "mnv2bench export ssdlite_mobilenet_v2_320 -o ssd.onnx --weights ssd.pth"])
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, type=Path)
    _weights_option(p)
    _batch_option(p)
    p.set_defaults(func=cmd_export)


def _compile_parser(sub) -> None:
    p = _subcommand(sub, "compile", "compile a model (or an ONNX file) into a deployable TVM library",
                    "Compile a registered model or an ONNX file with TVM for a target: each kernel takes its tuned\n"
                    "schedule, else one transferred from a tuned kernel of its kind (any database of the same\n"
                    "architecture), else a parallel, vectorised default. Checks the library against ONNX Runtime.",
                    ["mnv2bench compile mobilenet_v2_1.0_224 -o mnv2.so",
                     "mnv2bench compile model.onnx --measure-transfers -o model.so",
                     "mnv2bench compile model.onnx --target rpi4 -o model-rpi4.so"])
    p.add_argument("model", help="a registered model name or a path to an .onnx file")
    p.add_argument("-o", "--output", required=True, type=Path)
    _target_options(p)
    _weights_option(p)
    _schedule_options(p)
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--measure-transfers", action="store_true",
                   help="time several transferred schedules per untuned kernel where the library runs (here, or "
                        "the --rpc-tracker board) and keep the fastest; a model of 34 kernels takes a few minutes")
    _batch_option(p)
    p.add_argument("--no-cuda-graph", action="store_true",
                   help="GPU: launch every kernel from the VM instead of replaying CUDA graphs")
    _rpc_options(p, boards=False)
    p.set_defaults(func=cmd_compile)


def _tune_parser(sub) -> None:
    p = _subcommand(sub, "tune", "tune the models' kernels with MetaSchedule for a target",
                    "Tune the models' kernels with MetaSchedule and add the best schedules to the target's\n"
                    "database in schedules/. Resumable: trials already in the database count.",
                    ["mnv2bench tune --models headline --trials-per-task 256",
                     "mnv2bench tune --target rpi4 --rpc-tracker 127.0.0.1:9190 --trials 2000"])
    _target_options(p)
    # No default here, so that --remeasure/--prune can tell "these models' kernels" from "every kernel".
    _models_option(p, "names or groups (default: headline; with --remeasure/--prune: every workload)", default=None)
    p.add_argument("--trials-per-task", type=int, default=None, help="trials each task should reach")
    p.add_argument("--trials", type=int, default=None,
                   help="total budget, shared by each task's share of its models' time")
    p.add_argument("--max-tasks", type=int, default=None, help="tune only the N most expensive tasks")
    p.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                   help="tune (or re-time, prune) only kernels of these kinds: depthwise, pointwise, conv, dense, "
                        "other")
    p.add_argument("--population", type=int, default=None, help="evolutionary search population (default: 128)")
    p.add_argument("--trials-per-batch", type=int, default=None,
                   help="candidates per search round, built and timed together (default: 16; 64 on a GPU)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop within this many minutes, after the last batch that fits (a slice: re-run to resume)")
    p.add_argument("--no-transfer", action="store_true",
                   help="start untuned tasks from random schedules, not from the schedules of tuned kernels of "
                        "their kind (the default measures those first and seeds the search with them)")
    p.add_argument("--remeasure", type=int, default=None, metavar="K",
                   help="instead of tuning: time the K best records of every workload (or of --models' kernels "
                        "of --kinds) again here, keep only those (what a shipped database holds)")
    p.add_argument("--prune", type=int, default=None, metavar="K",
                   help="instead of tuning: keep the K best records of every workload as they were timed (no "
                        "re-timing: for a database whose records all come from this machine's runner)")
    _rpc_options(p)
    _schedule_options(p)
    p.set_defaults(func=cmd_tune)


def _schedules_parser(sub) -> None:
    p = _subcommand(sub, "schedules", "what is tuned, per target: tasks by kind, best latencies, coverage",
                    "Report the schedule databases: tasks by kernel kind, trials, best latencies, and how\n"
                    "many of each model's kernels they cover.",
                    ["mnv2bench schedules", "mnv2bench schedules host --models all --json"])
    p.add_argument("target", nargs="?", default=None, help="a target key, preset or triple (default: all)")
    _models_option(p, "models to report coverage for (default: headline)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--schedules", type=Path, default=None, help="schedules folder (default: the project's)")
    p.set_defaults(func=cmd_schedules)


def _run_parser(sub) -> None:
    p = _subcommand(sub, "run", "the main job: benchmark, save into results/, print the comparison",
                    "Benchmark the models on this machine (pytest bench/ --benchmark-only), merge the results\n"
                    "into results/<hardware>.json, rewrite results/README.md and print the comparison.",
                    ["mnv2bench run", "mnv2bench run --models mobilenet_v2_1.0_224 --threads 2",
                     "mnv2bench run --runtimes tvm,onnxruntime,torch -- --benchmark-min-rounds=20"])
    _models_option(p, "names or groups (default: headline)")
    p.add_argument("--runtimes", default=None, help="comma-separated (default: tvm and every CPU peer installed "
                   "here: onnxruntime, openvino, executorch; tvm,torch,torch-cudagraph on a GPU)")
    p.add_argument("--target", default="host")
    p.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: all cores)")
    p.add_argument("--results", type=Path, default=None, help="results folder (default: the project's results/)")
    p.add_argument("--no-cache", action="store_true", help="compile every TVM library again")
    p.add_argument("--no-interleave", action="store_true", help="time each runtime on its own, one after another "
                   "(default: a model's runtimes in alternating blocks, steadier on a noisy machine)")
    _batch_option(p)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest / pytest-benchmark options")
    p.set_defaults(func=cmd_run)


def _profile_parser(sub) -> None:
    p = _subcommand(sub, "profile", "where one inference's time goes: TVM's kernels beside ONNX Runtime's",
                    "Profile one model on this machine: TVM's time per kernel kind and its slowest kernels,\n"
                    "beside ONNX Runtime's own per-node profile.",
                    ["mnv2bench profile mobilenet_v2_1.0_224", "mnv2bench profile ssdlite_mobilenet_v2_320 --untuned"])
    p.add_argument("model", help="a registered model name or a path to an .onnx file")
    p.add_argument("--threads", type=int, default=None, help="threads for both runtimes (default: all cores)")
    p.add_argument("--runs", type=int, default=30, help="inferences profiled (medians)")
    p.add_argument("--top", type=int, default=15, help="how many of TVM's slowest kernels to list")
    p.add_argument("--untuned", action="store_true", help="profile TVM without the schedules")
    p.add_argument("--schedules", type=Path, default=None, help="schedules folder (default: the project's)")
    p.set_defaults(func=cmd_profile)


def _compare_parser(sub) -> None:
    p = _subcommand(sub, "compare", "per-task latency tables (and a plot) across machines and runtimes",
                    "Tabulate result files: per task, median ms per machine x runtime, TVM cells with their\n"
                    "tuned share; then TVM/ORT (time over time, lower is better). Only each machine's newest\n"
                    "schedules unless --all-schedules. Without files and filters it reads results/*.json and\n"
                    "rewrites results/README.md and its plot (tracked files).",
                    ["mnv2bench compare --models headline",
                     "mnv2bench compare --machines 'x86_64-*' --runtimes tvm,onnxruntime --all-schedules",
                     "mnv2bench compare run.json results/nvidia-h200.json --format csv"])
    p.add_argument("files", nargs="*", type=Path, help="result files (default: results/*.json; then, without "
                   "filters, results/README.md is rewritten)")
    p.add_argument("--models", type=_comma_list, default=(),
                   help="comma-separated names, groups (headline, classification, ...) or globs; models found "
                        "only in the result files count too (default: all)")
    p.add_argument("--runtimes", type=_comma_list, default=(), help="comma-separated, e.g. tvm,onnxruntime "
                   "(default: all)")
    p.add_argument("--machines", type=_comma_list, default=(), help="comma-separated hardware names or globs, "
                   "e.g. 'x86_64-*' (default: all)")
    p.add_argument("--all-schedules", action="store_true",
                   help="also TVM measurements made with a machine's older schedule databases")
    p.add_argument("--statistic", choices=["median", "p90", "p99", "memory"], default="median",
                   help="what the tables and ratios show: a latency statistic, or the peak memory of one inference "
                        "(default: median)")
    p.add_argument("--format", choices=["markdown", "csv", "json"], default="markdown",
                   help="markdown: the tables per task; csv, json: one table with every column")
    p.add_argument("--plot", type=Path, default=None, help="write the latency-vs-MAdds plot here (PNG)")
    p.set_defaults(func=cmd_compare)


def _targets_parser(sub) -> None:
    p = _subcommand(sub, "targets", "the known targets and hardware presets",
                    "List the target presets (boards, GPUs) and triples that --target accepts.",
                    ["mnv2bench targets", "mnv2bench targets --json"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_targets)


def _batch_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=1, help="images per inference (default: 1, as in the paper)")


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class _ModelNames(argparse.Action):
    """Each value split at commas, so that ``--models a b`` and ``--models a,b`` mean the same."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, [name for value in values for name in _comma_list(value)])


def _models_option(p: argparse.ArgumentParser, what: str, default: tuple[str, ...] | None = ("headline",)) -> None:
    p.add_argument("--models", nargs="+", action=_ModelNames, default=default and list(default),
                   help=f"{what}; spaces or commas between them")


def _weights_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path, default=None, help="a PyTorch state-dict file (default: seeded random)")


def _target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="host", help="preset or triple (default: this host); see `mnv2bench targets`")
    p.add_argument("--mcpu", default=None, help="CPU model for LLVM, e.g. cortex-a72")
    p.add_argument("--arch", default=None, help="GPU architecture, e.g. sm_90")
    p.add_argument("--num-cores", type=int, default=None, help="cores the generated code may use")


def _schedule_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedules", type=Path, default=None, help="schedules folder (default: the project's)")
    p.add_argument("--force-schedules", action="store_true", help="use a database tuned for another target")


def _rpc_options(p: argparse.ArgumentParser, boards: bool = True) -> None:
    p.add_argument("--rpc-tracker", default=None, metavar="HOST:PORT", help="TVM RPC tracker of remote boards")
    p.add_argument("--rpc-key", default=None, help="the key the boards registered under (default: the preset's)")
    if boards:
        p.add_argument("--rpc-boards", type=int, default=None,
                       help="measure on this many boards in parallel (default: all free under the key)")


def _rpc(args, spec) -> tuple[str, str] | None:
    """(tracker, key) from --rpc-tracker / --rpc-key, checked; None without a tracker."""
    if args.rpc_tracker is None:
        if args.rpc_key is not None:
            raise UserError("--rpc-key needs --rpc-tracker HOST:PORT")
        return None
    from targets.rpc import parse_tracker

    parse_tracker(args.rpc_tracker)
    key = args.rpc_key or spec.rpc_key
    if not key:
        raise UserError(f"give --rpc-key: the target {spec.name!r} has no default key")
    return args.rpc_tracker, key


def _spec(args):
    from targets.registry import resolve_target

    return resolve_target(args.target, mcpu=args.mcpu, arch=args.arch, num_cores=getattr(args, "num_cores", None))


def _quiet_third_party_logs() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# --- subcommands ------------------------------------------------------------------------------------
def cmd_models(args) -> int:
    from models.complexity import complexity_table
    from models.registry import resolve_names

    table = complexity_table(resolve_names(args.names))
    if args.json:
        print(table.to_json(orient="records", indent=2))
    else:
        shown = table.assign(params_m=table.params / 1e6, madds_m=table.madds / 1e6)[
            ["name", "task", "params_m", "paper_params_m", "params_diff_pct", "madds_m", "paper_madds_m",
             "madds_diff_pct", "paper_pixel1_ms", "paper_accuracy", "paper_metric"]
        ]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))
    return 0


def cmd_export(args) -> int:
    from models.export import export_model
    from models.registry import get_spec

    get_spec(args.model).with_batch(args.batch)
    path = export_model(args.model, args.weights, out=args.output, batch=args.batch)
    print(f"wrote {path} (checked: onnx checker, ONNX Runtime vs PyTorch)")
    return 0


def cmd_compile(args) -> int:
    from bench.build import compile_to_library

    spec = _spec(args)
    report = compile_to_library(
        args.model, spec, args.output, weights=args.weights, schedules=args.schedules,
        force=args.force_schedules, check=not args.no_check, rpc=_rpc(args, spec),
        cuda_graph=not args.no_cuda_graph, batch=args.batch, measure_transfers=args.measure_transfers,
    )
    print(report)
    return 0


def cmd_tune(args) -> int:
    from models.registry import resolve_names
    from schedules.search.measure import RPCOptions
    from schedules.search.tune import SearchOptions, TuningMeasuredNothing, tune

    if args.remeasure is not None or args.prune is not None:
        return _remeasure(args)
    if args.trials_per_task is None and args.trials is None:
        raise UserError("give a budget: --trials-per-task N and/or --trials N")
    sizes = (args.trials_per_task, args.trials, args.max_tasks, args.population, args.trials_per_batch)
    if any(n is not None and n < 1 for n in sizes):
        raise UserError("--trials, --trials-per-task, --max-tasks, --population and --trials-per-batch "
                        "must be positive")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError("--minutes must be positive")
    _check_kinds(args.kinds)
    spec = _spec(args)
    rpc = _rpc(args, spec)
    if spec.is_gpu and rpc is None:
        from targets.registry import detect_gpu_arch

        if detect_gpu_arch() is None:
            raise UserError("tuning for a GPU measures on one: run this on a machine with an NVIDIA GPU, "
                            "or give --rpc-tracker/--rpc-key of one")
    names = resolve_names(args.models or ["headline"])
    tasks = _tuning_tasks(names, spec, args.kinds)[: args.max_tasks]
    if rpc is not None:
        from targets.rpc import free_boards

        boards = args.rpc_boards or max(free_boards(*rpc), 1)
        rpc = RPCOptions(*rpc, boards=boards)
        print(f"measuring on {boards} board(s) under key {rpc.key!r} at {rpc.tracker}", flush=True)
    search = SearchOptions.for_target(spec, population_size=args.population, trials_per_batch=args.trials_per_batch)
    try:
        summary = tune(
            spec, tasks, names, trials_per_task=args.trials_per_task, total_trials=args.trials,
            root=args.schedules, rpc=rpc, search=search,
            force=args.force_schedules, transfer=not args.no_transfer, minutes=args.minutes,
        )
    except TuningMeasuredNothing as exc:
        print(f"mnv2bench: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def _check_kinds(kinds: list[str] | None) -> None:
    from schedules.tasks import KINDS

    unknown = sorted(set(kinds or ()) - set(KINDS))
    if unknown:
        raise UserError(f"unknown kernel kind {', '.join(unknown)}; the kinds are {', '.join(KINDS)}")


def _tuning_tasks(names: list[str], spec, kinds: list[str] | None) -> list:
    """The distinct kernels of ``names`` for ``spec`` (of ``kinds`` only, if given), most expensive first."""
    from schedules.pipeline.compile import model_tasks
    from schedules.search.tune import merge_tasks

    print(f"extracting tasks of {len(names)} model(s) for {spec.key} ...", flush=True)
    tasks = merge_tasks({name: model_tasks(name, spec) for name in names})
    return [t for t in tasks if kinds is None or t.task.kind in kinds]


def _remeasure(args) -> int:
    from tvm_ffi import structural_hash

    from models.registry import resolve_names
    from schedules.search.measure import RPCOptions
    from schedules.search.remeasure import remeasure

    if args.remeasure is not None and args.prune is not None:
        raise UserError("give --remeasure K (re-time, then keep K) or --prune K (keep K as timed), not both")
    _check_kinds(args.kinds)
    spec = _spec(args)
    rpc = _rpc(args, spec)
    workloads = None
    if args.models is not None or args.kinds is not None:
        tasks = _tuning_tasks(resolve_names(args.models or ["all"]), spec, args.kinds)
        workloads = {str(structural_hash(t.task.mod)) for t in tasks}
    retime = args.prune is None
    summary = remeasure(spec, args.remeasure if retime else args.prune, root=args.schedules,
                        rpc=rpc and RPCOptions(*rpc), force=args.force_schedules, retime=retime,
                        workloads=workloads)
    print(json.dumps(summary))
    return 0


def cmd_profile(args) -> int:
    from bench.runtimes import check_threads, pin_threads

    threads = check_threads(args.threads) or os.cpu_count()
    if args.runs < 1 or args.top < 1:
        raise UserError("--runs and --top must be positive")
    pin_threads(threads)  # before TVM's thread pool exists
    from bench.kernel_profile import format_profile, profile_model
    from targets.registry import resolve_target

    kinds, kernels, schedules = profile_model(args.model, resolve_target("host"), threads, args.runs,
                                              args.schedules, args.untuned)
    print(format_profile(args.model, kinds, kernels, schedules, threads, args.runs, args.top))
    return 0


def cmd_schedules(args) -> int:
    from schedules.report import format_report, schedules_report

    report = schedules_report(args.target, args.models, root=args.schedules)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


# Seconds of timing per model x runtime in `mnv2bench run` (pytest-benchmark's default is 1): twice the
# samples in the alternating blocks, for steadier ratios (bench/README.md).
RUN_SECONDS = 2.0


def cmd_run(args) -> int:
    """``pytest bench/ --benchmark-only`` with our options, merged into results/, then the table."""
    import tempfile

    import pytest

    from bench.compare import RESULTS_DIR, compare
    from bench.results import merge_run
    from bench.runtimes import check_threads
    from bench.summary import run_summary
    from models.registry import resolve_names

    check_threads(args.threads)
    models = resolve_names(args.models)  # an unknown name is a one-line error here, not a pytest usage error

    results_dir = args.results or RESULTS_DIR
    print(f"mnv2bench: this run will update {results_dir}/<hardware>.json and {results_dir}/README.md "
          "(--results DIR to write elsewhere)", flush=True)
    extra = [a for a in args.pytest_args if a != "--"] + (["--no-cache"] if args.no_cache else [])
    extra += ["--no-interleave"] if args.no_interleave else []
    if not any(a.startswith("--benchmark-max-time") for a in extra):  # the published runs: 2 s per case
        extra.append(f"--benchmark-max-time={RUN_SECONDS}")
    extra += [f"--batch={args.batch}"] if args.batch != 1 else []
    extra += [f"--threads={args.threads}"] if args.threads else []
    runtimes = [f"--runtimes={args.runtimes}"] if args.runtimes else []  # else the harness's default
    with tempfile.TemporaryDirectory(prefix="mnv2bench-run-") as tmp:
        run_json = Path(tmp) / "run.json"
        pytest_args = [
            str(Path(__file__).parent), "--benchmark-only", f"--benchmark-json={run_json}",
            f"--models={','.join(models)}", *runtimes, f"--target={args.target}",
            "-p", "no:cacheprovider", "-q", "--benchmark-columns=median,iqr,rounds", *extra,
        ]
        print("pytest " + " ".join(pytest_args), flush=True)
        code = pytest.main(pytest_args)
        if not run_json.exists():
            raise UserError(f"the benchmark produced no results (pytest exit code {int(code)})")
        saved = merge_run(run_json, results_dir)
        summary = run_summary(run_json)
    compare(None, results_dir=results_dir)  # rewrites results/README.md from every machine's file
    print(f"\nsaved {saved}\n\n{summary}\n\nEvery machine and model: mnv2bench compare --models headline "
          f"(or {results_dir}/README.md)")
    return 0 if code == 0 else 1


def cmd_compare(args) -> int:
    from bench.compare import compare
    from bench.selection import Selection

    selection = Selection(args.models, args.runtimes, args.machines, args.all_schedules, args.statistic)
    print(compare(args.files or None, fmt=args.format, plot=args.plot, selection=selection))
    return 0


def cmd_targets(args) -> int:
    from targets.registry import targets_table

    table = targets_table()
    print(json.dumps(table.to_dict(orient="records"), indent=2) if args.json else table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
