"""The fault-trial script still runs and finds nothing: kills, signals and a second trainer cost nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_trials.py"


@pytest.mark.slow
def test_kills_signals_and_a_second_trainer_cost_no_checkpoint_and_no_resume(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--kills", "1", "--signals", "1", "--chain", "2", "--pairs", "1",
         "--seed", "3", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=1500,  # minutes on a busy 2-core machine
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = dict(line.rsplit(None, 1) for line in done.stdout.splitlines() if not line.startswith("wall"))
    assert rows["kill -9"] == "1" and rows["SIGTERM/SIGINT"] == "1"
    assert rows["two trainers on one run directory"] == "1"
    assert rows["corrupt checkpoints"] == "0" and rows["failed resumes"] == "0"
