"""Performance goal: tuned TVM against ONNX Runtime, same machine, same run, same threads.

    python bench/perf_vs_ort.py [--models headline|all|NAME,...|FILE.onnx,...] [--threads N] [--repeat 15]
                                [--peers onnxruntime,openvino,executorch] [--measure-transfers]

For each model, the median latency of the tuned TVM library (TVM's own ``time_evaluator``) and of
ONNX Runtime (default optimisations, a warm loop), measured in alternating blocks so that drift on a
noisy machine hits both alike. Prints TVM/ORT per model; the last line is ``worst TVM/ORT ratio: X.XX``.
The bar is 1.0 (TVM at least as fast as ONNX Runtime); run it on a quiet machine.

``--peers`` times other runtimes in the same rounds (OpenVINO, ExecuTorch with XNNPACK: the ``peers`` extra),
each checked against PyTorch first, and adds TVM against the fastest of them per model. Every ratio is TVM
time / peer time: below 1, TVM is faster.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from functools import partial
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
    parser.add_argument("--measure-transfers", action="store_true",
                        help="compile as `mnv2bench compile --measure-transfers` does: time a few transferred "
                             "schedules per untuned kernel and keep the fastest (compiles anew)")
    parser.add_argument("--schedules", type=Path, default=None,
                        help="schedules folder (default: the project's); e.g. an older checkout of it")
    parser.add_argument("--record", type=Path, default=None,
                        help="append the measurements to this CSV (the tuning curve: latency vs trials spent)")
    parser.add_argument(
        "--peers",
        default="onnxruntime",
        help=f"comma-separated runtimes timed beside TVM, from {', '.join(PEERS)} (default: onnxruntime)",
    )
    args = parser.parse_args(argv)

    from bench.runtimes import check_threads, pin_threads
    from models.errors import UserError

    try:
        check_threads(args.threads)
    except UserError as exc:
        print(f"perf_vs_ort: error: {exc}", file=sys.stderr)
        return 2
    peers = list(dict.fromkeys(p.strip() for p in args.peers.split(",") if p.strip()))
    unknown = [p for p in peers if p not in PEERS]
    if unknown or not peers:
        given = ", ".join(unknown) or "(none given)"
        print(f"perf_vs_ort: error: unknown peer(s) {given}; choose from {', '.join(PEERS)}", file=sys.stderr)
        return 2
    pin_threads(args.threads)  # before TVM's thread pool exists

    from bench.build import cached_build, compile_to_library
    from bench.harness import ATOL, RTOL, library_path
    from bench.runtimes import TvmRuntime, import_peer
    from bench.tables import peer_name
    from models.export import assert_close, cache_dir, load_onnx, onnx_input_shape, onnxruntime_outputs, sample_input
    from models.registry import get_spec, resolve_names
    from targets.registry import resolve_target

    items = args.models.split(",")
    files = [item for item in items if item.endswith(".onnx")]
    try:
        for peer in peers:
            if peer != "onnxruntime":
                import_peer(peer)  # a missing package is a one-line error before anything is built
        spec = resolve_target("host", mcpu=args.mcpu)
        names = resolve_names([item for item in items if item not in files]) if len(files) < len(items) else []
        # read once: a missing or broken file is a one-line error here, not a traceback later
        file_shapes = {path: onnx_input_shape(load_onnx(path)) for path in files}
        names += files
    except UserError as exc:
        print(f"perf_vs_ort: error: {exc}", file=sys.stderr)
        return 2
    ratios, best_ratios, rows, peer_notes = {}, {}, [], {}
    for name in names:
        is_file = name.endswith(".onnx")
        if is_file or args.measure_transfers:  # compiled now, never from the cache
            measured = "-measured" if args.measure_transfers else ""
            library = cache_dir() / "lib" / f"{Path(name).stem}-{spec.key}{measured}.so"
            build = partial(compile_to_library, measure_transfers=args.measure_transfers)
        else:
            library = library_path(name, spec, args.untuned, None, args.schedules)
            build = compile_to_library if args.no_cache else cached_build
        built = build(name, spec, library, schedules=args.schedules, untuned=args.untuned)
        if built.coverage.measured:
            print(f"{name}: {built.coverage.measured} transferred schedules timed to choose "
                  f"(compile took {built.compile_s:.0f} s)", flush=True)
        tvm_rt = TvmRuntime(built.library, "tvm", args.threads, str(spec.tvm_config()), built.schedules)
        x = sample_input(file_shapes[name] if is_file else get_spec(name).input_shape)
        try:
            assert_close(tvm_rt.run(x), onnxruntime_outputs(built.onnx_path, x), f"{name}: TVM vs ONNX Runtime",
                         rtol=RTOL, atol=ATOL)
            peer_rts = make_peers(peers, name, built.onnx_path, x, args.threads)
        except UserError as exc:
            print(f"perf_vs_ort: error: {exc}", file=sys.stderr)
            return 2
        except AssertionError as exc:
            print(f"perf_vs_ort: error: wrong output, not timed: {exc}", file=sys.stderr)
            return 1
        for peer, runtime in peer_rts.items():
            if runtime.notes:  # how its threads were set
                peer_notes.setdefault(peer, "; ".join(runtime.notes))
        tvm_ms, peer_ms = measure_alternating(tvm_rt, peer_rts, x, args.repeat, args.min_block_s)
        row = {"model": name, "tvm_ms": round(tvm_ms, 3), "ort_ms": None, "ratio": None}
        line = f"{name:32s} TVM {tvm_ms:8.2f} ms"
        for peer, ms in peer_ms.items():
            line += f"  {peer_name(peer)} {ms:8.2f} ms"
            if peer != "onnxruntime":
                row.update({f"{peer}_ms": round(ms, 3), f"tvm_over_{peer}": round(tvm_ms / ms, 3)})
                row[peer] = peer_rts[peer].version
        if "onnxruntime" in peer_ms:
            ratios[name] = tvm_ms / peer_ms["onnxruntime"]
            row.update(ort_ms=round(peer_ms["onnxruntime"], 3), ratio=round(ratios[name], 3))
            line += f"  TVM/ORT {ratios[name]:5.2f}"
        if len(peers) > 1 and peer_ms:
            best = min(peer_ms, key=peer_ms.get)
            best_ratios[name] = tvm_ms / peer_ms[best]
            row.update(best_peer=best, best_peer_ms=round(peer_ms[best], 3))
            row["tvm_over_best_peer"] = round(best_ratios[name], 3)
            line += f"  TVM/best {best_ratios[name]:5.2f} ({peer_name(best)})"
        tuned = f"{built.coverage.summary()}, {built.schedules}"
        print(f"{line}  ({tuned})", flush=True)
        coverage = built.coverage
        row.update(schedules=built.schedules, tasks_tuned=len(coverage.tuned), tasks=coverage.total)
        row.update(tasks_transferred=len(coverage.transferred), tasks_default=len(coverage.default))
        rows.append(row)
    print(f"threads: {args.threads}; TVM: time_evaluator median; peers: warm-loop median")
    print("ratios: TVM time / peer time (below 1: TVM faster)")
    for peer, notes in peer_notes.items():
        print(f"{peer}: {notes}")
    if args.record:
        record(args.record, rows, spec, args.threads, args.schedules, args.untuned)
    if best_ratios:
        print(f"worst TVM/best-peer ratio: {max(best_ratios.values()):.2f}")
    if ratios:
        print(f"worst TVM/ORT ratio: {max(ratios.values()):.2f}")
    return 0


PEERS = ("onnxruntime", "openvino", "executorch")


def make_peers(peers: list[str], name: str, onnx_path: Path, x, threads: int) -> dict:
    """The peer runtimes of one model, each checked against PyTorch (ONNX Runtime for an ONNX file) on ``x``.
    ExecuTorch lowers the PyTorch model, so an ONNX file has none: it is left out (with a line saying so)."""
    from bench.harness import ATOL, RTOL
    from bench.runtimes import ExecuTorchRuntime, OnnxRuntime, OpenVinoRuntime
    from models.export import assert_close, onnxruntime_outputs, torch_outputs
    from models.registry import create_model

    is_file = name.endswith(".onnx")
    net = None if is_file else create_model(name)
    expected = onnxruntime_outputs(onnx_path, x) if is_file else torch_outputs(net, x)
    made = {}
    for peer in peers:
        if peer == "onnxruntime":
            runtime = OnnxRuntime(onnx_path, threads)
        elif peer == "openvino":
            runtime = OpenVinoRuntime(onnx_path, threads)
        elif is_file:
            print(f"{name}: executorch left out (it lowers the PyTorch model; an ONNX file has none)")
            continue
        else:
            runtime = ExecuTorchRuntime(name, net, x, threads)
        reference = "ONNX Runtime" if is_file else "PyTorch"
        assert_close(runtime.run(x), expected, f"{name} on {peer} vs {reference}", rtol=RTOL, atol=ATOL)
        made[peer] = runtime
    return made


def record(path: Path, rows: list[dict], spec, threads: int, schedules: Path | None, untuned: bool) -> None:
    """Append to the tuning-curve CSV, with the trials the database held when it was measured."""
    import onnxruntime
    import pandas as pd
    import tvm

    from bench.harness import hardware_name
    from models.files import replace_atomically
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
    replace_atomically(path, lambda staged: frame.to_csv(staged, index=False))


# Both runtimes' thread pools spin-wait for a while after a run; on 2 cores the spinning threads of
# the one just measured would steal the cores of the next. A short idle lets them park first.
IDLE_BETWEEN_BLOCKS_S = 0.2


def measure_alternating(tvm_rt, peers: dict, x, repeat: int, min_block_s: float) -> tuple[float, dict[str, float]]:
    """Median per-inference ms of TVM and of each peer (name: runtime), from ``repeat`` rounds of alternating
    blocks after warm-up. The peers' order rotates from round to round, so that none always follows TVM."""
    for runtime in (*peers.values(), tvm_rt):
        runtime.run(x)
    number = max(1, int(min_block_s / max(_one_run_s(tvm_rt, x), 1e-4)))
    numbers = {peer: max(1, int(min_block_s / max(_one_run_s(rt, x), 1e-4))) for peer, rt in peers.items()}
    tvm_blocks, blocks, order = [], {peer: [] for peer in peers}, list(peers)
    for i in range(repeat):
        time.sleep(IDLE_BETWEEN_BLOCKS_S)
        tvm_blocks += tvm_rt.time_evaluator(x, number=number, repeat=1)
        shift = i % len(order) if order else 0
        for peer in order[shift:] + order[:shift]:
            time.sleep(IDLE_BETWEEN_BLOCKS_S)
            start = time.perf_counter()
            for _ in range(numbers[peer]):
                peers[peer].run(x)
            blocks[peer].append((time.perf_counter() - start) / numbers[peer])
    return statistics.median(tvm_blocks) * 1e3, {peer: statistics.median(b) * 1e3 for peer, b in blocks.items()}


def _one_run_s(runtime, x) -> float:
    start = time.perf_counter()
    for _ in range(3):
        runtime.run(x)
    return (time.perf_counter() - start) / 3


if __name__ == "__main__":
    sys.exit(main())
