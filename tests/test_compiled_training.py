"""``trainer.compile=true`` trains every built-in generator to the losses eager training logs.

One tiny run per generator kind (the text Transformer, the image VAE, the audio VAE and a
two-stage token prior over a frozen FSQ stage 1), trained by ``genloom train`` in this
process eagerly and again compiled by inductor, from the same seed. Compiled code draws
random numbers with inductor's own generator (seeded from torch's, but not eager's
sequence; ``fallback_random`` does not make a VAE's ``randn_like`` match either), so the
runs here draw none: condition dropout is off and the VAEs' posterior noise is their
evaluation draw (one seeded sample, the real function's other branch). What differs is
then the compiled arithmetic alone: fused kernels add in another order, a few ulps.

Compilation is the cost here: about a minute per generator on an idle 2-core CPU with
an empty cache. The module's inductor cache lives in pytest's cache directory
(``.pytest_cache``), so a second ``make test`` reuses the kernels and these tests take
seconds. The tests need the built-in plugins (``make setup`` installs them) and skip with
the reason when one is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from genloom import checkpoint, cli
from genloom.compiling import INDUCTOR_CACHE_ENV
from genloom.testing import only_plugins

for _module, _package in (("genloom_text", "genloom-text"), ("genloom_image", "genloom-image"),
                          ("genloom_audio", "genloom-audio")):
    pytest.importorskip(_module, reason=f"the {_package} plugin is not installed")

PLUGINS = {"text": "genloom_text.plugin", "image": "genloom_image.plugin", "audio": "genloom_audio.plugin",
           "blocks": "genloom_blocks.plugin", "genloom": "genloom.builtin"}
STEPS = 3
FAST = ["trainer.progress=false", f"trainer.max_steps={STEPS}", "trainer.log_every=1",
        f"trainer.eval_every={STEPS}", f"trainer.checkpoint_every={STEPS}", "trainer.eval_batches=1"]
NO_DROPOUT = "generator.condition_dropout=0.0"


@pytest.fixture(scope="module")
def plugin_set():
    with only_plugins(PLUGINS) as plugin_set:
        yield plugin_set


@pytest.fixture(scope="module")
def inductor(request, tmp_path_factory):
    """Inductor's caches in pytest's cache directory, and no random draws in the losses."""
    import genloom_audio.vae
    import genloom_image.vae
    from genloom_blocks.gaussian import posterior_sample

    def seeded_noise(mean, logvar, *, training):  # noqa: ANN001, ANN202 - posterior_sample's own
        return posterior_sample(mean, logvar, training=False)

    cache = request.config.cache
    directory = cache.mkdir("genloom-inductor") if cache is not None else tmp_path_factory.mktemp("inductor")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(INDUCTOR_CACHE_ENV, str(directory))
        for module in (genloom_image.vae, genloom_audio.vae):
            patch.setattr(module, "posterior_sample", seeded_noise)
        yield


def train(run: Path, *overrides: str) -> Path:
    assert cli.main(["train", *overrides, *FAST, f"hydra.run.dir={run}"]) == 0
    return run


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def assert_compiled_matches_eager(root: Path, *overrides: str) -> None:
    import torch._dynamo

    torch._dynamo.reset()  # compiles as a fresh process would: no graphs of an earlier test's model
    eager = train(root / "eager", *overrides)
    compiled = train(root / "compiled", *overrides, "trainer.compile=true")
    assert len(losses(eager)) == STEPS
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4, abs=1e-6)
    # The compiled wrapper never reaches the checkpoint: the same parameter names, loadable as ever.
    saved = [checkpoint.latest_in(run / "checkpoints") for run in (eager, compiled)]
    assert checkpoint.read_weights(saved[1]).keys() == checkpoint.read_weights(saved[0]).keys()


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["text_debug", "image_debug", "audio_debug"])
def test_a_compiled_run_logs_the_eager_runs_losses(plugin_set, inductor, tmp_path, preset) -> None:
    assert_compiled_matches_eager(tmp_path, f"pipeline={preset}", NO_DROPOUT)


@pytest.mark.slow
def test_a_compiled_token_prior_logs_the_eager_runs_losses(plugin_set, inductor, tmp_path) -> None:
    stage_1 = train(tmp_path / "vq", "pipeline=glyphs_vq_debug")
    assert_compiled_matches_eager(tmp_path, "pipeline=glyphs_tokens_debug", f"encoder.checkpoint={stage_1}",
                                  NO_DROPOUT)


def test_without_a_cpp_compiler_compile_says_what_to_install(plugin_set, tmp_path, monkeypatch,
                                                              capsys) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler")
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "no-such-compiler"))
    assert cli.main(["train", "pipeline=text_debug", *FAST, "trainer.compile=true",
                     f"hydra.run.dir={tmp_path}"]) == 1
    said = "".join(capsys.readouterr())
    assert "needs a C++ compiler" in said and "apt-get install g++ python3-dev" in said
    assert "Traceback" not in said
