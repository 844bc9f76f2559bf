"""Hooks that see the training state: the context, stop requests, plugin state, early stopping."""

import json

import fake_plugin
import pytest
import torch
from genloom import checkpoint, cli, hookimpl, hookspecs, plugins, testing
from genloom.plugins import PluginSource, load_plugins
from genloom.testing import ContractViolation
from hydra.core.global_hydra import GlobalHydra

BASE = [
    "pipeline=counting", "trainer=debug", "trainer.progress=false", "trainer.batch_size=8",
    "trainer.log_every=1", "trainer.eval_batches=1", "trainer.warmup_steps=1",
]


class Recorder:
    """Sees every training event; counts optimizer steps in its checkpointed state."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.events: list[tuple[str, int]] = []
        self.started_with: dict = {}
        self.run = None
        self.end_reason = None
        self.val_metrics: dict = {}

    @hookimpl
    def genloom_train_start(self, run):
        self.run = run
        self.started_with = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in run.state.items()}
        run.state.setdefault("steps", 0)
        run.state.setdefault("sum", torch.zeros(3))
        self.events.append(("start", run.step))

    @hookimpl
    def genloom_optimizer_step(self, run):
        run.state["steps"] += 1
        run.state["sum"] += run.step
        if run.step == self.stop_at:
            run.request_stop("enough")

    @hookimpl
    def genloom_evaluated(self, step, run):
        self.val_metrics = dict(run.metrics)
        self.events.append(("evaluated", step))

    @hookimpl
    def genloom_checkpoint_saved(self, step, path, run):
        self.events.append(("checkpoint", step))

    @hookimpl
    def genloom_train_end(self, run, reason):
        self.end_reason = reason
        self.events.append(("end", run.step))


class Raiser:
    @hookimpl
    def genloom_optimizer_step(self, run):
        raise RuntimeError("a logger with a full disk")


@pytest.fixture
def with_hooks():
    """Make the fake plugin, genloom's built-in one and the given hook objects the process's plugins."""

    def install(strict=True, **objects):
        sources = [fake_plugin.source(), fake_plugin.builtin_source()]
        sources += [PluginSource(name, lambda o=o: o, "tests") for name, o in objects.items()]
        plugin_set = load_plugins(sources, strict=strict, disabled=[])
        plugins.set_active(plugin_set)
        return plugin_set

    yield install
    plugins.set_active(None)
    GlobalHydra.instance().clear()


QUIET = ["trainer.eval_every=100", "trainer.checkpoint_every=100"]  # evaluate and save at the end only


def train(run_dir, *overrides):
    return cli.main(["train", *BASE, *overrides, f"hydra.run.dir={run_dir}"])


def val_steps(run_dir):
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r["step"] for r in records if r["split"] == "val"]


def test_the_context_shows_the_training_state_and_plugin_state_survives_resume(with_hooks, tmp_path):
    first = Recorder()
    with_hooks(recorder=first)
    assert train(tmp_path, "trainer.max_steps=4", "trainer.eval_every=2", "trainer.checkpoint_every=2") == 0
    run = first.run
    assert (run.rank, run.world_size, run.is_main, run.device.type) == (0, 1, True, "cpu")
    assert run.run_dir == tmp_path and run.plugin == "recorder" and run.step == 4
    assert isinstance(run.generator, torch.nn.Module) and isinstance(run.optimizer, torch.optim.Optimizer)
    assert run.settings.max_steps == 4 and run.stop_reason is None
    assert {"loss", "lr", "val_loss"} <= set(first.val_metrics)
    assert first.events == [("start", 0), ("evaluated", 2), ("checkpoint", 2), ("evaluated", 4),
                            ("checkpoint", 4), ("end", 4)]
    assert first.end_reason == "max_steps"

    # The step-4 checkpoint holds the state as it was then: a JSON value and a tensor.
    _, extra = checkpoint.read_trainer_state(tmp_path / "checkpoints" / "step_000004")
    state = extra[checkpoint.PLUGIN_STATE]["recorder"]
    assert state["steps"] == 4 and torch.equal(state["sum"], torch.full((3,), 1.0 + 2 + 3 + 4))

    resumed = Recorder()
    with_hooks(recorder=resumed)
    assert train(tmp_path, "trainer.max_steps=6", "trainer.eval_every=2", "trainer.checkpoint_every=2",
                 "trainer.resume=true") == 0
    assert resumed.started_with["steps"] == 4
    assert torch.equal(resumed.started_with["sum"], torch.full((3,), 10.0))
    assert resumed.run.state["steps"] == 6 and resumed.events[0] == ("start", 4)


def test_a_stop_request_saves_a_checkpoint_and_says_who_asked_and_why(with_hooks, tmp_path, capsys):
    recorder = Recorder(stop_at=3)
    with_hooks(recorder=recorder)
    assert train(tmp_path, "trainer.max_steps=8", *QUIET) == 0
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_000003"
    assert recorder.end_reason == "stopped" and recorder.events[-2:] == [("checkpoint", 3), ("end", 3)]
    assert "training stopped at step 3 of 8 by plugin 'recorder': enough" in capsys.readouterr().out


def test_a_raising_hook_is_quarantined_and_training_goes_on(with_hooks, tmp_path, capsys):
    recorder = Recorder()
    plugin_set = with_hooks(strict=False, recorder=recorder, raiser=Raiser())
    assert train(tmp_path, "trainer.max_steps=3", *QUIET) == 0
    assert recorder.run.state["steps"] == 3 and recorder.end_reason == "max_steps"
    raiser = next(p for p in plugin_set.plugins if p.name == "raiser")
    assert raiser.status == "broken" and "a logger with a full disk" in raiser.error
    assert "plugin 'raiser' failed in genloom_optimizer_step" in capsys.readouterr().out


EARLY = ["trainer.eval_every=1", "trainer.checkpoint_every=100", "trainer.early_stopping.min_delta=1e9"]


def test_early_stopping_stops_after_patience_evaluations_without_improvement(with_hooks, tmp_path, capsys):
    # min_delta=1e9: only the first evaluation counts as an improvement.
    with_hooks()
    assert train(tmp_path, "trainer.max_steps=20", *EARLY, "trainer.early_stopping.patience=2") == 0
    assert val_steps(tmp_path) == [1, 2, 3]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_000003"
    assert "by plugin 'genloom': early stopping: val_loss has not improved" in capsys.readouterr().out


def test_early_stopping_counts_on_across_resume(with_hooks, tmp_path):
    with_hooks()
    assert train(tmp_path, "trainer.max_steps=2", *EARLY, "trainer.early_stopping.patience=3") == 0
    _, extra = checkpoint.read_trainer_state(tmp_path / "checkpoints" / "step_000002")
    assert extra[checkpoint.PLUGIN_STATE]["genloom"]["since_best"] == 1
    with_hooks()
    assert train(tmp_path, "trainer.max_steps=20", *EARLY, "trainer.early_stopping.patience=3",
                 "trainer.resume=true") == 0
    # Evaluations 3 and 4 are the second and third without improvement: a fresh count would go to 5.
    assert val_steps(tmp_path) == [1, 2, 3, 4]


def test_early_stopping_on_an_unknown_metric_lists_the_metrics(with_hooks, tmp_path, capsys):
    with_hooks()
    assert train(tmp_path, "trainer.max_steps=4", *EARLY, "trainer.early_stopping.patience=2",
                 "trainer.early_stopping.metric=val_bleu") == 1
    out = capsys.readouterr().out
    assert "trainer.early_stopping.metric='val_bleu' is not a metric of this run" in out
    assert "val_loss" in out and "Traceback" not in out


def test_early_stopping_settings_are_checked(with_hooks, tmp_path, capsys):
    with_hooks()
    assert train(tmp_path, "trainer.early_stopping.mode=lowest") == 1
    assert "trainer.early_stopping.mode='lowest'; use one of min, max" in capsys.readouterr().out


def test_the_contract_kit_catches_a_misspelt_hook_or_argument(tmp_path, monkeypatch):
    (tmp_path / "misspelt_hooks.py").write_text(
        "from genloom import hookimpl\n\n@hookimpl\ndef genloom_evaluted(step, metrics):\n    pass\n"
    )
    (tmp_path / "wrong_argument.py").write_text(
        "from genloom import hookimpl\n\n@hookimpl\ndef genloom_evaluated(step, loss):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ContractViolation, match="rule 'hooks' broken by misspelt_hooks: .*genloom_evaluted"):
        testing.check_hooks("misspelt_hooks")
    with pytest.raises(ContractViolation, match="rule 'hooks' broken by wrong_argument: .*loss"):
        testing.check_hooks("wrong_argument")
    testing.check_hooks("genloom.builtin")  # the built-in plugin keeps the rule it sets


def test_the_hook_reference_documents_the_training_events():
    reference = hookspecs.reference()
    for hook in ("genloom_train_start", "genloom_optimizer_step", "genloom_train_end"):
        assert f"## {hook}(run: TrainingRun" in reference
    assert "every rank" in reference and "rank 0 only" in reference
