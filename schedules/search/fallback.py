"""A parallel, vectorised schedule for a CPU kernel that neither a record nor a transfer covers.

TVM's own default for such a kernel is its naive loop nest: one thread, scalar code (tens of times
slower than a tuned kernel). Instead the kernel gets the first design space that MetaSchedule's own
rules generate for the target, with the decisions sampled from a fixed seed and the postprocessors
applied: what the tuner's first random batch would start from, at no measurement cost.
"""

from __future__ import annotations

import tvm

from schedules.search.transfer import postprocess, tune_context


def default_schedule(mod: tvm.IRModule, target: tvm.target.Target, seed: int = 1) -> tvm.s_tir.Schedule | None:
    """A postprocessed sample of the first design space that applies, or None if none does."""
    context = tune_context(mod, target, seed)
    for space in context.generate_design_space():
        sch = tvm.s_tir.Schedule(mod, seed=seed)
        try:
            space.trace.apply_to_schedule(sch, remove_postproc=True)
            postprocess(sch, mod, target)
        except Exception:  # TVM's own errors arrive as builtins (no tvm.error.TVMError in 0.27), TransferSkipped too
            continue
        return sch
    return None
