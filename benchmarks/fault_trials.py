"""Fault trials: kill -9 and signal ``genloom train`` at random moments, then check and resume.

A trial strikes one run directory ``--chain`` times in a row and then finishes the run. A
kill strike starts (or resumes) a run and sends SIGKILL, mostly at a random moment of a
checkpoint save (aimed), sometimes at a random training step; some resume from the older
of the two kept checkpoints, so that their first save replaces an existing step, and kill
that save. A signal strike sends SIGTERM or SIGINT at a random training step and expects
the exit status 128+signum. After every strike, every ``step_*`` directory must load and
``checkpoints/latest`` must resolve to a complete checkpoint; at the end,
``trainer.resume=true`` must finish the run with exactly the weights and the
``metrics.jsonl`` records (steps and splits, in order) of one uninterrupted run. A pair
trial starts two trainers on one run directory at once: the second must be refused and the
first must train exactly like an uninterrupted run.

The runs train the test suite's fake plugin (``tests/fake_plugin``: a bigram model on a
counting dataset), so the trials need no installed plugin and take seconds each. To aim
kills inside saves, the child process widens the save's windows: it sleeps ``--delay``
seconds before each write, fsync, rename and removal of a save, and notes in a marks file
when each save begins and ends. The code that runs is the real one; only its timing
changes.

    python benchmarks/fault_trials.py                       # quick: 4 kills, 2 signals
    python benchmarks/fault_trials.py --kills 20 --signals 10 --chain 5 --jobs 3

It prints the counts and exits 1 if any checkpoint failed to load or any resume failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 40
ARGS = [
    "pipeline=counting", "trainer=debug", "trainer.progress=false", "device=cpu",
    f"trainer.max_steps={MAX_STEPS}", "trainer.batch_size=8", "trainer.log_every=3",
    "trainer.eval_every=10", "trainer.checkpoint_every=5", "trainer.keep_checkpoints=2",
]
SAVES = MAX_STEPS // 5
PHASES = 10  # slowed points in one save: writes, fsync, renames, latest, removals


@dataclass
class Tally:
    trials: int = 0
    kills: int = 0
    kills_in_save: int = 0
    kills_in_re_save: int = 0
    signals: int = 0
    signal_status_ok: int = 0
    finished_before_strike: int = 0
    pairs: int = 0
    pairs_refused: int = 0
    corrupt: int = 0
    failed_resumes: int = 0
    problems: list[str] = field(default_factory=list)


# -- the child: genloom train on the fake plugin, with its saves slowed and marked ------------

def child(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    import fake_plugin
    from genloom import checkpoint, cli, plugins
    from genloom.trainer import Trainer

    marks = open(os.environ["FAULT_TRIALS_MARKS"], "a", buffering=1)  # noqa: SIM115 - lives as long as we do
    delay = float(os.environ["FAULT_TRIALS_DELAY"])
    saving = [False]

    def slowed(function):
        def wrapper(*args, **kwargs):
            if saving[0]:
                time.sleep(delay)
            return function(*args, **kwargs)
        return wrapper

    for name in ("save_file", "save_model", "_fsync_dir", "write_atomic", "_prune"):
        setattr(checkpoint, name, slowed(getattr(checkpoint, name)))
    checkpoint.os.replace = slowed(os.replace)  # the renames of _move_in
    checkpoint.shutil.rmtree = slowed(checkpoint.shutil.rmtree)
    real_save, real_step = checkpoint.save, Trainer._train_step

    def marked_save(*args, step, **kwargs):
        marks.write(f"save-begin {step}\n")
        saving[0] = True
        try:
            return real_save(*args, step=step, **kwargs)
        finally:
            saving[0] = False
            marks.write(f"save-end {step}\n")

    def marked_step(self, batches):
        real_step(self, batches)
        marks.write(f"step {self.step}\n")

    checkpoint.save, Trainer._train_step = marked_save, marked_step
    plugins.set_active(plugins.load_plugins([fake_plugin.source()], strict=True, disabled=()))
    return cli.main(argv)


# -- the parent: start, strike, inspect, resume --------------------------------------------

class Run:
    """One child process training into ``run_dir``."""

    def __init__(self, run_dir: Path, extra: list[str], delay: float, marks: str = "") -> None:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        self.marks = run_dir.parent / f"{run_dir.name}{marks}.marks"
        self.marks.write_text("")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "FAULT_TRIALS_MARKS": str(self.marks),
               "FAULT_TRIALS_DELAY": str(delay)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", "train", *ARGS, *extra, f"hydra.run.dir={run_dir}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )

    def lines(self) -> list[str]:
        return self.marks.read_text().splitlines()

    def wait_for(self, predicate, timeout: float = 900) -> bool:
        """Poll the marks until ``predicate(lines)``; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.lines()):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.005)
        raise TimeoutError(f"{self.marks}: no progress in {timeout}s")

    def finish(self, timeout: float = 900) -> tuple[int, str]:
        out, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, out

    def in_save(self) -> bool:
        saves = [line for line in self.lines() if line.startswith("save-")]
        return bool(saves) and saves[-1].startswith("save-begin")


def strike_save(run: Run, nth: int, delay: float, rng: random.Random) -> bool:
    """SIGKILL ``run`` at a random moment of its ``nth`` save; False if it ended first."""
    if not run.wait_for(lambda lines: sum(x.startswith("save-begin") for x in lines) >= nth):
        return False
    time.sleep(rng.uniform(0, PHASES * delay))
    return _send(run, signal.SIGKILL)


def strike_at_step(run: Run, step: int, signum: int) -> bool:
    """Send ``signum`` once training step ``step`` is done; False if the run ended first."""
    if not run.wait_for(lambda lines: f"step {step}" in lines):
        return False
    return _send(run, signum)


def _send(run: Run, signum: int) -> bool:
    if run.process.poll() is not None:
        return False
    run.process.send_signal(signum)
    return True


def inspect(run_dir: Path, tally: Tally, when: str) -> None:
    """Every step directory loads; ``latest`` resolves to a complete one if any exists."""
    from genloom import checkpoint
    from safetensors.torch import load_file

    ckpts = run_dir / "checkpoints"
    steps = sorted(ckpts.glob("step_*")) if ckpts.is_dir() else []
    for step_dir in steps:
        try:
            checkpoint.read(step_dir)
            load_file(step_dir / "model.safetensors")
            load_file(step_dir / "trainer.safetensors")
            json.loads((step_dir / "trainer.json").read_text())
        except Exception as err:  # noqa: BLE001 - any failure to load is what we count
            tally.corrupt += 1
            tally.problems.append(f"{when}: {step_dir} does not load: {err}")
    if steps:
        try:
            checkpoint.read(checkpoint.resolve(run_dir))
        except Exception as err:  # noqa: BLE001
            tally.corrupt += 1
            tally.problems.append(f"{when}: {run_dir} does not resolve: {err}")


def resume_and_compare(run_dir: Path, reference: Path, tally: Tally, when: str, delay: float) -> None:
    from genloom import checkpoint

    has_checkpoint = checkpoint.latest_in(run_dir / "checkpoints") is not None
    status, out = Run(run_dir, ["trainer.resume=true"] if has_checkpoint else [], delay).finish()
    problem = None
    if status != 0:
        problem = f"resume exited {status}: {out[-1500:]}"
    elif final_weights(run_dir) != final_weights(reference):
        problem = "resumed weights differ from an uninterrupted run's"
    elif log_shape(run_dir) != log_shape(reference):
        problem = "metrics.jsonl differs from an uninterrupted run's"
    if problem:
        tally.failed_resumes += 1
        tally.problems.append(f"{when}: {problem}")


def final_weights(run_dir: Path) -> dict[str, bytes]:
    from genloom import checkpoint
    from safetensors.torch import load_file

    step_dir = checkpoint.resolve(run_dir)
    return {k: t.numpy().tobytes() for k, t in load_file(step_dir / "model.safetensors").items()}


def log_shape(run_dir: Path) -> list[tuple[int, str]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["split"]) for r in map(json.loads, lines)]


def trial(base: Path, reference: Path, tally: Tally, rng: random.Random, delay: float,
          strikes: list[str]) -> None:
    """Strike one run directory again and again (``kill`` or ``signal``), then finish it."""
    from genloom import checkpoint

    run_dir = base / "run"
    for kind in strikes:
        steps = sorted((run_dir / "checkpoints").glob("step_*")) if (run_dir / "checkpoints").is_dir() else []
        extra, start, re_save = [], 0, False
        if len(steps) >= 2 and kind == "kill" and rng.random() < 0.4:
            # Resume from the older checkpoint: the first save replaces the newer one.
            extra, start, re_save = [f"trainer.resume={steps[0]}"], checkpoint.read(steps[0]).step, True
        elif steps:
            extra, start = ["trainer.resume=true"], checkpoint.read(checkpoint.resolve(run_dir)).step
        if start >= MAX_STEPS - 4:
            break  # too little left to strike
        run = Run(run_dir, extra, delay)
        if kind == "kill":
            tally.kills += 1
            if re_save or rng.random() < 0.75:
                # An early save of the run, so that the chain has steps left for its next strikes.
                hit = strike_save(run, 1 if re_save else rng.randint(1, 2), delay, rng)
            else:
                step = rng.randrange(start + 1, min(start + 10, MAX_STEPS))
                hit = strike_at_step(run, step, signal.SIGKILL)
            status, out = run.finish()
            if hit and run.in_save():
                tally.kills_in_save += 1
                tally.kills_in_re_save += re_save
        else:
            tally.signals += 1
            signum = rng.choice([signal.SIGTERM, signal.SIGINT])
            hit = strike_at_step(run, rng.randrange(start + 1, min(start + 8, MAX_STEPS - 3)), signum)
            status, out = run.finish()
            if hit and status == 128 + signum:
                tally.signal_status_ok += 1
            elif hit:
                tally.problems.append(f"{base.name}: {signum.name} exited {status}, not {128 + signum}: "
                                      f"{out[-800:]}")
        inspect(run_dir, tally, f"{base.name} after a {kind}")
        if not hit:
            tally.finished_before_strike += 1
            break
    resume_and_compare(run_dir, reference, tally, base.name, delay)


def pair_trial(base: Path, reference: Path, tally: Tally, delay: float) -> None:
    """Two trainers started together on one run directory: one trains, the other is refused."""
    run_dir = base / "run"
    tally.pairs += 1
    first, second = Run(run_dir, [], delay, marks="first"), Run(run_dir, [], delay, marks="second")
    results = [first.finish(), second.finish()]
    statuses = [status for status, _ in results]
    refused = sum(status == 1 and "is in use by another genloom process" in out for status, out in results)
    tally.pairs_refused += refused
    if not (statuses == [0, 0] or (statuses.count(0) == 1 and refused == 1)):  # [0, 0]: no overlap
        tally.problems.append(f"{base.name}: two trainers exited {statuses}: "
                              f"{results[0][1][-800:]}\n{results[1][1][-800:]}")
    inspect(run_dir, tally, f"{base.name} after two trainers")
    if final_weights(run_dir) != final_weights(reference) or log_shape(run_dir) != log_shape(reference):
        tally.problems.append(f"{base.name}: the run two trainers shared differs from an uninterrupted one")


def report(tally: Tally, seconds: float) -> str:
    rows = [
        ("trials (run directories)", tally.trials),
        ("kill -9", tally.kills),
        ("  inside a save", tally.kills_in_save),
        ("  inside a save replacing a step", tally.kills_in_re_save),
        ("SIGTERM/SIGINT", tally.signals),
        ("  exits with 128+signum", tally.signal_status_ok),
        ("runs that ended before the strike", tally.finished_before_strike),
        ("two trainers on one run directory", tally.pairs),
        ("  the second refused", tally.pairs_refused),
        ("corrupt checkpoints", tally.corrupt),
        ("failed resumes", tally.failed_resumes),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append(f"{'wall time':<{width}}  {seconds:.0f} s")
    return "\n".join(lines + [f"problem: {p}" for p in tally.problems])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=4, help="kill -9 strikes in all (default 4)")
    parser.add_argument("--signals", type=int, default=2, help="SIGTERM/SIGINT strikes in all (default 2)")
    parser.add_argument("--chain", type=int, default=2,
                        help="strikes on one run directory before it is resumed to the end (default 2)")
    parser.add_argument("--pairs", type=int, default=1,
                        help="trials that start two trainers on one run directory (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.03,
                        help="seconds each slowed point of a save sleeps (default 0.03)")
    parser.add_argument("--jobs", type=int, default=1, help="trials run side by side (default 1)")
    parser.add_argument("--dir", type=Path, help="keep the trials' run directories here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault-trials-") as scratch:
        base = args.dir or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        reference = base / "reference"
        status, out = Run(reference, [], 0.0).finish()
        if status != 0:
            print(f"the uninterrupted reference run failed ({status}):\n{out}", file=sys.stderr)
            return 2
        plan = ["kill"] * args.kills + ["signal"] * args.signals
        rng.shuffle(plan)
        chains = [plan[i : i + args.chain] for i in range(0, len(plan), args.chain)]

        def run_chain(i: int) -> Tally:
            tally = Tally(trials=1)
            trial(base / f"trial-{i:02d}", reference, tally, random.Random(args.seed * 1000 + i),
                  args.delay, chains[i])
            return tally

        def run_pair(i: int) -> Tally:
            tally = Tally()
            pair_trial(base / f"pair-{i:02d}", reference, tally, args.delay)
            return tally

        with ThreadPoolExecutor(args.jobs) as pool:
            tallies = [*pool.map(run_chain, range(len(chains))), *pool.map(run_pair, range(args.pairs))]
        tally = Tally(problems=[p for t in tallies for p in t.problems])
        for name in (f.name for f in fields(Tally) if f.name != "problems"):
            setattr(tally, name, sum(getattr(t, name) for t in tallies))
    print(report(tally, time.perf_counter() - start))
    return 1 if tally.corrupt or tally.failed_resumes or tally.problems else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child(sys.argv[2:]))
    sys.exit(main())
