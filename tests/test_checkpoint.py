"""Checkpoints: atomic on disk, rebuilt from the directory alone, never unpickled."""

import pickle

import pytest
import torch
from genloom import checkpoint, sampler
from genloom.checkpoint import CheckpointError
from omegaconf import OmegaConf

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
    with pytest.raises(OSError, match="No space left"):
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
