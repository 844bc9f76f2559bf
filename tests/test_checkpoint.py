"""Checkpoints: atomic on disk, rebuilt from the directory alone, never unpickled."""

import collections
import errno
import logging
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest
import torch
from genloom import checkpoint, sampler
from genloom.checkpoint import CheckpointError
from omegaconf import OmegaConf
from safetensors import SafetensorError

CONFIG = OmegaConf.create({
    "dataset": {"name": "counting"}, "encoder": {"name": "digits"},
    "generator": {"name": "bigram", "vocab_size": 6}, "decoder": {"name": "digits"},
})


def model_and_optimizer():
    from fake_plugin.components import Bigram

    torch.manual_seed(0)
    model = Bigram(vocab_size=6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.loss({"tokens": torch.arange(6).repeat(2, 1)})["loss"].backward()
    optimizer.step()
    return model, optimizer


def save(directory, step, model, optimizer, keep=2):
    return checkpoint.save(directory, step=step, model=model, config=CONFIG,
                           plugins={"genloom-fake": "0.0.1"}, optimizer=optimizer,
                           extra_state={"step": step}, keep=keep)


def test_a_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer()
    good = save(tmp_path, 1, model, optimizer)
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(CheckpointError, match="the disk is full"):
        save(tmp_path, 2, model, optimizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001"]  # no debris
    assert checkpoint.resolve(tmp_path) == good
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model, optimizer = model_and_optimizer()
    (tmp_path / ".step_000001-killed").mkdir(parents=True)  # a save that was killed -9
    for step in (1, 2, 3):
        save(tmp_path, step, model, optimizer, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000002", "step_000003"]


def test_resolve_accepts_run_dir_checkpoints_dir_or_step_dir(tmp_path):
    model, optimizer = model_and_optimizer()
    step_dir = save(tmp_path / "run" / "checkpoints", 5, model, optimizer)
    for given in (tmp_path / "run", tmp_path / "run" / "checkpoints", step_dir):
        assert checkpoint.resolve(given) == step_dir
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.resolve(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        checkpoint.resolve(tmp_path)


def test_loading_rebuilds_the_model_and_trainer_state_without_unpickling(tmp_path, monkeypatch, fake_plugins):
    model, optimizer = model_and_optimizer()
    step_dir = save(tmp_path, 7, model, optimizer)
    assert sorted(p.name for p in step_dir.iterdir()) == [
        "config.yaml", "meta.json", "model.safetensors", "trainer.json", "trainer.safetensors",
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must never be unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)

    loaded = sampler.load(tmp_path, fake_plugins, device="cpu")
    assert loaded.checkpoint.step == 7
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.pipeline.generator.state_dict()[name], tensor)

    fresh, fresh_optimizer = model_and_optimizer()
    extra = checkpoint.load_trainer_state(step_dir, fresh_optimizer, torch.device("cpu"))
    assert extra == {"step": 7}
    expected = optimizer.state_dict()["state"]
    restored = fresh_optimizer.state_dict()["state"]
    for index, state in expected.items():
        for key, value in state.items():
            assert torch.equal(restored[index][key], value)


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path, fake_plugins):
    model, optimizer = model_and_optimizer()
    step_dir = save(tmp_path, 1, model, optimizer)
    (step_dir / "config.yaml").write_text(OmegaConf.to_yaml(
        OmegaConf.merge(CONFIG, {"generator": {"vocab_size": 9}})
    ))
    with pytest.raises(CheckpointError, match="do not fit the model"):
        sampler.load(tmp_path, fake_plugins, device="cpu")


def test_a_config_naming_an_import_path_is_refused(tmp_path, fake_plugins):
    model, optimizer = model_and_optimizer()
    step_dir = save(tmp_path, 1, model, optimizer)
    (step_dir / "config.yaml").write_text(OmegaConf.to_yaml(
        OmegaConf.merge(CONFIG, {"generator": {"_target_": "os.system"}})
    ))
    with pytest.raises(Exception, match="by registry name only"):
        sampler.load(tmp_path, fake_plugins, device="cpu")


def contents(step_dir):
    return {p.name: p.read_bytes() for p in step_dir.iterdir()}


def test_re_saving_a_step_never_leaves_latest_pointing_at_nothing(tmp_path, monkeypatch, caplog):
    # Resuming from an older step into the same run directory saves an existing step again.
    model, optimizer = model_and_optimizer()
    save(tmp_path, 1, model, optimizer, keep=3)
    old = contents(save(tmp_path, 2, model, optimizer, keep=3))
    real_replace = os.replace
    killed = tmp_path.parent / "killed"  # the directory as a kill -9 at the rename would leave it

    def kill_at_the_rename_in(src, dst):
        if Path(dst).name == "step_000002" and Path(src).name.startswith(".step_000002-"):
            shutil.copytree(tmp_path, killed, symlinks=True)
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", kill_at_the_rename_in)
    with pytest.raises(CheckpointError, match="could not save step 2"):
        save(tmp_path, 2, model, optimizer, keep=3)
    monkeypatch.undo()
    # An error rolls back: the step that was there is there, unchanged, and nothing else.
    assert checkpoint.resolve(tmp_path) == tmp_path / "step_000002"
    assert contents(tmp_path / "step_000002") == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001", "step_000002"]

    # A kill leaves no handler to roll back: reading falls back to a complete step ...
    with caplog.at_level(logging.WARNING, logger="genloom.checkpoint"):
        assert checkpoint.resolve(killed) == killed / "step_000001"
    assert "not a complete checkpoint; using the newest complete one" in caplog.text
    # ... and the next writer's start-up puts the step that was there back in place.
    checkpoint.recover(killed)
    assert checkpoint.resolve(killed) == killed / "step_000002"
    assert contents(killed / "step_000002") == old
    assert sorted(p.name for p in killed.iterdir()) == ["latest", "step_000001", "step_000002"]


def test_a_re_save_replaces_the_step_and_leaves_no_debris(tmp_path):
    model, optimizer = model_and_optimizer()
    save(tmp_path, 1, model, optimizer)
    first = contents(save(tmp_path, 2, model, optimizer))
    optimizer.step()
    second = contents(save(tmp_path, 2, model, optimizer))
    assert second != first and contents(tmp_path / "step_000002") == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001", "step_000002"]


def test_latest_pointing_at_a_missing_step_falls_back_to_the_newest_complete_one(tmp_path, caplog):
    model, optimizer = model_and_optimizer()
    for step in (1, 2):
        save(tmp_path, step, model, optimizer)
    (tmp_path / "step_000003").mkdir()  # incomplete: never chosen
    (tmp_path / "latest").write_text("step_000004")
    with caplog.at_level(logging.WARNING, logger="genloom.checkpoint"):
        assert checkpoint.latest_in(tmp_path) == tmp_path / "step_000002"
    assert "latest names step_000004, which is not a complete checkpoint" in caplog.text


@pytest.mark.parametrize("pointer", ["../../elsewhere", "ABSOLUTE", "step_000001/../../elsewhere"])
def test_latest_is_never_followed_out_of_the_checkpoints_folder(tmp_path, pointer):
    model, optimizer = model_and_optimizer()
    elsewhere = save(tmp_path / "elsewhere", 9, model, optimizer)  # a complete checkpoint outside
    ckpts = tmp_path / "run" / "checkpoints"
    save(ckpts, 1, model, optimizer)
    (ckpts / "latest").write_text(str(elsewhere) if pointer == "ABSOLUTE" else pointer)
    with pytest.raises(CheckpointError, match="never followed"):
        checkpoint.resolve(tmp_path / "run")


def test_a_step_directory_that_links_elsewhere_is_refused(tmp_path):
    model, optimizer = model_and_optimizer()
    elsewhere = save(tmp_path / "elsewhere", 9, model, optimizer)
    ckpts = tmp_path / "checkpoints"
    save(ckpts, 1, model, optimizer)
    (ckpts / "step_000002").symlink_to(elsewhere, target_is_directory=True)
    (ckpts / "latest").write_text("step_000002")
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        checkpoint.resolve(ckpts)


def test_debris_of_killed_saves_is_cleared_before_a_save(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer()
    save(tmp_path, 1, model, optimizer)
    for name in (".step_000002-killed", ".step_000001.replaced-killed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"\0" * 1000)
    (tmp_path / ".latest.tmp").write_text("step_0000")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_model", disk_full)
    with pytest.raises(CheckpointError):
        save(tmp_path, 2, model, optimizer)  # the debris went first, not only after a good save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001"]


def test_a_full_disk_is_one_message_before_anything_is_written(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer()
    good = save(tmp_path, 1, model, optimizer)
    before = contents(good)
    size = sum(len(b) for b in before.values())
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - size, size))
    with pytest.raises(CheckpointError) as caught:
        save(tmp_path, 2, model, optimizer, keep=2)  # 3 checkpoints must fit; 1 is there, 1 free
    message = str(caught.value)
    assert message.startswith(f"not enough disk space to save step 2 in {tmp_path}: ")
    assert "3 checkpoints (trainer.keep_checkpoints=2, plus the one being written)" in message
    assert f"The last good checkpoint, {good}, is intact." in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001"]
    assert contents(good) == before


def test_a_write_that_fails_on_a_full_disk_says_so_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer()
    good = save(tmp_path, 1, model, optimizer)
    before = contents(good)

    def disk_fills(*args, **kwargs):  # what safetensors raises when the disk fills mid-write
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(checkpoint, "save_file", disk_fills)
    with pytest.raises(CheckpointError) as caught:
        save(tmp_path, 2, model, optimizer)
    message = str(caught.value)
    assert message.startswith(f"could not save step 2 in {tmp_path}: ")
    assert "the disk is full" in message and f"The last good checkpoint, {good}, is intact." in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000001"]
    assert contents(good) == before


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoints_follow_the_umask_like_any_other_output(tmp_path, umask):
    model, optimizer = model_and_optimizer()
    previous = os.umask(umask)
    try:
        step_dir = save(tmp_path, 1, model, optimizer)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(step_dir.stat().st_mode) == 0o777 & ~umask
    for file in [*step_dir.iterdir(), tmp_path / "latest"]:
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask, file.name


def test_a_folder_whose_latest_was_never_written_uses_its_newest_complete_step(tmp_path, caplog):
    model, optimizer = model_and_optimizer()
    save(tmp_path, 1, model, optimizer)
    (tmp_path / "latest").unlink()  # a first save killed between its rename and writing latest
    with caplog.at_level(logging.WARNING, logger="genloom.checkpoint"):
        assert checkpoint.resolve(tmp_path) == tmp_path / "step_000001"
    assert "has no latest file (a save was killed before writing it); using the newest" in caplog.text
    shutil.rmtree(tmp_path / "step_000001")
    (tmp_path / "step_000002").mkdir()
    with pytest.raises(CheckpointError, match="holds no complete step directory"):
        checkpoint.resolve(tmp_path)


class Adapted(torch.nn.Module):
    """A :class:`genloom.interfaces.PartialCheckpoint`: a base its constructor rebuilds from a seed,
    an adapter that trains, and the base's fingerprint, which a load over another base refuses."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.base = torch.nn.Linear(4, 4).requires_grad_(False)
        self.adapter = torch.nn.Parameter(torch.zeros(4))
        self.register_buffer("base_seed", torch.tensor(seed))
        self.register_load_state_dict_pre_hook(self._check_base)

    def checkpoint_keys(self) -> frozenset[str]:
        return frozenset({"adapter", "base_seed"})

    def _check_base(self, module, state_dict, prefix, *args) -> None:
        if int(state_dict[prefix + "base_seed"]) != int(self.base_seed):
            raise CheckpointError(f"adapter trained on base {int(state_dict[prefix + 'base_seed'])}")


def test_a_partial_checkpoint_holds_and_loads_only_the_keys_its_generator_names(tmp_path):
    trained = Adapted()
    with torch.no_grad():
        trained.adapter.fill_(0.5)
    step_dir = checkpoint.save(tmp_path, step=1, model=trained, config=CONFIG, plugins={})
    header = checkpoint.read_header(step_dir / "model.safetensors")
    assert set(header.tensors) == {"adapter", "base_seed"} and header.partial

    fresh = Adapted()
    checkpoint.load_weights(fresh, step_dir)
    assert torch.equal(fresh.adapter, trained.adapter)
    assert torch.equal(fresh.base.weight, trained.base.weight)  # rebuilt by its constructor, not loaded

    with pytest.raises(CheckpointError, match="safetensors cannot be loaded: adapter trained on base 0"):
        checkpoint.load_weights(Adapted(seed=1), step_dir)

    whole = checkpoint.save(tmp_path / "whole", step=1, weights=dict(trained.state_dict()), config=CONFIG,
                            plugins={})
    assert not checkpoint.read_header(whole / "model.safetensors").partial
    with pytest.raises(CheckpointError, match="unexpected base.bias, base.weight"):
        checkpoint.load_weights(Adapted(), whole)


def test_a_partial_weights_file_does_not_bound_the_model_built_on_meta(tmp_path):
    step_dir = checkpoint.save(tmp_path, step=1, model=Adapted(), config=CONFIG, plugins={})
    header = checkpoint.read_header(step_dir / "model.safetensors")
    whole = checkpoint.WeightsHeader(header.path, header.tensors)
    with sampler._budget(header, memory=None), torch.device("meta"):
        torch.nn.Linear(2048, 2048)  # 4M values over a file of 5: the base comes from elsewhere
    with pytest.raises(sampler._OverBudget), sampler._budget(whole, memory=None), torch.device("meta"):
        torch.nn.Linear(2048, 2048)
