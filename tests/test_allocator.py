"""genloom.allocator: a training step reuses the memory the last step freed (glibc on Linux)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from genloom import allocator, cli

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

# A step's worth of activations: ten 8 MiB tensors, filled (so their pages are touched), freed.
STEPS = textwrap.dedent("""
    import json, resource, sys
    import torch
    from genloom import allocator

    kept = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None

    def step():
        activations = [torch.ones(2 << 20) for _ in range(10)]
        del activations

    step(); step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
""")


def run_steps(mode: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_activations_are_reused_instead_of_faulted_in_again():
    # glibc's defaults: the 80 MiB freed at the heap's top is trimmed and faulted in again
    # (20,480 pages each time), in every step or only some, as the process's history moved
    # glibc's thresholds; kept, every step reuses it.
    assert run_steps("default")["faults"] > 10_000
    kept = run_steps("keep")
    assert kept["kept"] is True
    assert kept["faults"] < 1_000


def test_a_malloc_tuned_by_the_environment_is_left_alone():
    assert run_steps("keep", env={"MALLOC_ARENA_MAX": "2"})["kept"] is False
    assert run_steps("keep", env={"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000"})["kept"] is False


def test_training_keeps_freed_memory(fake_plugins, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    args = ["train", "pipeline=counting", "trainer=debug", "trainer.progress=false", "trainer.max_steps=2",
            f"hydra.run.dir={tmp_path}"]
    assert cli.main(args) == 0
    assert calls == [1]
