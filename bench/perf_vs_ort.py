"""Performance goal: tuned TVM against ONNX Runtime, same machine, same run, same threads.

    python bench/perf_vs_ort.py [--models headline|all|NAME,...|FILE.onnx,...] [--threads N] [--repeat 15]

For each model, the median latency of the tuned TVM library (TVM's own ``time_evaluator``) and of
ONNX Runtime (default optimisations, a warm loop), measured in alternating blocks so that drift on a
noisy machine hits both alike. Prints TVM/ORT per model; the last line is ``worst TVM/ORT ratio: X.XX``.
The bar is 1.0 (TVM at least as fast as ONNX Runtime); run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="headline",
                        help="comma-separated names, groups, globs (all: the paper's 27) or paths to ONNX files")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--mcpu", default=None, help="compile TVM for this CPU instead of the host's (e.g. znver3)")
    parser.add_argument("--repeat", type=int, default=15, help="alternating measurement blocks per runtime")
    parser.add_argument("--min-block-s", type=float, default=0.2, help="minimum seconds per block")
    parser.add_argument("--untuned", action="store_true", help="measure TVM without the schedules (baseline)")
    parser.add_argument("--no-cache", action="store_true", help="compile the libraries again (default: reuse the "
                        "cached ones built from the same model, target, schedules and TVM)")
    parser.add_argument("--schedules", type=Path, default=None,
                        help="schedules folder (default: the project's); e.g. an older checkout of it")
    parser.add_argument("--record", type=Path, default=None,
                        help="append the measurements to this CSV (the tuning curve: latency vs trials spent)")
    args = parser.parse_args(argv)

    from bench.runtimes import check_threads, pin_threads
    from models.errors import UserError

    try:
        check_threads(args.threads)
    except UserError as exc:
        print(f"perf_vs_ort: error: {exc}", file=sys.stderr)
        return 2
    pin_threads(args.threads)  # before TVM's thread pool exists

    from bench.build import cached_build, compile_to_library
    from bench.harness import library_path
    from bench.runtimes import OnnxRuntime, TvmRuntime
    from models.errors import UserError
    from models.export import cache_dir, load_onnx, onnx_input_shape, sample_input
    from models.registry import get_spec, resolve_names
    from targets.registry import resolve_target

    items = args.models.split(",")
    files = [item for item in items if item.endswith(".onnx")]
    try:
        spec = resolve_target("host", mcpu=args.mcpu)
        names = resolve_names([item for item in items if item not in files]) if len(files) < len(items) else []
        # read once: a missing or broken file is a one-line error here, not a traceback later
        file_shapes = {path: onnx_input_shape(load_onnx(path)) for path in files}
        names += files
    except UserError as exc:
        print(f"perf_vs_ort: error: {exc}", file=sys.stderr)
        return 2
    ratios, rows = {}, []
    for name in names:
        is_file = name.endswith(".onnx")
        library = (cache_dir() / "lib" / f"{Path(name).stem}-{spec.key}.so" if is_file
                   else library_path(name, spec, args.untuned, None, args.schedules))
        build = compile_to_library if args.no_cache or is_file else cached_build
        built = build(name, spec, library, schedules=args.schedules, untuned=args.untuned)
        tvm_rt = TvmRuntime(built.library, "tvm", args.threads, str(spec.tvm_config()), built.schedules)
        ort_rt = OnnxRuntime(built.onnx_path, args.threads)
        x = sample_input(file_shapes[name] if is_file else get_spec(name).input_shape)
        tvm_ms, ort_ms = measure_alternating(tvm_rt, ort_rt, x, args.repeat, args.min_block_s)
        ratios[name] = tvm_ms / ort_ms
        tuned = f"{built.coverage.summary()}, {built.schedules}"
        print(f"{name:32s} TVM {tvm_ms:8.2f} ms  ORT {ort_ms:8.2f} ms  TVM/ORT {ratios[name]:5.2f}  ({tuned})",
              flush=True)
        rows.append({"model": name, "tvm_ms": round(tvm_ms, 3), "ort_ms": round(ort_ms, 3),
                     "ratio": round(ratios[name], 3), "schedules": built.schedules,
                     "tasks_tuned": len(built.coverage.tuned), "tasks": built.coverage.total,
                     "tasks_transferred": len(built.coverage.transferred), "tasks_default": len(built.coverage.default)})
    print(f"threads: {args.threads}; TVM: time_evaluator median; ORT: warm-loop median")
    if args.record:
        record(args.record, rows, spec, args.threads, args.schedules, args.untuned)
    print(f"worst TVM/ORT ratio: {max(ratios.values()):.2f}")
    return 0


def record(path: Path, rows: list[dict], spec, threads: int, schedules: Path | None, untuned: bool) -> None:
    """Append to the tuning-curve CSV, with the trials the database held when it was measured."""
    import onnxruntime
    import pandas as pd
    import tvm

    from bench.harness import hardware_name
    from schedules import database as db_files
    from schedules.search.budget import trials_done

    database = None if untuned else db_files.open_database(spec, schedules)
    folder = db_files.database_dir(spec, schedules)
    trials = sum(trials_done(database, folder).values()) if database is not None else 0
    meta = {} if untuned else db_files.read_metadata(folder) or {}
    frame = pd.DataFrame(rows).assign(
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), hardware=hardware_name(spec),
        threads=threads, database_trials=trials, tuning_minutes=meta.get("tuning_minutes"),
        tuning_runs=" | ".join(r["command"] for r in meta.get("runs", [])),
        tvm=tvm.__version__, onnxruntime=onnxruntime.__version__, layout=spec.data_layout,
    )
    if path.exists():  # read and rewrite rather than append: a new column must not shift the old rows
        frame = pd.concat([pd.read_csv(path), frame], ignore_index=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


# Both runtimes' thread pools spin-wait for a while after a run; on 2 cores the spinning threads of
# the one just measured would steal the cores of the next. A short idle lets them park first.
IDLE_BETWEEN_BLOCKS_S = 0.2


def measure_alternating(tvm_rt, ort_rt, x, repeat: int, min_block_s: float) -> tuple[float, float]:
    """Median per-inference ms of each runtime, from ``repeat`` alternating blocks after warm-up."""
    ort_rt.run(x), tvm_rt.run(x)
    number = max(1, int(min_block_s / max(_one_run_s(tvm_rt, x), 1e-4)))
    ort_number = max(1, int(min_block_s / max(_one_run_s(ort_rt, x), 1e-4)))
    tvm_blocks, ort_blocks = [], []
    for _ in range(repeat):
        time.sleep(IDLE_BETWEEN_BLOCKS_S)
        tvm_blocks += tvm_rt.time_evaluator(x, number=number, repeat=1)
        time.sleep(IDLE_BETWEEN_BLOCKS_S)
        start = time.perf_counter()
        for _ in range(ort_number):
            ort_rt.run(x)
        ort_blocks.append((time.perf_counter() - start) / ort_number)
    return statistics.median(tvm_blocks) * 1e3, statistics.median(ort_blocks) * 1e3


def _one_run_s(runtime, x) -> float:
    start = time.perf_counter()
    for _ in range(3):
        runtime.run(x)
    return (time.perf_counter() - start) / 3


if __name__ == "__main__":
    sys.exit(main())
