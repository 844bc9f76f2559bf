"""The shared Trainer: schedule, sharding, exact resume, signals, non-finite losses."""

import collections
import json
import math
import os
import shutil
import signal

import fake_plugin
import pytest
import torch
from genloom import checkpoint, cli, hookimpl, plugins
from genloom.plugins import PluginSource, load_plugins
from genloom.trainer import Trainer, TrainerSettings, epoch_batches
from safetensors import SafetensorError
from safetensors.torch import load_file

RESUMABLE = [
    "pipeline=counting", "trainer=debug", "trainer.progress=false", "trainer.max_steps=6",
    "trainer.batch_size=8", "trainer.grad_accum=2", "trainer.checkpoint_every=100",
    "trainer.eval_every=100", "trainer.log_every=1",
]


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["split"] == "train"}


class Interrupter:
    """A plugin that sends this process a signal after a given step."""

    def __init__(self, at_step: int, signum: int = signal.SIGINT) -> None:
        self.at_step, self.signum = at_step, signum

    @hookimpl
    def genloom_train_step_end(self, step, metrics):
        if step == self.at_step:
            os.kill(os.getpid(), self.signum)


@pytest.fixture
def with_interrupter():
    def install(at_step, signum=signal.SIGINT):
        extra = PluginSource("interrupter", lambda: Interrupter(at_step, signum), "tests")
        plugins.set_active(load_plugins([fake_plugin.source(), extra], strict=True, disabled=[]))

    yield install
    plugins.set_active(None)


def test_warmup_then_cosine_to_the_floor():
    s = TrainerSettings(max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(55) == pytest.approx(0.55)
    assert s.lr_at(100) == pytest.approx(0.1)


def test_settings_reject_nonsense():
    with pytest.raises(ValueError, match="trainer.batch_size=0 must be at least 1"):
        TrainerSettings(batch_size=0)
    with pytest.raises(TypeError):
        TrainerSettings(learning_rate=1.0)


def test_ranks_see_disjoint_shards_that_match_one_big_batch():
    single = epoch_batches(20, 4, seed=3, epoch=1)
    ranks = [epoch_batches(20, 2, seed=3, epoch=1, rank=r, world_size=2) for r in (0, 1)]
    assert not set(sum(ranks[0], [])) & set(sum(ranks[1], []))
    for step, big_batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(big_batch)
    assert epoch_batches(20, 4, seed=3, epoch=1) == single
    assert epoch_batches(20, 4, seed=3, epoch=2) != single


def test_sigint_saves_and_resume_continues_the_same_loss_curve(fake_plugins, with_interrupter, tmp_path):
    assert cli.main(["train", *RESUMABLE, f"hydra.run.dir={tmp_path / 'straight'}"]) == 0
    straight = losses(tmp_path / "straight")

    with_interrupter(at_step=2)  # mid-epoch: 3 optimizer steps of 2 micro-batches per epoch
    run = tmp_path / "interrupted"
    assert cli.main(["train", *RESUMABLE, f"hydra.run.dir={run}"]) == 128 + signal.SIGINT
    assert (run / "checkpoints" / "latest").read_text() == "step_000002"

    plugins.set_active(load_plugins([fake_plugin.source()], strict=True, disabled=[]))
    assert cli.main(["train", *RESUMABLE, "trainer.resume=true", f"hydra.run.dir={run}"]) == 0
    resumed = losses(run)
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    assert resumed == straight  # exactly: same data order, optimizer state and RNG


def test_sigterm_also_saves_before_exiting(fake_plugins, with_interrupter, tmp_path):
    with_interrupter(at_step=3, signum=signal.SIGTERM)
    assert cli.main(["train", *RESUMABLE, f"hydra.run.dir={tmp_path}"]) == 128 + signal.SIGTERM
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_000003"


def test_resume_without_a_checkpoint_says_how(fake_plugins, tmp_path, capsys):
    assert cli.main(["train", *RESUMABLE, "trainer.resume=true", f"hydra.run.dir={tmp_path}"]) == 1
    assert "holds no checkpoint; point hydra.run.dir at the run to continue" in capsys.readouterr().out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    fake_plugins, tmp_path, capsys, monkeypatch
):
    real_loss = fake_plugin.components.Bigram.loss
    calls = {"n": 0}

    def poisoned(self, batch):
        out = real_loss(self, batch)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 3:  # the third optimizer step goes bad
                out["loss"] = out["loss"] * math.nan
        return out

    monkeypatch.setattr(fake_plugin.components.Bigram, "loss", poisoned)
    args = ["train", "pipeline=counting", "trainer=debug", "trainer.progress=false",
            "trainer.log_every=4", f"hydra.run.dir={tmp_path}"]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "the loss became non-finite (nan) between steps 3 and 4" in out
    assert "Last good checkpoint: " + str(tmp_path / "checkpoints" / "step_000002") in out
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_000002"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000002"]
    state = load_file(tmp_path / "checkpoints" / "step_000002" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in state.values())  # the kept weights are finite


GRID = [  # logs every 2 steps, evaluates every 4, saves every 4 (keeping 2)
    "pipeline=counting", "trainer=debug", "trainer.progress=false", "trainer.max_steps=8",
    "trainer.batch_size=8", "trainer.log_every=2", "trainer.eval_every=4", "trainer.checkpoint_every=4",
]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def shape(run_dir):
    """What a reader of metrics.jsonl sees, less the wall-clock throughput."""
    return [{k: v for k, v in r.items() if k != "throughput"} for r in records(run_dir)]


@pytest.fixture
def signal_after_step(monkeypatch):
    """Send this process ``signum`` once the trainer finishes optimizer step ``at``."""
    def install(at, signum=signal.SIGINT):
        real = Trainer._train_step

        def step_then_signal(self, batches):
            real(self, batches)
            if self.step == at:
                os.kill(os.getpid(), signum)

        monkeypatch.setattr(Trainer, "_train_step", step_then_signal)

    return install


def test_a_signal_between_logs_then_resume_reads_like_one_run(fake_plugins, signal_after_step, monkeypatch,
                                                              tmp_path):
    assert cli.main(["train", *GRID, f"hydra.run.dir={tmp_path / 'straight'}"]) == 0
    signal_after_step(3)  # off the log grid: the stop must not add a record of its own
    run = tmp_path / "stopped"
    assert cli.main(["train", *GRID, f"hydra.run.dir={run}"]) == 128 + signal.SIGINT
    assert (run / "checkpoints" / "latest").read_text() == "step_000003"
    assert [r["step"] for r in records(run)] == [2]
    monkeypatch.undo()
    assert cli.main(["train", *GRID, "trainer.resume=true", f"hydra.run.dir={run}"]) == 0
    assert shape(run) == shape(tmp_path / "straight")  # the step-4 loss covers steps 3 and 4 too


def test_resume_after_a_crash_drops_the_records_written_after_the_checkpoint(
    fake_plugins, monkeypatch, tmp_path
):
    assert cli.main(["train", *GRID, f"hydra.run.dir={tmp_path / 'straight'}"]) == 0
    real_save = Trainer.save

    def crash_at_step_8(self):
        if self.step == 8:  # logged and evaluated step 8, then died before its checkpoint
            with open(self.run_dir / "metrics.jsonl", "a") as metrics:
                metrics.write('{"step": 8, "spl')  # and a torn line
            raise SystemExit(137)
        return real_save(self)

    monkeypatch.setattr(Trainer, "save", crash_at_step_8)
    run = tmp_path / "crashed"
    assert cli.main(["train", *GRID, f"hydra.run.dir={run}"]) == 137
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()[:-1])] == [
        2, 4, 4, 6, 8, 8]
    monkeypatch.undo()
    assert cli.main(["train", *GRID, "trainer.resume=true", f"hydra.run.dir={run}"]) == 0
    assert shape(run) == shape(tmp_path / "straight")


def test_start_up_puts_back_a_step_a_killed_re_save_moved_aside_and_clears_debris(
    fake_plugins, tmp_path, capsys
):
    ckpts = tmp_path / "checkpoints"
    assert cli.main(["train", *GRID, f"hydra.run.dir={tmp_path}"]) == 0
    # As a kill -9 between the renames of a re-save of step 8 leaves it: 8 moved aside, the
    # new 8 complete under its temporary name, latest naming the missing step_000008.
    (ckpts / "step_000008").rename(ckpts / ".step_000008.replaced-dead")
    shutil.copytree(ckpts / ".step_000008.replaced-dead", ckpts / ".step_000008-dead")
    (ckpts / ".step_000012-dead").mkdir()
    (ckpts / ".latest.tmp").write_text("step_0000")
    capsys.readouterr()
    # Nothing left to train: no save runs, so only the start-up can have cleaned up.
    assert cli.main(["train", *GRID, "trainer.resume=true", f"hydra.run.dir={tmp_path}"]) == 0
    assert f"resumed from {ckpts / 'step_000008'} at step 8" in capsys.readouterr().out
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000004", "step_000008"]


def test_resume_falls_back_to_the_newest_complete_step(fake_plugins, tmp_path, capsys):
    assert cli.main(["train", *GRID, f"hydra.run.dir={tmp_path}"]) == 0
    shutil.rmtree(tmp_path / "checkpoints" / "step_000008")
    assert cli.main(["train", *GRID, "trainer.resume=true", f"hydra.run.dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "latest names step_000008, which is not a complete checkpoint; using the newest" in out
    assert f"resumed from {tmp_path / 'checkpoints' / 'step_000004'} at step 4" in out
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_000008"


def test_sigterm_on_a_full_disk_says_why_and_exits_with_the_signals_status(
    fake_plugins, signal_after_step, monkeypatch, tmp_path, capsys
):
    usage = collections.namedtuple("Usage", "total used free")
    good = tmp_path / "checkpoints" / "step_000004"
    # The disk fills up once step 4 is saved; SIGTERM arrives after step 6.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 0, 100 if good.exists() else 10**9))
    signal_after_step(6, signal.SIGTERM)
    assert cli.main(["train", *GRID, f"hydra.run.dir={tmp_path}"]) == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert "stopped by SIGTERM without saving: not enough disk space to save step 6 in " in out
    assert f"The last good checkpoint, {good}, is intact." in out
    assert "Traceback" not in out
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_000004"


def test_a_full_disk_at_a_checkpoint_is_one_message_and_keeps_the_last_one(
    fake_plugins, monkeypatch, tmp_path, capsys
):
    real_save_file = checkpoint.save_file

    def disk_fills(tensors, filename, *args, **kwargs):
        if "step_000008" in filename:
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
        return real_save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", disk_fills)
    monkeypatch.setattr(checkpoint, "save_model", lambda model, filename: disk_fills(model.state_dict(),
                                                                                     filename))
    assert cli.main(["train", *GRID, f"hydra.run.dir={tmp_path}"]) == 1
    out = capsys.readouterr().out
    assert f"could not save step 8 in {tmp_path / 'checkpoints'}: the disk is full" in out
    assert "Traceback" not in out
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000004"]
