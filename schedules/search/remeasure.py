"""Re-time the best records of a database on today's runner and keep only those.

Two reasons to do this. Records timed by a different runner rank schedules for the wrong machine: the
runs before ``builder.use_threads`` timed every trial on one thread while the models run on two, so
their best records are not the best on two. And a database grows by every trial it ever measured
(about 15 kB each, most of it the layout-rewrite maps in the traces), while compiling reads one record
per workload and the search seeds from a few: a shipped database keeps the K best of each workload.

A third: records timed in different hours of a shared VM are not comparable (its speed moves by a
quarter), and a slice's new trials, timed in a slow hour, cannot displace records timed in a fast one.
Re-timing the slice's workloads afterwards (``workloads``) puts old and new records on one clock.

The workload file is left as it is; the new record file is staged beside the old one and replaces it
in one ``os.replace`` at the end, so an interrupted or failed run leaves the old database whole. The
records dropped are counted per workload in the metadata, so the trials spent on a task still show.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm
from tvm_ffi import structural_hash

from models.errors import UserError
from schedules import database as db_files
from schedules.search.measure import RPCOptions, make_builder, make_runner, measure_candidates, measured_on
from targets.registry import TargetSpec

STAGING = ".remeasure"


def remeasure(spec: TargetSpec, keep: int, root: Path | None = None, rpc: RPCOptions | None = None,
              force: bool = False, retime: bool = True, workloads: set[str] | None = None) -> dict:
    """Keep the ``keep`` best records of every workload, re-timed (or, with ``retime=False``, as timed:
    for records all measured by today's runner); returns a summary. ``workloads`` (structural hashes,
    as text) limits this to those workloads; the others keep all their records as they are."""
    if keep < 1:
        raise UserError("--remeasure and --prune need a positive number of records to keep per workload")
    database = db_files.open_database(spec, root, force=force)
    if database is None:
        raise UserError(f"nothing tuned for {spec.key} yet: no database in {db_files.database_dir(spec, root)}")
    folder = db_files.database_dir(spec, root)
    staging = folder / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        shutil.copyfile(folder / db_files.WORKLOAD_FILE, staging / db_files.WORKLOAD_FILE)
        kept, dropped = _remeasure_into(spec, database, staging, keep, rpc, retime, workloads)
        db_files.compact_record_file(staging / db_files.RECORD_FILE)
        os.replace(staging / db_files.RECORD_FILE, folder / db_files.RECORD_FILE)
        timed = measured_on(spec, rpc) if retime else "kept as timed by the tuning runs"
        db_files.write_metadata(folder, spec, 0, [], measured_on=timed, pruned=dropped)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"workloads": len(kept), "records_kept": sum(kept.values()), "records_dropped": sum(dropped.values()),
            "database": str(folder)}


def _remeasure_into(spec, database, staging: Path, keep: int, rpc, retime: bool = True,
                    workloads: set[str] | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """Time the best ``keep`` records of each workload (of ``workloads``, if given) again, committing
    them to a database in ``staging``; other workloads are copied whole. Returns records kept and
    records dropped per workload (structural hash, as text), the copied ones left out."""
    from tvm.s_tir import meta_schedule as ms

    target = spec.tvm_target()
    builder, runner = make_builder(spec), make_runner(spec, rpc)
    fresh = ms.database.JSONDatabase(path_workload=str(staging / db_files.WORKLOAD_FILE),
                                     path_tuning_record=str(staging / db_files.RECORD_FILE), allow_missing=True)
    by_workload = defaultdict(list)
    for record in database.get_all_tuning_records():
        by_workload[str(structural_hash(record.workload.mod))].append(record)
    kept, dropped = {}, {}
    steps = tqdm(by_workload.items(), unit="workload", desc="re-timing" if retime else "pruning", dynamic_ncols=True)
    for key, records in steps:
        if workloads is not None and key not in workloads:
            workload = fresh.commit_workload(records[0].workload.mod)
            for record in records:
                fresh.commit_tuning_record(ms.database.TuningRecord(
                    record.trace, workload, record.run_secs, target, record.args_info))
            continue
        best = database.get_top_k(records[0].workload, keep)
        times = (measure_candidates([r.as_measure_candidate() for r in best], target, builder, runner) if retime
                 else [list(r.run_secs) for r in best])
        workload = fresh.commit_workload(records[0].workload.mod)
        for record, secs in zip(best, times):
            if secs:
                fresh.commit_tuning_record(ms.database.TuningRecord(
                    record.trace, workload, secs, target, record.args_info))
        kept[key] = sum(1 for secs in times if secs)
        if best and not kept[key]:
            raise UserError(f"none of the {len(best)} best records of a workload ran again "
                            f"({records[0].workload.mod.get_global_vars()[0].name_hint}); database left as it was")
        dropped[key] = len(records) - kept[key]
    if workloads is not None and not kept:
        raise UserError("none of the kernels asked for has records in the database; database left as it was")
    return kept, dropped
