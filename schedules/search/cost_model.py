"""One XGBoost cost model per target database: shared by every task of a run, saved beside the
database, loaded by the next run.

MetaSchedule's ``XGBModel`` normalises each workload's measured times within the workload, so one
model learns from all of them; built afresh for every task it forgets what a depthwise kernel taught
it before the next depthwise kernel, and every resumed run starts cold. A file that is missing,
unreadable or written for another target is ignored with a one-line warning: the run starts cold.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from targets.registry import TargetSpec

MODEL_FILE = "cost_model.tar.gz"  # MetaSchedule's own format (booster and training data), gzipped
INFO_FILE = "cost_model.json"  # which target and how many measurements it learned from


def new_cost_model():
    from tvm.s_tir import meta_schedule as ms

    return ms.cost_model.XGBModel(extractor=ms.feature_extractor.PerStoreFeature(), adaptive_training=True)


def load_cost_model(folder: Path, spec: TargetSpec, warn=lambda msg: print(msg, file=sys.stderr)):
    """The database's saved cost model, or a fresh one (with a warning) when it cannot be used."""
    model = new_cost_model()
    path, info_path = folder / MODEL_FILE, folder / INFO_FILE
    if not path.exists():
        return model
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        warn(f"mnv2bench: warning: ignoring the cost model in {folder}: {INFO_FILE} is missing or unreadable")
        return model
    if info.get("target_key") != spec.key:
        warn(f"mnv2bench: warning: ignoring the cost model in {folder}: it was trained for "
             f"{info.get('target_key')!r}, not {spec.key!r}")
        return model
    with tempfile.TemporaryDirectory(prefix="mnv2bench-cost-model-") as tmp:
        plain = Path(tmp) / "model.tar"
        try:
            with gzip.open(path, "rb") as src, plain.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            model.load(str(plain))
        except Exception as exc:  # a torn or foreign file; MetaSchedule's loader raises many kinds
            warn(f"mnv2bench: warning: ignoring the cost model in {folder}: unreadable ({type(exc).__name__})")
            return new_cost_model()
    return model


def save_cost_model(model, folder: Path, spec: TargetSpec) -> None:
    """Write the model and its info atomically (a run killed mid-save leaves the previous pair)."""
    if getattr(model, "booster", None) is None:
        return  # nothing learned yet
    with tempfile.TemporaryDirectory(prefix="mnv2bench-cost-model-") as tmp:
        plain = Path(tmp) / "model.tar"
        model.save(str(plain))
        staged = folder / f".{MODEL_FILE}.tmp"
        with plain.open("rb") as src, gzip.open(staged, "wb") as dst:
            shutil.copyfileobj(src, dst)
    info = {"target_key": spec.key, "measurements": int(getattr(model, "data_size", 0))}
    staged_info = folder / f".{INFO_FILE}.tmp"
    staged_info.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(staged, folder / MODEL_FILE)
    os.replace(staged_info, folder / INFO_FILE)
