"""``TrainingRun.draw_samples``: what a logger shows at an evaluation, drawn without disturbing training."""

import json

import fake_plugin
import pytest
import torch
from fake_plugin import components
from genloom import cli, hookimpl, plugins
from genloom.plugins import PluginSource, load_plugins
from hydra.core.global_hydra import GlobalHydra

# Bigram's noise draws from the global stream in every training step: a draw that touched
# that stream would change the losses that follow it.
BASE = ["pipeline=counting", "trainer=debug", "trainer.progress=false", "trainer.batch_size=8",
        "trainer.max_steps=4", "trainer.eval_every=2", "trainer.eval_batches=1", "generator.noise=0.5"]


class Drawer:
    def __init__(self, n: int) -> None:
        self.n = n
        self.drawn = []

    @hookimpl
    def genloom_evaluated(self, run):
        self.drawn.append((run.step, run.draw_samples(self.n)))


@pytest.fixture
def with_drawer():
    def install(drawer=None):
        sources = [fake_plugin.source()]
        if drawer is not None:
            sources.append(PluginSource("drawer", lambda: drawer, "tests"))
        plugins.set_active(load_plugins(sources, strict=True, disabled=[]))

    yield install
    plugins.set_active(None)
    GlobalHydra.instance().clear()


def losses(run_dir):
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], r.get("loss"), r.get("val_loss")) for r in records]


def test_samples_are_drawn_written_and_leave_the_training_as_it_was(with_drawer, tmp_path, monkeypatch):
    generate = components.Bigram.generate

    def draws_from_the_global_stream_too(self, n, **kwargs):
        torch.rand(1)  # as a generator that forgets its rng= might
        return generate(self, n, **kwargs)

    monkeypatch.setattr(components.Bigram, "generate", draws_from_the_global_stream_too)
    with_drawer()
    assert cli.main(["train", *BASE, f"hydra.run.dir={tmp_path / 'plain'}"]) == 0
    drawer, again = Drawer(3), Drawer(3)
    with_drawer(drawer)
    assert cli.main(["train", *BASE, f"hydra.run.dir={tmp_path / 'drawn'}"]) == 0
    with_drawer(again)
    assert cli.main(["train", *BASE, f"hydra.run.dir={tmp_path / 'again'}"]) == 0

    assert losses(tmp_path / "drawn") == losses(tmp_path / "plain")
    assert [step for step, _ in drawer.drawn] == [2, 4]
    step, drawn = drawer.drawn[0]
    assert drawn.media_type == "text" and len(drawn.media) == 3
    assert drawn.directory == tmp_path / "drawn" / "samples" / "step_000002"
    assert [p.name for p in drawn.paths] == ["sample_000.txt", "sample_001.txt", "sample_002.txt"]
    assert [p.read_text() for p in drawn.paths] == [m + "\n" for m in drawn.media]
    # Seeded from (seed, step): the same step of the same run draws the same samples.
    assert [d.media for _, d in again.drawn] == [d.media for _, d in drawer.drawn]
    assert drawer.drawn[0][1].media != drawer.drawn[1][1].media
