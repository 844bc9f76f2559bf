"""What the TensorBoard and MLflow loggers (genloom-loggers) cost a training run.

Trains ``genloom train pipeline=text_debug`` (1,000 steps of the tiny text model, 5
evaluations, metrics logged every 10 steps, or every step) in this process with each
choice of ``logger=``, and reports side by side:

* the run's wall time (median of the repeats) and its difference from ``logger`` off;
* the time spent inside the loggers, timed around each call of the plugin's session
  (which is all the plugin does): opening them, the logged steps' metrics, the
  evaluations (drawing the samples, writing them, flushing), checkpoints and closing.
  On a loaded machine this is the steadier figure: wall times swing with other work.

The one-off costs of a process are timed apart, in fresh interpreters: importing
TensorBoard's writer and MLflow's client, and creating a new SQLite store (MLflow runs its
database migrations). Every timed run writes to one store that already exists, as runs do
after the first. One torch thread.

    python benchmarks/loggers.py            # a few minutes on a shared 2-core CPU
    python benchmarks/loggers.py --quick    # under a minute: a smoke test
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from text_train import cpu_name  # noqa: E402

CHOICES = {  # name -> overrides
    "off": [],
    "tensorboard": ["logger=tensorboard"],
    "mlflow": ["logger=mlflow"],
    "both": ["logger=[tensorboard,mlflow]"],
    "both, samples=0": ["logger=[tensorboard,mlflow]", "logger.tensorboard.samples=0",
                        "logger.mlflow.samples=0"],
}
SESSION_CALLS = ("start", "log_metrics", "evaluated", "checkpoint_saved", "close")


def timed_session() -> dict[str, float]:
    """Wrap every call of the plugin's session with a clock; return the running sums (seconds)."""
    from genloom_loggers.session import LoggingSession

    spent: dict[str, float] = defaultdict(float)
    for name in SESSION_CALLS:
        original = getattr(LoggingSession, name)

        def timed(*args, _original=original, _name=name, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - start

        # start is a classmethod: getattr gave it bound to the class already.
        setattr(LoggingSession, name, staticmethod(timed) if name == "start" else timed)
    return spent


def train(overrides: list[str], run_dir: Path) -> float:
    from genloom import cli

    start = time.perf_counter()
    status = cli.main(["train", "pipeline=text_debug", "trainer.progress=false", *overrides,
                       f"hydra.run.dir={run_dir}"])
    if status != 0:
        raise SystemExit(f"genloom train {' '.join(overrides)} exited with {status}")
    return time.perf_counter() - start


def import_seconds(statement: str, repeats: int) -> float:
    """Median seconds of ``statement`` in a fresh interpreter, its start excluded."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                  text=True).stdout.split()[-1]) for _ in range(repeats)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 steps, one repeat, two choices")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # the runs' own INFO lines; warnings still show
    steps = ["trainer.max_steps=20", "trainer.eval_every=10"] if args.quick else []
    choices = {k: v for k, v in CHOICES.items() if k in ("off", "both")} if args.quick else CHOICES
    repeats = 1 if args.quick else args.repeats
    grains = [10] if args.quick else [10, 1]

    with tempfile.TemporaryDirectory(prefix="genloom-loggers-bench-") as tmp:
        root = Path(tmp)
        store = [f"logger.mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}"]
        spent = timed_session()
        train([*steps, *CHOICES["both"], *store], root / "warm-up")  # imports, the store's creation
        rows = []
        for log_every in grains:
            base = None
            for name, overrides in choices.items():
                walls, inside = [], []
                for repeat in range(repeats):
                    spent.clear()
                    uses_store = store if any("mlflow" in o for o in overrides) else []
                    walls.append(train([*steps, f"trainer.log_every={log_every}", *overrides, *uses_store],
                                       root / f"run-{len(rows)}-{log_every}-{repeat}"))
                    inside.append(dict(spent))
                wall = statistics.median(walls)
                base = wall if base is None else base
                parts = {call: statistics.median(i.get(call, 0.0) for i in inside) for call in SESSION_CALLS}
                rows.append((log_every, name, wall, wall - base, parts))

        one_off = {
            "import torch.utils.tensorboard": import_seconds("import torch.utils.tensorboard", repeats),
            "import mlflow's client": import_seconds("from mlflow.tracking import MlflowClient", repeats),
            "import mlflow's client, then create a new SQLite store": import_seconds(
                "from mlflow.tracking import MlflowClient; "
                f"MlflowClient('sqlite:///{root}/new-' + str(t) + '.db').search_experiments()", repeats),
        }

    print(f"genloom train pipeline=text_debug ({'20' if args.quick else '1000'} steps), {cpu_name()}, "
          "1 torch thread; shared machine, other work running")
    print(f"median of {repeats}; seconds")
    header = ("| log_every | logger | wall | vs off | inside loggers | start | metrics | "
              "evaluations (incl. samples) | checkpoints | close |")
    print(header)
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for log_every, name, wall, delta, parts in rows:
        total = sum(parts.values())
        cells = " | ".join(f"{parts[c]:.3f}" for c in SESSION_CALLS)
        print(f"| {log_every} | {name} | {wall:.2f} | {delta:+.2f} | {total:.3f} | {cells} |")
    print()
    print("| once per process | seconds |")
    print("|---|---:|")
    for what, seconds in one_off.items():
        print(f"| {what} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
