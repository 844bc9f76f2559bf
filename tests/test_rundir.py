"""One writer per run directory: a second trainer is refused, a killed one's lock is taken over."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from genloom import cli, rundir
from genloom.rundir import RunDirectoryBusy, RunDirLock

TRAIN = ["train", "pipeline=counting", "trainer=debug", "trainer.progress=false"]


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock on ``tmp_path / 'run'`` until the test ends."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from genloom.rundir import RunDirLock
        with RunDirLock(Path({str(tmp_path / 'run')!r})):
            print("held", flush=True)
            sys.stdin.read()
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    yield process
    process.stdin.close()
    process.wait(timeout=30)


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, holder):
    with pytest.raises(RunDirectoryBusy) as caught:
        RunDirLock(tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"run directory {tmp_path / 'run'} is in use by another genloom process (pid "
                              f"{holder.pid} on ")
    assert "choose another hydra.run.dir" in message


def test_the_lock_goes_with_its_holder(tmp_path, holder):
    holder.stdin.close()
    holder.wait(timeout=30)
    with RunDirLock(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / rundir.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / rundir.LOCK_FILE).exists()


def test_a_killed_holders_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    (tmp_path / rundir.LOCK_FILE).write_text(json.dumps({"pid": pid, "host": "here", "started": "then"}))
    with caplog.at_level(logging.WARNING, logger="genloom.rundir"), RunDirLock(tmp_path):
        pass
    assert f"left by pid {pid} on here, started then, which ended without releasing it" in caplog.text


def test_genloom_train_refuses_a_run_directory_another_trainer_holds(fake_plugins, tmp_path, holder, capsys):
    run = tmp_path / "run"
    assert cli.main([*TRAIN, f"hydra.run.dir={run}"]) == 1
    out = capsys.readouterr().out
    assert f"is in use by another genloom process (pid {holder.pid} on " in out
    assert "Traceback" not in out
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()


def test_genloom_train_releases_its_lock(fake_plugins, tmp_path):
    assert cli.main([*TRAIN, f"hydra.run.dir={tmp_path}"]) == 0
    assert not (tmp_path / rundir.LOCK_FILE).exists()
    assert cli.main([*TRAIN, "trainer.max_steps=6", "trainer.resume=true", f"hydra.run.dir={tmp_path}"]) == 0
