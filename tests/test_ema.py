"""The EMA of the weights (``trainer.ema``): its average, its cost when off, resume, and who loads it."""

import json
import shutil
from pathlib import Path

import fake_plugin
import pytest
import torch
from genloom import checkpoint, cli, hookimpl, jobs, plugins, sampler, testing
from genloom.builtin import ema
from genloom.distributed import Placement
from genloom.plugins import load_plugins
from genloom.serve.models import ServedModel
from genloom.trainer import evaluate
from hydra.core.global_hydra import GlobalHydra
from safetensors.torch import load_file, save_file
from torch import nn

BASE = [
    "pipeline=counting", "trainer=debug", "trainer.progress=false", "trainer.batch_size=8",
    "trainer.log_every=1", "trainer.eval_batches=1", "trainer.warmup_steps=1",
]


class WeightsSeen:
    """Records the generator's weights at the start and after every optimizer step."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.run = None

    def _record(self, run) -> None:
        self.weights.append({k: v.detach().clone() for k, v in run.generator.state_dict().items()})

    @hookimpl
    def genloom_train_start(self, run):
        self.run = run
        self._record(run)

    @hookimpl
    def genloom_optimizer_step(self, run):
        self._record(run)


class RunSeen:
    """Keeps the run; implements no per-step event."""

    run = None

    @hookimpl
    def genloom_train_start(self, run):
        self.run = run


@pytest.fixture
def with_builtin():
    """The fake plugin and genloom's built-in one (which keeps the EMA), nothing else."""
    plugin_set = load_plugins([fake_plugin.source(), fake_plugin.builtin_source()], strict=True, disabled=[])
    plugins.set_active(plugin_set)
    yield plugin_set
    plugins.set_active(None)
    GlobalHydra.instance().clear()


def train(run: Path, *overrides: str) -> int:
    return cli.main(["train", *BASE, *overrides, f"hydra.run.dir={run}"])


def said(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory) -> Path:
    """A 4-step run with a strong EMA (its average and its weights differ), and one without."""
    plugin_set = load_plugins([fake_plugin.source(), fake_plugin.builtin_source()], strict=True, disabled=[])
    root = tmp_path_factory.mktemp("ema")
    with testing.active_plugins(plugin_set):
        assert train(root / "ema", "trainer.lr=0.05", "trainer.ema.decay=0.9") == 0
        assert train(root / "plain", "trainer.lr=0.05") == 0
    GlobalHydra.instance().clear()
    return root


@pytest.mark.parametrize(("warmup", "start_step"), [(False, 0), (True, 1)])
def test_the_average_is_the_hand_computed_one(with_builtin, tmp_path, warmup, start_step):
    seen = WeightsSeen()
    with_builtin.manager.register(seen)
    decay = 0.2
    assert train(tmp_path, "trainer.lr=0.05", f"trainer.ema.decay={decay}", f"trainer.ema.warmup={warmup}",
                 f"trainer.ema.start_step={start_step}") == 0
    expected = {k: v.float() for k, v in seen.weights[0].items()}
    updates = 0
    for step, weights in enumerate(seen.weights[1:], start=1):
        if step <= start_step:
            expected = {k: v.float() for k, v in weights.items()}
            continue
        d = min(decay, (1 + updates) / (10 + updates)) if warmup else decay
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
        updates += 1
    saved = checkpoint.read_ema(checkpoint.resolve(tmp_path))
    assert saved.keys() == expected.keys() == {"logits.weight", "bias"}
    for name, average in saved.items():
        assert average.dtype == torch.float32
        torch.testing.assert_close(average, expected[name], rtol=0, atol=1e-6)
        assert not torch.equal(average, seen.weights[-1][name])  # an average, not the last weights


def test_what_is_averaged_trainable_parameters_and_floating_buffers_each_once():
    model = nn.Sequential(nn.Embedding(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 5, bias=False), nn.Linear(4, 4))
    model[2].weight = model[0].weight  # tied (5, 4): averaged once, under its first name
    model[3].requires_grad_(False)  # frozen: never changes, so never averaged
    assert list(ema.averaged_tensors(model)) == ["0.weight", "1.weight", "1.bias", "1.running_mean",
                                                 "1.running_var"]  # not 1.num_batches_tracked


def test_off_by_default_the_step_event_is_never_called(with_builtin, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ema, "on_optimizer_step", calls.append)
    seen = RunSeen()
    with_builtin.manager.register(seen)
    assert train(tmp_path / "off") == 0
    assert calls == []
    assert not with_builtin.events.implemented("genloom_optimizer_step", seen.run)
    assert seen.run.declined == {"genloom_optimizer_step": {"genloom"}}
    assert checkpoint.read_ema(checkpoint.resolve(tmp_path / "off")) is None
    assert train(tmp_path / "on", "trainer.ema.decay=0.99") == 0
    assert len(calls) == 4  # trainer=debug: 4 steps


def test_an_interrupted_and_resumed_run_keeps_the_uninterrupted_average_bit_for_bit(with_builtin, tmp_path):
    overrides = [*BASE, "trainer.max_steps=6", "trainer.eval_every=5", "trainer.checkpoint_every=100",
                 "generator.dropout=0.3", "trainer.ema.decay=0.9"]
    testing.check_resume(with_builtin, overrides, stop_after=3, directory=tmp_path)  # losses: ==
    straight = checkpoint.resolve(tmp_path / "straight")
    resumed = checkpoint.resolve(tmp_path / "interrupted")
    assert straight.name == resumed.name == "step_000006"
    one, other = checkpoint.read_ema(straight), checkpoint.read_ema(resumed)
    assert one.keys() == other.keys() and all(torch.equal(one[k], other[k]) for k in one)
    updates = [json.loads((d / "trainer.json").read_text())["plugins"]["genloom"]["values"][ema.UPDATES]
               for d in (straight, resumed)]
    assert updates == [6, 6]


def test_resuming_with_the_ema_off_drops_it_from_later_checkpoints(with_builtin, tmp_path):
    assert train(tmp_path, "trainer.max_steps=2", "trainer.ema.decay=0.9") == 0
    assert checkpoint.read_ema(checkpoint.resolve(tmp_path)) is not None
    assert train(tmp_path, "trainer.max_steps=4", "trainer.resume=true") == 0
    assert checkpoint.read_ema(checkpoint.resolve(tmp_path)) is None


def hand_loaded(run: Path, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The run's generator with its weights loaded by hand, then ``tensors`` put in."""
    model = sampler.load(run, plugins.active(), "cpu", use_ema=False).pipeline.generator
    model.load_state_dict({**model.state_dict(), **tensors})
    return model


def test_eval_scores_the_ema_weights_unless_use_ema_is_false(with_builtin, ema_run, tmp_path):
    scores = {}
    for name, extra in (("default", []), ("raw", ["use_ema=false"]), ("forced", ["use_ema=true"])):
        out = tmp_path / name
        assert cli.main(["eval", f"checkpoint={ema_run / 'ema'}", *extra, f"hydra.run.dir={out}"]) == 0
        scores[name] = json.loads((out / "eval.json").read_text())
    assert [scores[n]["weights"] for n in ("default", "raw", "forced")] == ["ema", "raw", "ema"]
    assert scores["default"]["loss"] != scores["raw"]["loss"]
    step_dir = checkpoint.resolve(ema_run / "ema")
    loaded = sampler.load(step_dir, with_builtin, "cpu", with_dataset=True)
    val = loaded.pipeline.dataset.split("val", loaded.pipeline.encoder)
    for name, tensors in (("default", checkpoint.read_ema(step_dir)), ("raw", {})):
        by_hand = evaluate(hand_loaded(step_dir, tensors), val, batch_size=32, max_batches=None,
                           placement=Placement(torch.device("cpu")))
        assert scores[name]["loss"] == pytest.approx(by_hand["loss"], rel=1e-6)


def test_sample_and_serve_load_the_ema_weights_and_say_so(with_builtin, ema_run, tmp_path, capsys):
    averages = checkpoint.read_ema(checkpoint.resolve(ema_run / "ema"))
    served = ServedModel("m", ema_run / "ema", with_builtin, "cpu")
    assert served.describe()["weights"] == "ema"
    for name, average in averages.items():
        assert torch.equal(served.generator.state_dict()[name], average)
    raw = ServedModel("m", ema_run / "ema", with_builtin, "cpu", use_ema=False)
    assert raw.describe()["weights"] == "raw"
    assert not torch.equal(raw.generator.bias, averages["bias"])
    capsys.readouterr()
    assert cli.main(["sample", f"checkpoint={ema_run / 'ema'}", "n=1", f"hydra.run.dir={tmp_path}/e"]) == 0
    assert "the EMA of the weights (trainer.ema.decay=0.9; use_ema=false for the raw ones)" in said(capsys)
    assert cli.main(["sample", f"checkpoint={ema_run / 'plain'}", "n=1", f"hydra.run.dir={tmp_path}"]) == 0
    assert "raw weights (it holds no EMA)" in said(capsys)


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_use_ema_true_on_a_checkpoint_without_one_is_one_message(with_builtin, ema_run, tmp_path, capsys,
                                                                 command):
    assert cli.main([command, f"checkpoint={ema_run / 'plain'}", "use_ema=true",
                     f"hydra.run.dir={tmp_path}"]) == 1
    out = said(capsys)
    assert "use_ema=true but" in out
    assert "holds no EMA of the weights (its run had no trainer.ema.decay)" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.ema.decay=1.0", "trainer.ema.decay=1.0 must lie strictly between 0 and 1"),
    ("trainer.ema.decay=fast", "trainer.ema.decay='fast' must be a number"),
    ("trainer.ema.start_step=-1", "trainer.ema.start_step=-1 must be at least 0"),
    ("+trainer.ema.decy=0.9", "trainer.ema has no key 'decy'; did you mean trainer.ema.decay?"),
])
def test_a_mistyped_ema_setting_is_one_message(with_builtin, tmp_path, capsys, override, message):
    assert train(tmp_path, override) == 1
    out = said(capsys)
    assert message in out and "Traceback" not in out


def test_export_writes_the_ema_weights_unless_use_ema_is_false(with_builtin, ema_run, tmp_path, monkeypatch):
    exported = []  # what `genloom export` hands the format writer: the loaded model

    def export(model, **_):
        exported.append((model.weights, model.pipeline.generator.bias.detach().clone()))
        return []

    monkeypatch.setattr(jobs, "export", export)
    for extra in ([], ["use_ema=false"]):
        command = ["export", f"checkpoint={ema_run / 'ema'}", "format=digits", f"out={tmp_path / 'out'}"]
        assert cli.main([*command, *extra]) == 0
    averages = checkpoint.read_ema(checkpoint.resolve(ema_run / "ema"))
    raw = checkpoint.read_weights(checkpoint.resolve(ema_run / "ema"))
    assert [weights for weights, _ in exported] == ["ema", "raw"]
    assert torch.equal(exported[0][1], averages["bias"]) and torch.equal(exported[1][1], raw["bias"])


def test_an_ema_that_does_not_fit_the_model_is_one_message(with_builtin, ema_run, tmp_path, capsys):
    damaged = tmp_path / "step"
    shutil.copytree(checkpoint.resolve(ema_run / "ema"), damaged)
    tensors = load_file(damaged / "trainer.safetensors")
    tensors["plugin/genloom/ema/bias"] = torch.zeros(3)
    save_file(tensors, damaged / "trainer.safetensors")
    assert cli.main(["eval", f"checkpoint={damaged}", f"hydra.run.dir={tmp_path / 'e'}"]) == 1
    out = said(capsys)
    assert "the EMA of the weights in" in out
    assert "does not fit the model: bias is (3,) there, (10,) in the model" in out
    assert "use_ema=false loads the raw weights" in out and "Traceback" not in out
    assert cli.main(["eval", f"checkpoint={damaged}", "use_ema=false", f"hydra.run.dir={tmp_path}/r"]) == 0
