"""``genloom``: the command line. Parse, build, run; the work happens in :mod:`genloom.jobs`.

``train``, ``sample``, ``eval``, ``serve`` and ``export`` are Hydra applications: everything after the command
is a Hydra override, and ``--cfg job``, ``--help`` and ``-m`` sweeps work as in any Hydra
app. Their config search path is genloom's own ``conf/`` plus the config package each
installed plugin registers. ``plugins`` and ``runs`` import neither torch nor Hydra.

Plugins are loaded before a command runs, with anything they print sent to stderr (so
``genloom plugins --json`` stays valid JSON). Under ``GENLOOM_STRICT_PLUGINS=1`` a broken
plugin ends the command with one message (``genloom plugins`` still prints its report).
Ctrl-C before training starts (while torch, plugins or Hydra load) ends any command with
``genloom: interrupted`` and status 130; every other exception keeps its traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from genloom import __version__
from genloom.plugins import PluginLoadError, PluginSet, active

HYDRA_COMMANDS = {
    "train": "train a pipeline: genloom train pipeline=text [overrides]",
    "sample": "sample a checkpoint: genloom sample checkpoint=DIR [n=4] [prompt=...] [option=value]",
    "eval": "score a checkpoint on its validation split: genloom eval checkpoint=DIR [dataset.path=...]",
    "serve": "serve checkpoints over HTTP: genloom serve checkpoint=DIR | 'models={a: DIR, b: DIR}'",
    "export": "write a checkpoint in another tool's format: genloom export checkpoint=DIR format=hf out=DIR",
}
USAGE = f"""usage: genloom COMMAND [ARGS]

genloom {__version__}: train and sample generative models of text, images and audio.

commands:
  train     {HYDRA_COMMANDS["train"]}
  sample    {HYDRA_COMMANDS["sample"]}
  eval      {HYDRA_COMMANDS["eval"]}
  serve     {HYDRA_COMMANDS["serve"]}
  export    {HYDRA_COMMANDS["export"]}
  plugins   list installed plugins and what they provide: genloom plugins [--json] [--check]
  describe  a pipeline's batch keys (shape, dtype, values) and samples: genloom describe pipeline=NAME
  hooks     the hook reference for plugin authors
  runs      the training runs under outputs/: genloom runs [DIR] [--sort [-]METRIC] [--json] | compare A B
  new-plugin  write a ready-to-install plugin: genloom new-plugin NAME [--modality text|image|audio|other]

`genloom COMMAND --help` shows a command's config groups and options.
Distributed: torchrun --nproc-per-node N -m genloom train ...
"""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # training handles SIGINT itself (checkpoint first); this is start-up
        print("genloom: interrupted", file=sys.stderr)
        return 130


def _main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        print(f"genloom {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command == "plugins":
        return plugins_command(rest)
    if command in HYDRA_COMMANDS:
        try:
            load_plugins_quietly()
        except PluginLoadError as err:
            print(f"genloom: {err}", file=sys.stderr)
            return 1
    if command == "runs":  # before any plugin loads: it reads run directories only
        from genloom.runs import main as list_runs

        return list_runs(rest)
    if command == "hooks":
        from genloom.hookspecs import reference

        print(reference(), end="")
        return 0
    if command == "describe":
        from genloom.describe import main as describe_pipeline

        return describe_pipeline(rest)
    if command == "new-plugin":
        from genloom.scaffold import main as new_plugin

        return new_plugin(rest)
    if command in HYDRA_COMMANDS:
        return run_hydra(command, rest)
    commands = ", ".join([*HYDRA_COMMANDS, "plugins", "describe", "hooks", "new-plugin", "runs"])
    print(f"genloom: unknown command {command!r}; commands: {commands}", file=sys.stderr)
    return 2


def run_hydra(command: str, overrides: list[str]) -> int:
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    from genloom.config import PluginConfigSearchPath, command_overrides, unknown_key_hint

    Plugins.instance().register(PluginConfigSearchPath)
    overrides = command_overrides(command, _distributed_overrides(command, overrides))
    started = []
    held = _HeldStderr()
    task = hydra.main(version_base=None, config_path="conf", config_name=command)(
        _job(command, started, held.release)
    )
    saved_argv = sys.argv
    sys.argv = [f"genloom {command}", *overrides]
    status = 0
    try:
        with held:
            task()
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
    hydra_said = held.release()
    hint = unknown_key_hint(command, overrides) if status and not started else None
    # Hydra's text for an unknown key advises `+key=`, which would fail here: ours replaces it.
    if not (hint and f"'{hint.key}'" in hydra_said):
        sys.stderr.write(hydra_said)
    if hint:
        print(hint.message, file=sys.stderr)
    return status


class _HeldStderr:
    """What Hydra writes to stderr before the job starts, held so a better message can replace it.

    :meth:`release` (called when the job starts, and at the end) puts the real stream back
    and returns what was held, which the caller writes.
    """

    def __init__(self) -> None:
        self.real = sys.stderr
        self.buffer = io.StringIO()

    def __enter__(self) -> _HeldStderr:
        self.real, sys.stderr = sys.stderr, self.buffer
        return self

    def __exit__(self, *exc: object) -> None:
        if sys.stderr is self.buffer:
            sys.stderr = self.real

    def release(self) -> str:
        if sys.stderr is self.buffer:
            sys.stderr = self.real
        text, self.buffer = self.buffer.getvalue(), io.StringIO()
        return text


def _distributed_overrides(command: str, overrides: list[str]) -> list[str]:
    """Under torchrun every rank uses rank 0's run directory, and only rank 0 writes to it.

    Hydra names the run directory after the time; ranks that start a second apart would
    disagree, so rank 0's time is broadcast first. The other ranks write neither Hydra's
    ``.hydra/`` record nor a log file there: their log goes to the terminal.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return overrides  # (and torch is not imported: --help and --cfg stay fast)
    from genloom import distributed

    rank, _ = distributed.launched_ranks()
    distributed.join()
    stamp = distributed.broadcast_from_main(time.strftime("%Y-%m-%d/%H-%M-%S"))
    extra = [] if any(o.startswith("hydra.run.dir=") for o in overrides) else [
        f"hydra.run.dir=outputs/{command}/{stamp}"]
    if rank > 0:
        extra += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return [*overrides, *extra]


def _job(command: str, started: list[bool], release: Callable[[], str]):  # noqa: ANN202 - Hydra inspects it
    def job(cfg):  # noqa: ANN001, ANN202
        # Imported here so that `--help` and `--cfg` answer without loading torch.
        from genloom import jobs

        started.append(True)
        sys.stderr.write(release())  # the job's own output is not held
        return jobs.run(command, cfg)

    return job


def plugins_command(args: list[str]) -> int:
    unknown = [a for a in args if a not in ("--json", "--check")]
    if unknown:
        print(f"genloom plugins: unknown argument {unknown[0]!r}; "
              "usage: genloom plugins [--json] [--check]", file=sys.stderr)
        return 2
    status = 0
    try:
        plugin_set = load_plugins_quietly()
    except PluginLoadError as err:  # strict mode: the message, the report as usual, then fail
        assert err.plugin_set is not None
        print(f"genloom: {err}", file=sys.stderr)
        plugin_set, status = err.plugin_set, 1
    if "--check" in args:  # the doctor: imports every component, so it loads torch
        from genloom import doctor

        with contextlib.redirect_stdout(sys.stderr):  # a component module may print when imported
            report = doctor.check(plugin_set)
        if "--json" in args:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            print(doctor.describe(report), end="")
        return 1 if report.problems else status
    if "--json" in args:
        print(json.dumps([p.as_dict() for p in plugin_set.plugins], indent=2))
    else:
        print(describe(plugin_set), end="")
    return status


def load_plugins_quietly() -> PluginSet:
    """The process's plugins, with whatever they print while loading sent to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        return active()


def describe(plugin_set: PluginSet) -> str:
    """The human-readable listing of ``genloom plugins``."""
    if not plugin_set.plugins:
        return "no genloom plugins installed (pip install genloom-text, for example)\n"
    lines = []
    for p in plugin_set.plugins:
        dist = f"{p.distribution} {p.version}" if p.distribution else p.module
        lines.append(f"{p.name} ({dist}): {p.status}")
        if p.error:
            lines.append(f"  error: {p.error}")
        lines += [f"  clash: {clash}" for clash in p.clashes]
        if p.components:
            lines.append("  components:")
            lines += [f"    {kind + ':':18} {', '.join(sorted(names))}"
                      for kind, names in sorted(p.components.items())]
        if p.config_groups:
            lines.append("  config groups:")
            lines += [f"    {group + '=':18} {', '.join(options)}"
                      for group, options in p.config_groups.items()]
    return "\n".join(lines) + "\n"
