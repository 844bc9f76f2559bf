"""``loss.png``: a run's loss curves, drawn from its ``metrics.jsonl`` at each evaluation.

Left panel: the training loss (every logged window) and the validation loss (every
evaluation) against the step, on a log scale when the loss spans more than a factor of
ten. Right panel, when the evaluation reports more than its loss (bits per byte, code
perplexity...): those validation metrics, so a run's progress reads at a glance from
the run directory, without TensorBoard.

Drawn with matplotlib's Agg backend (no display needed), imported on the first plot
only: ``genloom`` commands that never plot do not pay for it. docs/tracking.md gives the
measured import and draw times and why matplotlib rather than drawing with Pillow.
The file is replaced atomically, so a viewer never sees half a PNG.

A draw takes a few hundred milliseconds, so :class:`LossPlot` redraws at an evaluation
only when enough time has passed since the last draw (at least ``MIN_INTERVAL`` seconds
and ``SHARE`` times the last draw's own time: drawing costs at most 1/``SHARE`` of the run),
and always at the last evaluation. A run that evaluates every few steps is not slowed by
its picture, and the finished run's picture is complete.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "loss.png"
# Record keys that are not a metric, or do not read as a curve beside the losses.
_NOT_PLOTTED = {"step", "split", "lr", "throughput", "grad_norm", "loss", "val_loss"}


class LossPlot:
    """``loss.png`` of one run, redrawn at evaluations no more often than it is worth."""

    MIN_INTERVAL = 10.0
    """Seconds between two draws at least (a picture someone looks at, not a log)."""
    SHARE = 20
    """A draw waits for ``SHARE`` times its own duration: at most 1/SHARE of the run draws."""

    def __init__(
        self,
        metrics_path: Path,
        out: Path,
        *,
        title: str,
        draw: Callable[..., bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics_path, self.out, self.title = metrics_path, out, title
        self._draw = draw or write_loss_plot
        self._clock = clock
        self._next = -math.inf  # the first evaluation is drawn at once

    def update(self, *, final: bool = False) -> None:
        """Redraw if it is time, or if this is the run's last evaluation (``final``)."""
        if not final and self._clock() < self._next:
            return
        start = self._clock()
        self._draw(self.metrics_path, self.out, title=self.title)
        took = self._clock() - start
        self._next = self._clock() + max(self.MIN_INTERVAL, self.SHARE * took)


def read_series(metrics_path: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{"train": {"loss": [(step, value), ...]}, "val": {...}}`` from ``metrics.jsonl``.

    A line that is not a record (a torn last line of a killed run) is skipped.
    """
    series: dict[str, dict[str, list[tuple[int, float]]]] = {"train": {}, "val": {}}
    with open(metrics_path) as f:
        for line in f:
            try:
                record = json.loads(line)
                step, split = int(record["step"]), record["split"]
            except (ValueError, TypeError, KeyError):
                continue
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) and math.isfinite(value):
                    series.setdefault(split, {}).setdefault(key, []).append((step, float(value)))
    return series


def write_loss_plot(metrics_path: Path, out: Path, *, title: str) -> bool:
    """Draw ``metrics_path``'s curves into ``out`` (PNG, replaced atomically).

    Returns False, writing nothing, while there is no loss to draw yet.
    """
    series = read_series(metrics_path)
    train_loss = series["train"].get("loss", [])
    val_loss = series["val"].get("val_loss", [])
    if not train_loss and not val_loss:
        return False
    others = {k: v for k, v in sorted(series["val"].items()) if k not in _NOT_PLOTTED}

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # not pyplot: no global figure registry to leak into

    fig = Figure(figsize=(11 if others else 6.5, 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2 if others else 1, squeeze=False)[0]
    ax = axes[0]
    if train_loss:
        ax.plot(*zip(*train_loss, strict=True), label="train loss", color="tab:blue", linewidth=1.2)
    if val_loss:
        ax.plot(*zip(*val_loss, strict=True), label="validation loss", color="tab:orange", marker="o",
                markersize=3.5, linewidth=1.5)
    _log_scale_if_wide(ax, [v for _, v in train_loss + val_loss])
    ax.set(xlabel="step", ylabel="loss", title="loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if others:
        ax = axes[1]
        for key, points in others.items():
            ax.plot(*zip(*points, strict=True), label=key, marker="o", markersize=3.5, linewidth=1.2)
        _log_scale_if_wide(ax, [v for points in others.values() for _, v in points])
        ax.set(xlabel="step", ylabel=next(iter(others)) if len(others) == 1 else "value",
               title="validation metrics")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    png = io.BytesIO()
    fig.savefig(png, format="png")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(png.getvalue())
    os.replace(tmp, out)
    return True


def _log_scale_if_wide(ax: object, values: list[float]) -> None:
    # A loss falling from 6 to 0.5 flattens into the axis on a linear scale.
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")  # type: ignore[attr-defined]


def title_for(run_dir: Path, components: Mapping[str, str]) -> str:
    """``"outputs/train/2026-12-06/23-05-37: dataset=text_debug, generator=transformer"``."""
    try:
        where = str(run_dir.resolve().relative_to(Path.cwd()))
    except ValueError:  # not under the working directory: the full path
        where = str(run_dir)
    names = ", ".join(f"{kind}={name}" for kind, name in components.items())
    return f"{where}: {names}" if names else where
