"""Every benchmark in turn, as ``make bench`` runs them, then how long each took.

Each benchmark is its own process and prints its own table as it goes (docs/benchmarks.md
holds them, with what each measures). One that fails does not stop the rest; the run exits
non-zero and names it at the end. ``--quick`` runs each in its smoke-test size (what
``tests/test_benchmarks_smoke.py`` checks one by one): the whole chain in about 7 minutes,
figures that mean nothing, every table printed. The full run takes hours on 2 CPU cores
(the summary gives each benchmark's time; text_train.py's large size is most of it).

    python benchmarks/run_all.py                       # make bench
    python benchmarks/run_all.py --quick               # make bench-smoke
    python benchmarks/run_all.py --only text_train text_sample
    python benchmarks/run_all.py --list
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent

# (script, arguments of the full run, arguments of the quick run), in make bench's order.
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("startup.py", [], ["--quick"]),
    ("startup_scaling.py", [], ["--quick"]),
    ("text_train.py", [], ["--quick"]),
    ("compile_cost.py", [], ["--quick"]),
    ("text_profile.py", ["--size", "large"], ["--quick"]),
    ("text_scaling.py", [], ["--quick"]),
    ("text_sample.py", ["--scaling"], ["--quick", "--scaling"]),
    ("runtime_overhead.py", [], ["--quick"]),
    ("hook_overhead.py", [], []),
    ("loss_plot.py", [], ["--quick"]),
    ("ema.py", [], ["--pipelines", "text_debug", "--schedules", "constant", "--steps", "4", "--every", "2",
                    "--eval-batches", "1", "--workdir", "{tmp}/ema"]),
    ("text_tokenizers.py", [], ["--tiny", "--tokenizers", "bytes", "bpe-512"]),
    ("text_data.py", [], ["--quick"]),
    ("hf_export.py", [], ["--sizes", "tiny"]),
    ("hf_slots.py", [], ["--quick"]),
    ("lora.py", [], ["--tiny"]),
    ("gpu.py", [], ["--tiny"]),
    ("image.py", [], ["--quick", "--approaches", "vae", "--workdir", "{tmp}/image"]),
    ("image_folder.py", [], ["--quick"]),
    ("audio.py", [], ["--quick", "--approaches", "vae", "--workdir", "{tmp}/audio"]),
    ("loggers.py", [], ["--quick"]),
    ("serve.py", [], ["--quick"]),
    ("serve_soak.py", ["--duration", "600"], ["--duration", "20"]),
    ("fault_trials.py", [], ["--kills", "1", "--signals", "1", "--chain", "2", "--pairs", "1"]),
]
LIBRARIES = {"run_all.py", "trainer_timing.py", "quality.py", "serve_hf_app.py"}  # used by the others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each benchmark in its smoke-test size")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these benchmarks (.py optional)")
    parser.add_argument("--list", action="store_true", help="name the benchmarks and their options, run none")
    args = parser.parse_args()
    chosen = BENCHMARKS
    if args.only:
        wanted = {name.removesuffix(".py") + ".py" for name in args.only}
        unknown = wanted - {script for script, _, _ in BENCHMARKS}
        if unknown:
            parser.error(f"no benchmark named {', '.join(sorted(unknown))}; --list names them")
        chosen = [entry for entry in BENCHMARKS if entry[0] in wanted]
    if args.list:
        for script, full, quick in chosen:
            print(f"{script:22s} {' '.join(quick if args.quick else full)}")
        return 0

    timings: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="genloom-bench-") as tmp:
        for script, full, quick in chosen:
            options = [option.format(tmp=tmp) for option in (quick if args.quick else full)]
            command = [sys.executable, str(HERE / script), *options]
            print(f"\n=== {script} {' '.join(command[2:])}", flush=True)
            start = time.perf_counter()
            status = subprocess.run(command).returncode
            timings.append((script, time.perf_counter() - start, status))

    print(f"\n=== {'smoke run' if args.quick else 'make bench'}: {len(timings)} benchmarks, "
          f"{sum(seconds for _, seconds, _ in timings) / 60:.1f} minutes")
    for script, seconds, status in timings:
        print(f"{script:22s} {seconds / 60:7.1f} min  {'ok' if status == 0 else f'FAILED (exit {status})'}")
    failed = [script for script, _, status in timings if status != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
