"""Start-up against the number of installed plugins: ``genloom plugins`` with 0 to 50 more.

Generates ``max(--counts)`` fake plugin distributions in a temporary folder, each shaped like
the example plugin (``examples/genloom-example-plugin``): a package whose ``plugin`` module
registers four components by import path and a config package of five YAML files, and a
``.dist-info`` with ``METADATA`` (``Requires-Dist: genloom``) and a ``genloom`` entry point.
Nothing is installed: one folder per count holds that many side by side, as a
``site-packages`` would, and is put on ``PYTHONPATH`` of the measured process, where
``importlib.metadata`` finds the distributions as it finds installed ones. The built-in
plugins (text, image, audio, hf, blocks, loggers) are there in every row.

Each count is timed as fresh processes, counts interleaved (0 10 25 50 0 10 ...), medians of
``--reps``; one more process per count times, inside, finding the entry points
(``importlib.metadata``) and loading the plugins (importing each hook module, running its
registration hooks, listing its config package's groups).

    python benchmarks/startup_scaling.py
    python benchmarks/startup_scaling.py --quick      # 0 and 3 plugins, 1 repetition (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = '''"""Fake plugin {i}: registers by import path only, as a real plugin must."""

from genloom.hookspecs import hookimpl


@hookimpl
def genloom_register_components(register):
    for kind in ("generator", "dataset", "encoder", "decoder"):
        register(kind, f"fake{i}_{{kind}}", f"genloom_fake{i}.model:{{kind.title()}}", summary="a fake {i}")


@hookimpl
def genloom_register_config(register):
    register("genloom_fake{i}.conf")
'''
CONFIGS = {  # group -> file body, named fake<i>.yaml in the plugin's config package
    "generator": "name: fake{i}_generator\nwidth: 32\n",
    "dataset": "name: fake{i}_dataset\nsize: 10\n",
    "encoder": "name: fake{i}_encoder\n",
    "decoder": "name: fake{i}_decoder\n",
    "pipeline": "# @package _global_\ndefaults:\n  - /generator: fake{i}\n  - /dataset: fake{i}\n"
                "  - /encoder: fake{i}\n  - /decoder: fake{i}\npipeline:\n  name: fake{i}\n",
}


def write_plugins(folder: Path, count: int) -> Path:
    """``folder`` holding ``count`` fake distributions side by side, as in a ``site-packages``."""
    folder.mkdir(parents=True)
    for i in range(count):
        package = folder / f"genloom_fake{i}"
        (package / "conf").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "plugin.py").write_text(PLUGIN.format(i=i))
        (package / "conf" / "__init__.py").write_text("")
        for group, body in CONFIGS.items():
            (package / "conf" / group).mkdir()
            (package / "conf" / group / f"fake{i}.yaml").write_text(body.format(i=i))
        info = folder / f"genloom_fake{i}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: genloom-fake{i}\nVersion: 0.1\nRequires-Dist: genloom\n")
        (info / "entry_points.txt").write_text(f"[genloom]\nfake{i} = genloom_fake{i}.plugin\n")
    return folder


def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(folder))
    return subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True, text=True)


def wall_time(folder: Path, count: int) -> float:
    start = time.perf_counter()
    done = run(folder, "-m", "genloom", "plugins")
    seconds = time.perf_counter() - start
    listed = sum(f"genloom-fake{i} " in done.stdout for i in range(count))
    if listed != count:
        raise SystemExit(f"genloom plugins listed {listed} of the {count} fake plugins:\n{done.stdout}")
    return seconds


def breakdown() -> None:
    """In a fresh process: seconds to find the entry points, to load (import, register) the plugins."""
    start = time.perf_counter()
    from genloom.plugins import entry_point_sources, load_plugins

    imported = time.perf_counter()
    sources = entry_point_sources()
    found = time.perf_counter()
    plugin_set = load_plugins(sources)
    loaded = time.perf_counter()
    print(json.dumps({
        "import genloom": imported - start, "find": found - imported, "load": loaded - found,
        "import plugins": sum(p.import_seconds or 0 for p in plugin_set.plugins),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 10, 25, 50])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="0 and 3 plugins, 1 repetition")
    parser.add_argument("--breakdown", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.breakdown:
        return breakdown()
    counts, reps = ([0, 3], 1) if args.quick else (args.counts, args.reps)

    with tempfile.TemporaryDirectory(prefix="genloom-fake-plugins-") as tmp:
        folders = {count: write_plugins(Path(tmp) / f"with-{count}", count) for count in counts}
        for count in counts:
            wall_time(folders[count], count)  # warm the file cache
        times: dict[int, list[float]] = {count: [] for count in counts}
        for _ in range(reps):
            for count in counts:
                times[count].append(wall_time(folders[count], count))
        parts = {count: json.loads(run(folders[count], __file__, "--breakdown").stdout) for count in counts}

    base = statistics.median(times[counts[0]])
    print(f"\ngenloom plugins start-up against extra installed plugins, {time.strftime('%Y-%m-%d')}, "
          f"median of {reps} fresh processes, counts interleaved")
    print("| extra plugins | seconds | min | over none | per extra plugin ms "
          "| find entry points s | load plugins s | of which importing them s |")
    print("|---|---|---|---|---|---|---|---|")
    for count in counts:
        median = statistics.median(times[count])
        per = f"{(median - base) / count * 1000:.1f}" if count else "-"
        part = parts[count]
        print(f"| {count} | {median:.3f} | {min(times[count]):.3f} | {median - base:+.3f} | {per} "
              f"| {part['find']:.3f} | {part['load']:.3f} | {part['import plugins']:.3f} |")
    print("(find, load: one more fresh process per count, timed inside; every row has the built-in plugins)")


if __name__ == "__main__":
    main()
