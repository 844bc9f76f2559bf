"""The shared Trainer: schedule, sharding, exact resume, signals, non-finite losses."""

import json
import math
import os
import signal

import fake_plugin
import pytest
import torch
from genloom import cli, hookimpl, plugins
from genloom.plugins import PluginSource, load_plugins
from genloom.trainer import TrainerSettings, epoch_batches
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
