"""``genloom``: the command line. Parse, build, run; the work happens in :mod:`genloom.jobs`.

``train``, ``sample``, ``eval`` and ``serve`` are Hydra applications: everything after the command
is a Hydra override, and ``--cfg job``, ``--help`` and ``-m`` sweeps work as in any Hydra
app. Their config search path is genloom's own ``conf/`` plus the config package each
installed plugin registers. ``plugins`` imports neither torch nor Hydra.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

from genloom import __version__
from genloom.plugins import PluginSet, active

HYDRA_COMMANDS = {
    "train": "train a pipeline: genloom train pipeline=text [overrides]",
    "sample": "sample a checkpoint: genloom sample checkpoint=DIR [n=4] [prompt=...]",
    "eval": "score a checkpoint on its validation split: genloom eval checkpoint=DIR",
    "serve": "serve checkpoints over HTTP: genloom serve checkpoint=DIR | 'models={a: DIR, b: DIR}'",
}
USAGE = f"""usage: genloom COMMAND [ARGS]

genloom {__version__}: train and sample generative models of text, images and audio.

commands:
  train     {HYDRA_COMMANDS["train"]}
  sample    {HYDRA_COMMANDS["sample"]}
  eval      {HYDRA_COMMANDS["eval"]}
  serve     {HYDRA_COMMANDS["serve"]}
  plugins   list installed plugins and what they provide: genloom plugins [--json] [--check]
  hooks     the hook reference for plugin authors
  new-plugin  write a ready-to-install plugin: genloom new-plugin NAME [--modality text|image|audio|other]

`genloom COMMAND --help` shows a command's config groups and options.
Distributed: torchrun --nproc-per-node N -m genloom train ...
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        print(f"genloom {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command == "plugins":
        return plugins_command(rest)
    if command == "hooks":
        from genloom.hookspecs import reference

        print(reference(), end="")
        return 0
    if command == "new-plugin":
        from genloom.scaffold import main as new_plugin

        return new_plugin(rest)
    if command in HYDRA_COMMANDS:
        return run_hydra(command, rest)
    commands = ", ".join([*HYDRA_COMMANDS, "plugins", "hooks", "new-plugin"])
    print(f"genloom: unknown command {command!r}; commands: {commands}", file=sys.stderr)
    return 2


def run_hydra(command: str, overrides: list[str]) -> int:
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    from genloom.config import PluginConfigSearchPath, unknown_key_hint

    Plugins.instance().register(PluginConfigSearchPath)
    overrides = _distributed_overrides(command, overrides)
    started = []
    task = hydra.main(version_base=None, config_path="conf", config_name=command)(
        _job(command, started)
    )
    saved_argv = sys.argv
    sys.argv = [f"genloom {command}", *overrides]
    status = 0
    try:
        task()
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()
    if status and not started:
        hint = unknown_key_hint(command, overrides)
        if hint:
            print(hint, file=sys.stderr)
    return status


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


def _job(command: str, started: list[bool]):  # noqa: ANN202 - Hydra inspects the function
    def job(cfg):  # noqa: ANN001, ANN202
        # Imported here so that `--help` and `--cfg` answer without loading torch.
        from genloom import jobs

        started.append(True)
        return jobs.run(command, cfg)

    return job


def plugins_command(args: list[str]) -> int:
    unknown = [a for a in args if a not in ("--json", "--check")]
    if unknown:
        print(f"genloom plugins: unknown argument {unknown[0]!r}; "
              "usage: genloom plugins [--json] [--check]", file=sys.stderr)
        return 2
    plugin_set = active()
    if "--check" in args:  # the doctor: imports every component, so it loads torch
        from genloom import doctor

        report = doctor.check(plugin_set)
        if "--json" in args:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            print(doctor.describe(report), end="")
        return 1 if report.problems else 0
    if "--json" in args:
        print(json.dumps([p.as_dict() for p in plugin_set.plugins], indent=2))
    else:
        print(describe(plugin_set), end="")
    return 0


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
        if p.components:
            lines.append("  components:")
            lines += [f"    {kind + ':':18} {', '.join(sorted(names))}"
                      for kind, names in sorted(p.components.items())]
        if p.config_groups:
            lines.append("  config groups:")
            lines += [f"    {group + '=':18} {', '.join(options)}"
                      for group, options in p.config_groups.items()]
    return "\n".join(lines) + "\n"
