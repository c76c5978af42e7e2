"""The per-target schedule databases: ``schedules/<target key>/``.

Each folder is a MetaSchedule JSON database (``database_workload.json``, ``database_tuning_record.json``:
one JSON document per line, appended as trials are measured) plus ``metadata.json``, which records what
the records were tuned with: the full TVM target, TVM and LLVM versions, trials per task, the machine,
the date and the command. The metadata is what lets us refuse a database tuned for another target.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from models.errors import UserError
from models.files import write_text_atomically
from targets.registry import TargetSpec, cpu_model

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
METADATA_FILE = "metadata.json"
SHIPPED_PER_WORKLOAD = 8  # records per workload in a committed database (``tune --prune``); the rest are history


def schedules_root() -> Path:
    """The repo's ``schedules/`` folder, or ``$MNV2BENCH_SCHEDULES`` (tests tune into a temp folder)."""
    return Path(os.environ.get("MNV2BENCH_SCHEDULES", Path(__file__).parent))


def database_dir(spec: TargetSpec, root: Path | None = None) -> Path:
    return (root or schedules_root()) / spec.key


def known_keys(root: Path | None = None) -> list[str]:
    root = root or schedules_root()
    return sorted(p.parent.name for p in root.glob(f"*/{METADATA_FILE}"))


def read_metadata(folder: Path) -> dict | None:
    path = folder / METADATA_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"corrupt schedule metadata {path}: {exc}") from None


IDENTITY_FIELDS = ("kind", "mtriple", "mcpu", "mattr", "arch")  # what decides the generated code


def target_config(spec: TargetSpec) -> dict:
    """The full target as TVM expands it (tags resolved to limits), as plain JSON."""
    config = dict(spec.tvm_target().export())
    config.pop("host", None)
    return json.loads(json.dumps(config, default=_jsonable))


def _jsonable(value: object) -> object:
    try:
        return list(value)  # TVM arrays
    except TypeError:
        return str(value)


def _identity(config: dict) -> dict:
    """Thread count and limits aside: a database tuned on 2 cores of a znver4 serves 16 cores of one."""
    return {k: config.get(k) for k in IDENTITY_FIELDS if config.get(k) is not None}


def check_target(folder: Path, spec: TargetSpec, force: bool = False) -> None:
    """Refuse records tuned for a different target: their schedules may not even run here."""
    meta = read_metadata(folder)
    if meta is None or force:
        return
    theirs, ours = _identity(meta.get("target", {})), _identity(target_config(spec))
    if theirs != ours:
        raise UserError(
            f"the schedules in {folder} were tuned for {json.dumps(theirs)}, not {json.dumps(ours)}; "
            "pass --force-schedules to use them anyway"
        )


def repair_and_validate(path: Path) -> int:
    """Check every line of a database file; drop a final line cut short by an interrupted run.

    Returns the number of records. Any other malformed line is a corrupt database: a one-line error
    naming the file and line, never a silent loss of records.
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    ends_cleanly = data.endswith(b"\n")
    count = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
            count += 1
        except ValueError:
            if number == len(lines) and not ends_cleanly:  # a record torn by a kill mid-append
                path.write_bytes(data[: len(data) - len(line)])  # keep every complete record
                return count
            raise UserError(f"corrupt schedule database {path}, line {number}: not a JSON record") from None
    if data and not ends_cleanly:  # a complete last record without its newline: the next append needs one
        with path.open("ab") as f:
            f.write(b"\n")
    return count


def open_database(spec: TargetSpec, root: Path | None = None, force: bool = False, create: bool = False):
    """The target's JSON database, or None when nothing was tuned for it (and ``create`` is false)."""
    from tvm.s_tir import meta_schedule as ms

    folder = database_dir(spec, root)
    if not folder.exists() and not create:
        return None
    check_target(folder, spec, force)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (WORKLOAD_FILE, RECORD_FILE):
        repair_and_validate(folder / name)
    try:
        return ms.database.JSONDatabase(
            path_workload=str(folder / WORKLOAD_FILE), path_tuning_record=str(folder / RECORD_FILE), allow_missing=True
        )
    except Exception as exc:
        raise UserError(f"corrupt schedule database in {folder}: {str(exc).splitlines()[0]}") from None


def _tuned_targets(root: Path | None = None) -> Iterator[tuple[str, dict, dict]]:
    """Each database's key, metadata and target (as its metadata records it)."""
    for key in known_keys(root):
        meta = read_metadata((root or schedules_root()) / key) or {}
        yield key, meta, meta.get("target", {})


def same_architecture(spec: TargetSpec, root: Path | None = None) -> list[str]:
    """Keys of the databases a target may draw transferred schedules from: its own first, then the others
    of its architecture (x86_64 from x86_64, aarch64 from aarch64, sm_90 from sm_90), the largest first.
    Never refused as foreign: a transferred schedule is replayed and postprocessed for this target, not
    reused as is."""
    own = spec.key if (database_dir(spec, root) / METADATA_FILE).exists() else None
    others = []
    for key, meta, target in _tuned_targets(root):
        alike = target.get("arch") == spec.arch if spec.is_gpu else target.get("mtriple") == spec.triple
        if key != own and target.get("kind") == ("cuda" if spec.is_gpu else "llvm") and alike:
            others.append((-len(meta.get("models", [])), key))
    return ([own] if own else []) + [key for _, key in sorted(others)]


def other_architecture(spec: TargetSpec, root: Path | None = None) -> str | None:
    """For a CPU whose kernels its own architecture's databases may not cover, the most-tuned database of
    another CPU architecture (x86_64's for an aarch64 board): replayed with its register tiles narrowed to
    the target's vectors, its schedules still beat default ones. None for a GPU, or if there is none."""
    if spec.is_gpu:
        return None
    others = [(-float(meta.get("tuning_minutes", 0)), key) for key, meta, target in _tuned_targets(root)
              if target.get("kind") == "llvm" and target.get("mtriple") not in (None, spec.triple)]
    return min(others)[1] if others else None


def transfer_keys(spec: TargetSpec, root: Path | None = None) -> list[str]:
    """Every database a library for ``spec`` may draw on: its architecture's, then another's (above)."""
    donor = other_architecture(spec, root)
    return same_architecture(spec, root) + ([donor] if donor else [])


def open_by_key(key: str, root: Path | None = None):
    """A database by its folder name, whatever target it was tuned for (for transfer, never applied as is)."""
    return open_database(spec_from_metadata((root or schedules_root()) / key), root, force=True)


def sources_hash(spec: TargetSpec, root: Path | None = None) -> str:
    """One hash of every database a library for ``spec`` draws on (its own and its transfer sources)."""
    hashes = [content_hash((root or schedules_root()) / key) for key in transfer_keys(spec, root)]
    return hashlib.sha256(" ".join(hashes).encode()).hexdigest()[:12] if hashes else "untuned"


def content_hash(folder: Path) -> str:
    """A short hash of the records, written into every result so a number names its schedules."""
    digest = hashlib.sha256()
    for name in (WORKLOAD_FILE, RECORD_FILE):
        path = folder / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:12]


def write_metadata(folder: Path, spec: TargetSpec, trials_per_task: int, models: list[str], new_run: bool = True,
                   measured_on: str | None = None, pruned: dict[str, int] | None = None,
                   minutes: float | None = None) -> None:
    """Record what the database was tuned with; written atomically, updated on every run.

    ``measured_on`` says where a new run times its trials (``local, 2 threads``, ``rpc:rpi4``);
    ``pruned`` adds records dropped per workload (structural hash) to the counts kept so far;
    ``minutes`` is how long the last run took (added to the database's total).
    """
    import tvm

    previous = read_metadata(folder) or {}
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    run = {"date": now, "command": "mnv2bench " + shlex.join(sys.argv[1:]), "trials_per_task": trials_per_task,
           "measured_on": measured_on}
    runs = previous.get("runs", []) + ([run] if new_run else [])
    # Where the records were timed: this machine when this run times them here, else as before (a prune
    # re-times nothing, and the GPU's slices are pruned on another machine).
    here = {"node": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "arch": platform.machine()}
    timed_here = (measured_on or "").startswith("local") or "machine" not in previous
    machine = here if timed_here else previous["machine"]
    if minutes is not None and runs:
        runs[-1]["minutes"] = round(minutes, 1)
    dropped = dict(previous.get("pruned", {}))
    for key, count in (pruned or {}).items():
        dropped[key] = dropped.get(key, 0) + count
    meta = {
        "target_key": spec.key,
        "target": target_config(spec),
        "layout": spec.data_layout,
        "tvm_version": tvm.__version__,
        "llvm_version": _llvm_version(),
        "trials_per_task": max(trials_per_task, previous.get("trials_per_task", 0)),
        "models": sorted(set(previous.get("models", [])) | set(models)),
        "machine": machine,
        "updated": now,
        "runs": runs,
        "tuning_minutes": round(sum(r.get("minutes", 0) for r in runs), 1),
        "pruned": dropped,
    }
    write_text_atomically(folder / METADATA_FILE, json.dumps(meta, indent=2) + "\n")


def pruned_counts(folder: Path) -> dict[str, int]:
    """Records dropped from the database per workload (structural hash): trials spent, no longer kept."""
    return (read_metadata(folder) or {}).get("pruned", {})


def _llvm_version() -> str:
    import tvm

    try:
        return str(tvm.target.codegen.llvm_version_major())
    except Exception:
        return "unknown"


def spec_from_metadata(folder: Path) -> TargetSpec:
    """Rebuild the target a database was tuned for, from its metadata."""
    meta = read_metadata(folder)
    if meta is None:
        raise UserError(f"{folder} has no {METADATA_FILE}: not a schedule database")
    config = meta["target"]
    if config.get("kind") == "cuda":
        return TargetSpec(name=folder.name, triple="cuda", description="from metadata", arch=config.get("arch"))
    return TargetSpec(
        name=folder.name,
        triple=config.get("mtriple"),
        description="from metadata",
        mcpu=config.get("mcpu"),
        num_cores=config.get("num-cores"),
        mattr=tuple(config.get("mattr", ())),
    )


def resolve_database_target(name: str, root: Path | None = None) -> TargetSpec:
    """A target named by its database key (``x86_64-linux-gnu-znver4``), preset or triple."""
    from targets.registry import resolve_target

    folder = (root or schedules_root()) / name
    if (folder / METADATA_FILE).exists():
        return spec_from_metadata(folder)
    return resolve_target(name)


def compact(folder: Path) -> None:
    """Both files of a database without the indentation TVM writes into them (half their size or more)."""
    compact_record_file(folder / RECORD_FILE)
    compact_workload_file(folder / WORKLOAD_FILE)


def compact_workload_file(path: Path) -> None:
    """Rewrite each workload's serialised module as compact JSON.

    A workload line is ``[structural hash, base64(uint64 length + JSON of the module)]``, the JSON
    pretty-printed; TVM parses the compact form alike. A line in any other form is kept as it is."""
    _rewrite_lines(path, lambda workload: [workload[0], _compact_module(workload[1])])


def _compact_module(blob: str) -> str:
    raw = base64.b64decode(blob)
    (length,) = struct.unpack("<Q", raw[:8])
    if length != len(raw) - 8:
        return blob
    body = json.dumps(json.loads(raw[8:]), separators=(",", ":")).encode()
    return base64.b64encode(struct.pack("<Q", len(body)) + body).decode()


def compact_record_file(path: Path) -> None:
    """Rewrite the JSON embedded in trace attributes without indentation.

    MetaSchedule stores each layout-rewrite index map as pretty-printed TVM JSON inside a string; the
    indentation is most of a record's size, and TVM parses the compact form alike."""
    _rewrite_lines(path, compact_trace_json)


def _rewrite_lines(path: Path, rewrite) -> None:
    """Apply ``rewrite`` to every JSON line of a database file, replacing the file atomically."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    write_text_atomically(path, "".join(json.dumps(rewrite(json.loads(line)), separators=(",", ":")) + "\n"
                                        for line in lines if line.strip()))


def compact_trace_json(value):
    """A record's JSON with the pretty-printed JSON strings inside it (index maps) re-serialised compactly."""
    if isinstance(value, list):
        return [compact_trace_json(v) for v in value]
    if isinstance(value, str) and value.startswith("{\n"):
        try:
            return json.dumps(json.loads(value), separators=(",", ":"))
        except ValueError:
            return value
    return value
