"""genloom.allocator: a training step reuses the memory the last step freed (glibc on Linux)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from genloom import allocator, cli

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

# A step's worth of activations: ten 8 MiB blocks from malloc, filled (so their pages are
# touched), freed. Through malloc itself rather than torch tensors: torch and Python put small
# objects among the blocks, so whether glibc's defaults trim the freed memory depended on
# where they landed (2,048 to 102,240 faults over five steps); with raw blocks freed in
# reverse order the freed 80 MiB is always the heap's top.
STEPS = textwrap.dedent("""
    import ctypes, json, resource, sys
    from genloom import allocator

    kept = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 8 << 20

    def step():
        blocks = [libc.malloc(SIZE) for _ in range(10)]
        for block in blocks:
            ctypes.memset(block, 1, SIZE)
        for block in reversed(blocks):
            libc.free(block)

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


STEP_PAGES = 10 * (8 << 20) // 4096  # a step's 80 MiB in 4 KiB pages: 20,480


def test_freed_activations_are_reused_instead_of_faulted_in_again():
    # glibc's defaults trim the freed 80 MiB at the heap's top and every step faults it in
    # again (measured 102,240 faults over 5 steps); kept, the steps reuse it (measured 0).
    assert run_steps("default")["faults"] > 4 * STEP_PAGES
    kept = run_steps("keep")
    assert kept["kept"] is True
    assert kept["faults"] < STEP_PAGES // 4


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
