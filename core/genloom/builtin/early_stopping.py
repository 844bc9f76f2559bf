"""Early stopping (``trainer.early_stopping``), built on the training events like any plugin's.

After each evaluation the watched metric is compared with the best so far; after
``patience`` evaluations without an improvement larger than ``min_delta``, training is
asked to stop. The best value and the count live in ``run.state``, so a resumed run goes
on counting where the checkpoint left off.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)


def on_evaluated(run: Any) -> None:
    """Count this evaluation against ``trainer.early_stopping``; ask to stop when patience runs out."""
    settings = run.settings.early_stopping
    if settings.patience is None:
        return
    value = float(run.metrics[settings.metric])  # the trainer checked that the metric exists
    state = run.state
    best = state.get("best")
    sign = 1.0 if settings.mode == "min" else -1.0
    if best is None or (math.isfinite(value) and sign * (best - value) > settings.min_delta):
        state["best"], state["best_step"], state["since_best"] = value, run.step, 0
        return
    state["since_best"] = int(state.get("since_best", 0)) + 1
    log.info("early stopping: %s=%.6g, no better than %.6g (step %d) for %d of %d evaluations",
             settings.metric, value, best, state["best_step"], state["since_best"], settings.patience)
    if state["since_best"] >= settings.patience:
        run.request_stop(
            f"early stopping: {settings.metric} has not improved on {best:.6g} (step {state['best_step']}) "
            f"by more than {settings.min_delta:g} in {settings.patience} evaluations"
        )
