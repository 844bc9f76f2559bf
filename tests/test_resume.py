"""Exact resume: a run stopped at any step and resumed logs the uninterrupted run's losses.

``genloom.testing.check_resume`` stops each run by a real SIGINT after step k (the trainer
saves), then a new Trainer with ``trainer.resume=true`` continues it, after every global
random stream is scrambled: whatever the resumed run draws must come from the checkpoint.
"""

import json
import random

import numpy as np
import pytest
import torch
from genloom import checkpoint, cli, rng, testing
from genloom.testing import ContractViolation

# 48 train examples in batches of 8: 6 micro-batches an epoch, so 8 steps cross an epoch
# boundary at grad_accum 1 and two at grad_accum 2.
BASE = [
    "pipeline=counting", "trainer=debug", "trainer.progress=false", "trainer.max_steps=8",
    "trainer.batch_size=8", "trainer.log_every=1", "trainer.eval_every=5", "trainer.eval_batches=1",
    "trainer.checkpoint_every=100", "trainer.warmup_steps=2",
]
NOISY = ["generator.dropout=0.3", "generator.noise=0.5"]  # dropout and sampling noise in the loss
AUGMENTED = ["dataset.augment=true"]  # __getitem__ draws from torch, random and numpy


def train(run, *overrides):
    return cli.main(["train", *BASE, *overrides, f"hydra.run.dir={run}"])


def logged(run):
    """Every train record (step, loss, grad norm, lr), in the order written."""
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in records if r["split"] == "train"]


def straight_and_resumed(plugin_set, tmp_path, overrides, stop_after):
    testing.check_resume(plugin_set, [*BASE, *overrides], stop_after=stop_after, directory=tmp_path)
    return logged(tmp_path / "straight"), logged(tmp_path / "interrupted")


@pytest.mark.parametrize("grad_accum, stop_after", [(1, 4), (2, 2)])  # both mid-epoch
def test_a_run_resumed_mid_epoch_logs_exactly_the_uninterrupted_losses(
    fake_plugins, tmp_path, grad_accum, stop_after
):
    overrides = [*NOISY, *AUGMENTED, f"trainer.grad_accum={grad_accum}"]
    straight, resumed = straight_and_resumed(fake_plugins, tmp_path, overrides, stop_after)
    assert [step for step, *_ in resumed] == list(range(1, 9))
    assert resumed == straight  # every logged loss, grad norm and lr, with ==


def test_check_resume_catches_a_stream_the_checkpoint_does_not_restore(fake_plugins, tmp_path, monkeypatch):
    monkeypatch.setattr(rng, "restore", lambda tensors, scalars: None)  # as if no RNG state were kept
    with pytest.raises(ContractViolation, match="contract rule 'resume' broken by .* step 3 logged"):
        testing.check_resume(fake_plugins, [*BASE, *NOISY, "trainer.max_steps=4"], stop_after=2,
                             directory=tmp_path)


@pytest.mark.slow  # worker processes start for every epoch of three runs
def test_resume_is_exact_with_worker_processes_and_they_load_what_the_main_process_would(
    fake_plugins, tmp_path
):
    overrides = [*NOISY, *AUGMENTED, "trainer.grad_accum=2", "trainer.max_steps=4"]
    straight, resumed = straight_and_resumed(
        fake_plugins, tmp_path, [*overrides, "trainer.num_workers=2"], stop_after=1
    )
    assert resumed == straight
    assert train(tmp_path / "in_process", *overrides) == 0
    assert logged(tmp_path / "in_process") == straight  # augmentations do not depend on num_workers


def test_the_same_seed_gives_the_same_run_and_another_seed_another(fake_plugins, tmp_path):
    overrides = [*NOISY, *AUGMENTED, "trainer.max_steps=3"]
    assert train(tmp_path / "a", *overrides) == 0
    testing.scramble_global_streams()  # what ran before in the process does not matter
    assert train(tmp_path / "b", *overrides) == 0
    assert train(tmp_path / "c", *overrides, "seed=1") == 0
    assert logged(tmp_path / "a") == logged(tmp_path / "b")
    assert logged(tmp_path / "a") != logged(tmp_path / "c")


def test_the_checkpoint_holds_every_global_stream(fake_plugins, tmp_path):
    assert train(tmp_path, *NOISY, "trainer.max_steps=1") == 0
    step_dir = checkpoint.resolve(tmp_path)
    state = json.loads((step_dir / "trainer.json").read_text())
    assert {"python_rng", "numpy_rng"} <= state.keys()
    expected = torch.get_rng_state(), random.getstate(), np.random.get_state()
    testing.scramble_global_streams()
    checkpoint.read_trainer_state(step_dir)
    assert torch.equal(torch.get_rng_state(), expected[0])
    assert random.getstate() == expected[1]
    numpy_state = np.random.get_state()
    assert numpy_state[0] == expected[2][0] and (numpy_state[1] == expected[2][1]).all()
    assert numpy_state[2:] == expected[2][2:]


@pytest.mark.parametrize("damage, says", [
    ("truncate_tensors", "trainer.safetensors is damaged"),
    ("json_not_json", "trainer.json is not valid JSON"),
    ("json_lacks_keys", "is incomplete or damaged (KeyError: 'optimizer' in trainer.json"),
])
def test_a_damaged_trainer_state_is_one_message_naming_the_file(fake_plugins, tmp_path, capsys, damage, says):
    run = tmp_path / "run"
    assert train(run, "trainer.max_steps=2") == 0
    step_dir = checkpoint.resolve(run)
    if damage == "truncate_tensors":
        tensors = step_dir / "trainer.safetensors"
        tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    elif damage == "json_not_json":
        (step_dir / "trainer.json").write_text('{"optimizer": {"param_gro')
    else:
        state = json.loads((step_dir / "trainer.json").read_text())
        (step_dir / "trainer.json").write_text(json.dumps({"extra": state["extra"]}))
    capsys.readouterr()
    assert train(run, "trainer.max_steps=4", "trainer.resume=true") == 1
    out = capsys.readouterr()
    assert says in out.out
    assert str(step_dir) in out.out
    assert "resume from an earlier checkpoint (trainer.resume=PATH) or train afresh" in out.out
    assert "Traceback" not in out.out + out.err


def test_a_checkpoint_written_before_numpy_was_saved_still_resumes(fake_plugins, tmp_path):
    assert train(tmp_path, "trainer.max_steps=2") == 0
    step_dir = checkpoint.resolve(tmp_path)
    state = json.loads((step_dir / "trainer.json").read_text())
    del state["numpy_rng"]  # what genloom wrote before it kept NumPy's stream
    (step_dir / "trainer.json").write_text(json.dumps(state))
    python_state = random.getstate()
    testing.scramble_global_streams()
    _, extra = checkpoint.read_trainer_state(step_dir)
    assert extra["step"] == 2 and random.getstate() == python_state
    assert train(tmp_path, "trainer.max_steps=3", "trainer.resume=true") == 0
