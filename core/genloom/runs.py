"""``genloom runs``: the training runs under a folder, as a table; ``runs compare A B``.

A run directory is one that ``genloom train`` wrote: it holds ``train.log`` (Hydra's
log), ``metrics.jsonl`` or ``checkpoints/``. The search is recursive, so single runs
(``outputs/train/DATE/TIME``) and sweep members (``multirun/train/DATE/TIME/N``) are
found alike, and it never descends into a run's own ``checkpoints/`` or ``.hydra/``.

Each run is read from small files and file tails only (no torch, no Hydra): the last
64 KiB of ``metrics.jsonl`` for the final metrics, ``.hydra/config.yaml`` for the pipeline
and ``trainer.max_steps``, the first and last line of ``train.log`` for the wall time,
``checkpoints/latest`` for the checkpoint. A directory that cannot be read whole is
listed with what is wrong with it.

The status is told from the run-directory lock (:mod:`genloom.rundir`) and the steps:

* ``running``: ``.genloom.lock`` is there and a live process holds it (asked of the lock
  itself, :func:`genloom.rundir.is_held`: no guess from a pid that may have been reused);
* ``crashed``: the lock file is there but nobody holds it (killed: no clean exit removed it);
* ``finished``: no lock, and the last record is at ``trainer.max_steps``;
* ``stopped``: no lock, and fewer steps (Ctrl-C or SIGTERM saved and exited; resume it
  with ``trainer.resume=true hydra.run.dir=RUN``), or the run failed (see ``train.log``).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genloom import rundir

USAGE = """usage: genloom runs [DIR ...] [--sort [-]METRIC] [--json]
       genloom runs compare RUN_A RUN_B [--json]

Lists the training runs under DIR (default: outputs/ and multirun/), recursively: status,
steps done / trainer.max_steps, pipeline, final train and validation metrics, wall time
(first to last line of train.log) and the latest checkpoint.
  --sort METRIC   ascending by a final metric (val_loss, loss, val_bits_per_byte, ...);
                  -METRIC for descending. Runs without it come last.
  --json          one object per run, with every final metric.
compare: the two runs' config differences (dotted keys) and final metrics side by side.
"""
METRICS_FILE = "metrics.jsonl"
_TAIL_BYTES = 64 * 1024
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")
_COMPONENTS = ("dataset", "encoder", "generator", "decoder", "condition_encoder")


@dataclass
class Run:
    """What ``genloom runs`` tells of one run directory."""

    path: str
    status: str
    step: int | None = None
    max_steps: int | None = None
    pipeline: dict[str, str] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)  # the last training record
    val: dict[str, float] = field(default_factory=dict)  # the last evaluation
    wall_seconds: float | None = None
    checkpoint: str | None = None
    problems: list[str] = field(default_factory=list)

    def metric(self, name: str) -> float | None:
        return self.val.get(name, self.train.get(name))


def main(args: Sequence[str]) -> int:
    """``genloom runs``'s entry point; returns the exit status."""
    args = list(args)
    if "-h" in args or "--help" in args:
        print(USAGE, end="")
        return 0
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    if args[:1] == ["compare"]:
        if len(args) != 3:
            return _usage_error("compare takes two run directories")
        return compare_command(Path(args[1]), Path(args[2]), as_json=as_json)
    sort = None
    if "--sort" in args:
        at = args.index("--sort")
        if at + 1 >= len(args):
            return _usage_error("--sort needs a metric, such as --sort val_loss or --sort -val_loss")
        sort = args.pop(at + 1)
        args.pop(at)
    unknown = [a for a in args if a.startswith("--")]
    if unknown:
        return _usage_error(f"unknown option {unknown[0]!r}")
    roots = [Path(a) for a in args] or [p for p in (Path("outputs"), Path("multirun")) if p.is_dir()]
    if not roots:
        print("genloom runs: no outputs/ or multirun/ folder here; run it where you ran genloom train, "
              "or give the folder: genloom runs DIR", file=sys.stderr)
        return 1
    missing = [r for r in roots if not r.is_dir()]
    if missing:
        print(f"genloom runs: {missing[0]} is not a folder; give the folder your runs are in "
              "(genloom train writes them under outputs/, sweeps under multirun/)", file=sys.stderr)
        return 2
    runs = [read_run(d) for root in roots for d in find_run_dirs(root)]
    if sort:
        name = sort.lstrip("-")
        if runs and all(r.metric(name) is None for r in runs):
            known = sorted({k for r in runs for k in (*r.train, *r.val)})
            print(f"genloom runs: no run has the metric {name!r} for --sort; "
                  f"the runs have: {', '.join(known) or 'no metrics yet'}", file=sys.stderr)
            return 2
        runs = sort_runs(runs, sort)
    if as_json:
        print(json.dumps([asdict(r) for r in runs], indent=2))
    else:
        print(table(runs, extra=sort.lstrip("-") if sort else None), end="")
    return 0


def _usage_error(what: str) -> int:
    print(f"genloom runs: {what}\n{USAGE}", end="", file=sys.stderr)
    return 2


def find_run_dirs(root: Path) -> Iterator[Path]:
    """The run directories under ``root`` (itself included), sorted by path."""
    for here, dirs, files in os.walk(root):
        dirs.sort()
        if "train.log" in files or METRICS_FILE in files or "checkpoints" in dirs:
            yield Path(here)
            dirs[:] = [d for d in dirs if d not in ("checkpoints", ".hydra")]
        dirs[:] = [d for d in dirs if not d.startswith(".")]


def read_run(run_dir: Path) -> Run:
    """One run directory, read from small files; what cannot be read goes into ``problems``."""
    run = Run(path=str(run_dir), status="?")
    config = _read_config(run_dir, run.problems)
    if config is not None:
        run.pipeline = {k: str(config[k]["name"]) for k in _COMPONENTS
                        if isinstance(config.get(k), dict) and "name" in config[k]}
        max_steps = (config.get("trainer") or {}).get("max_steps")
        run.max_steps = max_steps if isinstance(max_steps, int) else None
    _read_metrics(run_dir / METRICS_FILE, run)
    run.wall_seconds = _wall_seconds(run_dir / "train.log")
    run.checkpoint = _latest_checkpoint(run_dir / "checkpoints", run.problems)
    run.status = _status(run_dir, run)
    return run


def _read_config(run_dir: Path, problems: list[str]) -> dict | None:
    import yaml

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        problems.append(f"no {path.relative_to(run_dir)} (not written by genloom train, or removed)")
        return None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        config = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        problems.append(f"{path.relative_to(run_dir)} is unreadable: {str(err).splitlines()[0]}")
        return None
    if not isinstance(config, dict):
        problems.append(f"{path.relative_to(run_dir)} holds no mapping")
        return None
    return config


def _read_metrics(path: Path, run: Run) -> None:
    """The last train and val records of ``metrics.jsonl``, from its tail."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        run.problems.append(f"no {METRICS_FILE} (stopped before its first log)")
        return
    except OSError as err:
        run.problems.append(f"{METRICS_FILE} is unreadable: {err}")
        return
    if size > _TAIL_BYTES:
        tail = tail[1:]  # the first line of the tail is cut
    torn = 0
    for line in reversed(tail):
        try:
            record = json.loads(line)
            step, split = int(record["step"]), record["split"]
        except (ValueError, TypeError, KeyError):
            torn += 1
            continue
        run.step = step if run.step is None else max(run.step, step)
        values = {k: v for k, v in record.items()
                  if k not in ("step", "split") and isinstance(v, (int, float))}
        if split == "train" and not run.train:
            run.train = values
        elif split == "val" and not run.val:
            run.val = values
        if run.train and run.val:
            break
    if torn:
        run.problems.append(f"{METRICS_FILE}: {torn} unreadable line(s) skipped")
    if run.step is None:
        run.problems.append(f"{METRICS_FILE} holds no record")


def _wall_seconds(log: Path) -> float | None:
    """Seconds from ``train.log``'s first line to its last (a resumed run: the pause included)."""
    try:
        with open(log, "rb") as f:
            head = f.read(256).decode("utf-8", errors="replace")
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 8192))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    times = [_log_time(head)] + [_log_time(line) for line in reversed(lines)]
    first, last = times[0], next((t for t in times[1:] if t is not None), None)
    return None if first is None or last is None else (last - first).total_seconds()


def _log_time(line: str) -> datetime.datetime | None:
    match = _LOG_TIME.match(line)
    if not match:
        return None
    return datetime.datetime.fromisoformat(match.group(1)).replace(microsecond=int(match.group(2)) * 1000)


def _latest_checkpoint(checkpoints: Path, problems: list[str]) -> str | None:
    """What ``checkpoints/latest`` names, else the newest ``step_*`` (as resume would take)."""
    if not checkpoints.is_dir():
        return None
    latest = checkpoints / "latest"
    if latest.is_file():
        name = latest.read_text(errors="replace").strip()
        if re.fullmatch(r"step_\d+", name) and (checkpoints / name / "model.safetensors").is_file():
            return str(checkpoints / name)
        problems.append(f"checkpoints/latest names {name[:40]!r}, which is not a complete checkpoint")
    steps = sorted((int(p.name[5:]), p) for p in checkpoints.glob("step_*")
                   if p.name[5:].isdigit() and (p / "model.safetensors").is_file())
    return str(steps[-1][1]) if steps else None


def _status(run_dir: Path, run: Run) -> str:
    held = rundir.is_held(run_dir)
    if held is not None:
        return "running" if held else "crashed"
    if run.step is not None and run.max_steps is not None and run.step >= run.max_steps:
        return "finished"
    return "stopped"


def sort_runs(runs: list[Run], key: str) -> list[Run]:
    """``key`` ascending (``-key``: descending); runs without the metric last, in path order."""
    name, descending = key.lstrip("-"), key.startswith("-")
    having = [r for r in runs if r.metric(name) is not None]
    having.sort(key=lambda r: r.metric(name), reverse=descending)
    return having + [r for r in runs if r.metric(name) is None]


def table(runs: list[Run], *, extra: str | None = None) -> str:
    """The human-readable ``genloom runs`` table; problems follow each run they concern."""
    if not runs:
        return "no training runs found\n"
    metrics = ["loss", "val_loss"] + ([extra] if extra and extra not in ("loss", "val_loss") else [])
    header = ["run", "status", "steps", "pipeline", *metrics, "wall", "checkpoint"]
    rows = []
    for r in runs:
        steps = f"{'-' if r.step is None else r.step}/{'?' if r.max_steps is None else r.max_steps}"
        pipeline = "/".join(r.pipeline.get(k, "") for k in ("dataset", "encoder", "generator", "decoder")
                            if k in r.pipeline) or "?"
        values = [_number(r.metric(m)) for m in metrics]
        wall = "-" if r.wall_seconds is None else _duration(r.wall_seconds)
        checkpoint = _relative(r.checkpoint, r.path) if r.checkpoint else "-"
        rows.append([r.path, r.status, steps, pipeline, *values, wall, checkpoint])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    for r, row in zip(runs, rows, strict=True):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        lines += [f"    ! {problem}" for problem in r.problems]
    return "\n".join(lines) + "\n"


def _relative(path: str, run_path: str) -> str:
    return os.path.relpath(path, run_path) if path.startswith(run_path) else path


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# -- compare ------------------------------------------------------------------------------


def compare_command(a: Path, b: Path, *, as_json: bool) -> int:
    for path in (a, b):
        if not (path / ".hydra" / "config.yaml").is_file():
            print(f"genloom runs compare: {path} is not a training run directory (no "
                  ".hydra/config.yaml); `genloom runs` lists them", file=sys.stderr)
            return 2
    configs = [resolved_config(path) for path in (a, b)]
    differences = config_differences(*configs)
    runs = [read_run(path) for path in (a, b)]
    metrics = {k: (runs[0].metric(k), runs[1].metric(k))
               for k in sorted({*runs[0].train, *runs[0].val, *runs[1].train, *runs[1].val})}
    if as_json:
        config = {k: {side: value for side, value in zip("ab", v, strict=True) if value is not _ABSENT}
                  for k, v in differences.items()}
        print(json.dumps({"a": str(a), "b": str(b), "config": config,
                          "metrics": {k: list(v) for k, v in metrics.items()},
                          "steps": [runs[0].step, runs[1].step]}, indent=2))
        return 0
    print(f"A: {a}\nB: {b}\n")
    rows = [(k, _shown(va), _shown(vb)) for k, (va, vb) in differences.items()]
    print(_columns(["config key", "A", "B"], rows) if rows else "configs: identical\n", end="")
    print()
    rows = [("step", str(runs[0].step), str(runs[1].step))]
    rows += [(k, _number(va), _number(vb)) for k, (va, vb) in metrics.items()]
    print(_columns(["final metric", "A", "B"], rows), end="")
    return 0


_ABSENT = object()


def resolved_config(run_dir: Path) -> dict:
    """The run's config with interpolations resolved where they can be outside the run."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    try:
        resolved = OmegaConf.to_container(config, resolve=True)
    except Exception:  # noqa: BLE001 - a resolver only the run had (${frozen:...}): keep its text
        resolved = OmegaConf.to_container(config, resolve=False)
    assert isinstance(resolved, dict)
    return resolved


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer.lr": 0.001, ...}``: every leaf under its dotted key (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ, with A's and B's (``_ABSENT`` where one lacks it)."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted(set(flat_a) | set(flat_b))
    return {k: (flat_a.get(k, _ABSENT), flat_b.get(k, _ABSENT)) for k in keys
            if flat_a.get(k, _ABSENT) != flat_b.get(k, _ABSENT)}


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def _columns(header: list[str], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [tuple(header), *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [tuple(header), *rows]) + "\n"
