"""Start-up: how long the commands that do no training take, and whether they load torch.

Times ``genloom plugins`` and ``genloom train pipeline=text --cfg job`` (compose and print
the config, train nothing) as fresh processes, median of ``--reps``, and reads
``python -X importtime`` to see whether each imported torch.

    python benchmarks/startup.py
    python benchmarks/startup.py --quick      # 1 repetition (smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "genloom plugins": ["plugins"],
    "genloom train pipeline=text --cfg job": ["train", "pipeline=text", "--cfg", "job"],
}


def wall_time(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genloom", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def imports_torch(args: list[str]) -> bool:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "genloom", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    # Each line ends "| <module>", indented by nesting depth.
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="1 repetition")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps

    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for command in COMMANDS.values():
        wall_time(command)  # warm the file cache
    for _ in range(reps):
        for name, command in COMMANDS.items():
            times[name].append(wall_time(command))

    print(f"\nstart-up, {time.strftime('%Y-%m-%d')}, median of {reps} (fresh processes)")
    width = max(map(len, COMMANDS))
    print(f"{'command':<{width}}  {'seconds':>8}  {'min':>6}  imports torch")
    for name, command in COMMANDS.items():
        print(
            f"{name:<{width}}  {statistics.median(times[name]):>8.3f}  {min(times[name]):>6.3f}  "
            f"{'yes' if imports_torch(command) else 'no'}"
        )
    print("target: genloom plugins < 1 s, without importing torch")


if __name__ == "__main__":
    main()
