"""Under torchrun: two CPU processes (gloo) train like one process with twice the batch.

Each test starts real processes with ``python -m torch.distributed.run`` on the fake
plugin, so these are end-to-end: process group from the environment, DDP, sharding,
rank-0 files, resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from genloom import checkpoint
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

LAUNCHER = Path(__file__).parent / "fake_torchrun.py"
COMMON = ["pipeline=counting", "device=cpu", "trainer.progress=false", "trainer.log_every=1",
          "trainer.eval_every=3", "trainer.eval_batches=2", "trainer.warmup_steps=1",
          "trainer.checkpoint_every=3", "dataset.examples=96"]


def command(*args: str, nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, str(LAUNCHER), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            str(LAUNCHER), *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def genloom(*args: str, nproc: int = 1, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    argv = command(*args, nproc=nproc)
    result = subprocess.run(argv, capture_output=True, text=True, env={**ENV, **(env or {})}, cwd=cwd,
                            timeout=300, check=False)
    assert result.returncode == 0, f"{argv}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def start(*args: str, nproc: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(command(*args, nproc=nproc), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**ENV, **(env or {})})


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(run / "checkpoints" / latest / "model.safetensors")


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    """Six steps of batch 8 in one process: what the two-process runs must match."""
    run = tmp_path_factory.mktemp("one")
    genloom("train", *COMMON, "trainer.max_steps=6", "trainer.batch_size=8", f"hydra.run.dir={run}")
    return run


def test_two_processes_with_batch_b_train_like_one_with_batch_2b(one_process_run: Path,
                                                                 tmp_path: Path) -> None:
    genloom("train", *COMMON, "trainer.max_steps=6", "trainer.batch_size=4",
            f"hydra.run.dir={tmp_path / 'two'}", nproc=2)
    one, two = final_weights(one_process_run), final_weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    losses = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (one_process_run / "metrics.jsonl").read_text().splitlines()]
    train = [m["loss"] for m in losses if m["split"] == "train"]
    assert train == pytest.approx([m["loss"] for m in single if m["split"] == "train"], rel=1e-5)


def test_only_rank_0_writes_and_a_killed_run_resumes_under_torchrun(tmp_path: Path) -> None:
    # Every rank holds after step 51 until the signal comes, so it lands mid-run however fast
    # the machine (a 3000-step run alone once finished before it arrived).
    run, steps = tmp_path / "run", ["trainer.max_steps=3000", "trainer.batch_size=4",
                                    "trainer.checkpoint_every=50", "trainer.log_every=10"]
    killed = start("train", *COMMON, *steps, f"hydra.run.dir={run}", nproc=2, env={"FAKE_PAUSE_AT": "51"})
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "latest").exists():  # let it get going, then stop it
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
        time.sleep(0.2)
    killed.send_signal(signal.SIGTERM)  # torchrun passes it to both ranks
    out, err = killed.communicate(timeout=120)
    assert killed.returncode != 0, out
    saved = int((run / "checkpoints" / "latest").read_text().strip().removeprefix("step_"))
    # The signal's own save at the step held (50, the checkpoint the test waited for, only if
    # the signal beat the trainer's check right after that save).
    assert saved in (50, 51), err[-3000:]

    written = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert written.count("metrics.jsonl") == 1 and written.count("plugins.json") == 1
    assert written.count(".hydra/config.yaml") == 1 and written.count("train.log") == 1
    steps_logged = [m["step"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                    if m["split"] == "train"]
    assert steps_logged == sorted(set(steps_logged))  # one writer: no step logged twice

    # Both ranks resume from the same checkpoint and end where one uninterrupted process ends.
    genloom("train", *COMMON, *steps, "trainer.resume=true", f"hydra.run.dir={run}", nproc=2)
    genloom("train", *COMMON, "trainer.max_steps=3000", "trainer.batch_size=8", "trainer.checkpoint_every=50",
            f"hydra.run.dir={tmp_path / 'straight'}")
    resumed, straight = final_weights(run), final_weights(tmp_path / "straight")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-4, atol=1e-5)


def test_a_stop_asked_on_rank_1_alone_stops_every_rank_at_that_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    genloom("train", *COMMON, "trainer.max_steps=30", "trainer.batch_size=4", f"hydra.run.dir={run}",
            nproc=2, env={"FAKE_STOP_AT": "1:4"})
    # Step 4 is off the checkpoint grid (every 3): the stop itself saved it, on rank 0.
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000004"
    ended = [json.loads((run / f"ended_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [e["step"] for e in ended] == [4, 4] and [e["reason"] for e in ended] == ["stopped"] * 2
    # Rank 0, which logs, names the plugin, its reason and the rank that asked.
    assert ended[0]["stop_reason"] == "plugin 'fake_stopper': asked at step 4 (rank 1)"
    log = (run / "train.log").read_text()
    assert "training stopped at step 4 of 30 by plugin 'fake_stopper': asked at step 4 (rank 1)" in log


def test_ranks_agree_on_the_run_directory_without_hydra_run_dir(tmp_path: Path) -> None:
    genloom("train", *COMMON, "trainer.max_steps=2", "trainer.batch_size=4", nproc=2, cwd=tmp_path)
    (run,) = [p.parent for p in (tmp_path / "outputs" / "train").rglob("metrics.jsonl")]
    assert (run / "checkpoints" / "latest").is_file()
    assert len(list((tmp_path / "outputs" / "train").glob("*/*"))) == 1


def test_fsdp_trains_like_one_process_and_its_checkpoint_samples_in_one(one_process_run: Path,
                                                                        tmp_path: Path) -> None:
    genloom("train", *COMMON, "trainer.max_steps=6", "trainer.batch_size=2", "trainer.grad_accum=2",
            "trainer.strategy=fsdp", f"hydra.run.dir={tmp_path / 'fsdp'}", nproc=2)
    one, sharded = final_weights(one_process_run), final_weights(tmp_path / "fsdp")
    assert one.keys() == sharded.keys()
    for key in one:
        torch.testing.assert_close(sharded[key], one[key], rtol=1e-5, atol=1e-6)
    # The gathered checkpoint is an ordinary one: one process samples it.
    genloom("sample", f"checkpoint={tmp_path / 'fsdp'}", "n=2", "device=cpu",
            f"hydra.run.dir={tmp_path / 'sample'}")
    assert len(list((tmp_path / "sample" / "samples").glob("sample_*.txt"))) == 2
    # And an FSDP run resumes from it (the step-3 checkpoint) to the same end.
    genloom("train", *COMMON, "trainer.max_steps=6", "trainer.batch_size=4", "trainer.strategy=fsdp",
            f"trainer.resume={tmp_path / 'fsdp' / 'checkpoints' / 'step_000003'}",
            f"hydra.run.dir={tmp_path / 'resumed'}", nproc=2)
    resumed = final_weights(tmp_path / "resumed")
    for key in one:
        torch.testing.assert_close(resumed[key], one[key], rtol=1e-5, atol=1e-6)


def test_ddp_ranks_keep_the_one_process_ema_and_fsdp_refuses_one(tmp_path: Path) -> None:
    ema = ["trainer.ema.decay=0.9", "trainer.lr=0.05", "trainer.max_steps=6"]
    genloom("train", *COMMON, *ema, "trainer.batch_size=8", f"hydra.run.dir={tmp_path / 'one'}")
    genloom("train", *COMMON, *ema, "trainer.batch_size=4", f"hydra.run.dir={tmp_path / 'two'}", nproc=2)
    one, two = (checkpoint.read_ema(checkpoint.resolve(tmp_path / run)) for run in ("one", "two"))
    assert one.keys() == two.keys() == {"logits.weight", "bias"}
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    refused = subprocess.run(
        command("train", *COMMON, *ema, "trainer.batch_size=4", "trainer.strategy=fsdp",
                f"hydra.run.dir={tmp_path / 'fsdp'}", nproc=2),
        capture_output=True, text=True, env=ENV, timeout=300, check=False,
    )
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0
    # Each rank says it in one line (torchrun then adds its own report of the failed ranks).
    assert "trainer.ema.decay=0.9 with trainer.strategy=fsdp: an EMA of sharded weights is not" in said
