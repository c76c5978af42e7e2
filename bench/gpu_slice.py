"""One GPU window's whole job in one command: a tuning slice, then the benchmark, then what to commit.

GPU time comes in windows of a few minutes (one command of at most 10). This script spends one: it grows
the target's database with ``mnv2bench tune --minutes`` (resuming from what earlier slices saved; every
untuned kernel's first visit before any kernel's second, then the time-share rule), prunes it to the 8
records per workload the repository ships (so that the results name the database that gets committed),
then runs ``mnv2bench run`` with TVM against PyTorch eager and PyTorch with CUDA graphs at batch 1 (and,
with ``--batch-rows``, larger batches), and lists the files to commit. Each step is the ``mnv2bench``
command it prints, run as such. On a CPU target it runs the same steps, which is how CI tests it without
a GPU.

    python bench/gpu_slice.py --target h200 --minutes 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from models.errors import UserError
from schedules.database import SHIPPED_PER_WORKLOAD


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", default="h200", help="preset or triple (default: h200)")
    p.add_argument("--models", default="headline", help="comma-separated names or groups (default: headline)")
    p.add_argument("--minutes", type=float, default=5.0, help="tuning time of this slice (default: 5)")
    p.add_argument("--trials", type=int, default=4000,
                   help="the tuning budget the slices work towards, shared by time share (default: 4000)")
    p.add_argument("--max-tasks", type=int, default=None, help="tune only the N most expensive tasks")
    p.add_argument("--runtimes", default=None,
                   help="benchmarked runtimes (default: the harness's; on a GPU tvm,torch,torch-cudagraph)")
    p.add_argument("--batch-rows", type=int, nargs="*", default=[32],
                   help="batch sizes benchmarked after batch 1, one model only (default: 32)")
    p.add_argument("--batch-model", default="mobilenet_v2_1.0_224", help="the model of the batch rows")
    p.add_argument("--schedules", type=Path, default=None, help="schedules folder (default: the project's)")
    p.add_argument("--results", type=Path, default=None, help="results folder (default: the project's)")
    p.add_argument("--rounds", type=int, default=200,
                   help="timed inferences per case (default: 200; each costs milliseconds on a GPU)")
    p.add_argument("--no-tune", action="store_true", help="only benchmark (a window too short to tune in)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from targets.registry import resolve_target

    try:
        spec = resolve_target(args.target)
    except UserError as exc:
        print(f"gpu_slice: error: {exc}", file=sys.stderr)
        return 2
    runtimes = ["--runtimes", args.runtimes] if args.runtimes else []
    schedules = ["--schedules", str(args.schedules)] if args.schedules else []
    results = ["--results", str(args.results)] if args.results else []
    steps = []
    if not args.no_tune:
        steps.append(("tune", ["tune", "--target", args.target, "--models", *args.models.split(","),
                               "--trials", str(args.trials), "--minutes", str(args.minutes), *schedules,
                               *(["--max-tasks", str(args.max_tasks)] if args.max_tasks else [])]))
        steps.append(("prune", ["tune", "--target", args.target, "--prune", str(SHIPPED_PER_WORKLOAD), *schedules]))
    bench_extra = ["--", f"--benchmark-min-rounds={args.rounds}",
                   *([f"--schedules={args.schedules}"] if args.schedules else [])]
    steps.append(("benchmark, batch 1", ["run", "--target", args.target, "--models", args.models,
                                         *runtimes, *results, *bench_extra]))
    for batch in args.batch_rows:
        steps.append((f"benchmark, batch {batch}", ["run", "--target", args.target, "--models", args.batch_model,
                                                    *runtimes, "--batch", str(batch), *results,
                                                    *bench_extra]))
    failed = [name for name, argv_ in steps if _step(name, argv_) != 0]
    print(f"\ngpu_slice: done{'; failed: ' + ', '.join(failed) if failed else ''}. Commit: "
          f"{(args.schedules or Path('schedules')) / spec.key}/ and {args.results or Path('results')}/")
    return 1 if failed else 0


def _step(name: str, argv: list[str]) -> int:
    """One mnv2bench command in a process of its own (the database's metadata records the command as
    printed here); its exit code."""
    print(f"\n=== {name}: mnv2bench {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "bench", *argv], check=False).returncode
    print(f"=== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
