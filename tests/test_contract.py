"""The contract kit: a good plugin passes every rule, and each rule catches what it is for."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fake_plugin.components import Bigram, DigitDecoder
from genloom import testing
from genloom.interfaces import SampleSpec
from genloom.testing import Built, ContractViolation, PluginContract
from omegaconf import OmegaConf
from torch import nn


class TestFakePluginContract(PluginContract):
    plugin = "fake_plugin.hooks"
    pipelines = ["counting"]


@pytest.fixture(scope="module")
def plugin_set():
    return testing.load_only(["fake_plugin.hooks"])


@pytest.fixture
def built(plugin_set) -> Built:
    return testing.build(plugin_set, "counting")


def broken(built: Built, generator: nn.Module) -> Built:
    built.pipeline.generator = generator
    return built


def violation(check, *args) -> ContractViolation:
    with pytest.raises(ContractViolation) as caught:
        check(*args)
    return caught.value


class UnusedParameter(Bigram):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten = nn.Parameter(torch.zeros(3))


class WrongSpec(Bigram):
    def __init__(self) -> None:
        super().__init__()
        self.sample_spec = SampleSpec(shape=(4, None), dtype=torch.float32)


class Unseeded(Bigram):
    def generate(self, n, *, condition=None, rng=None, **options):
        return torch.randint(0, self.vocab_size, (n, 8))


class NanMetric(Bigram):
    def loss(self, batch):
        return {**super().loss(batch), "perplexity": torch.tensor(float("nan"))}


class HiddenState(Bigram):
    """Samples depend on a plain attribute that no checkpoint stores."""

    made = 0

    def __init__(self, **options) -> None:
        super().__init__(**options)
        HiddenState.made += 1
        self.offset = HiddenState.made

    def generate(self, n, *, condition=None, rng=None, **options):
        return (super().generate(n, condition=condition, rng=rng, **options) + self.offset) % self.vocab_size


class BytesDecoder(DigitDecoder):
    def decode(self, tensor):
        return super().decode(tensor).encode()


def test_unused_parameter_is_named(built) -> None:
    found = violation(testing.check_gradients, broken(built, UnusedParameter()))
    assert found.rule == "gradients" and "forgotten" in found.why


def test_wrong_shape_is_reported_against_the_declaration(built) -> None:
    found = violation(testing.check_sample_spec, broken(built, WrongSpec()))
    assert found.rule == "sample_spec"
    assert "(8,) int64" in found.why and "(4, *) float32" in found.why


def test_missing_declaration_is_reported(built) -> None:
    generator = Bigram()
    del generator.sample_spec
    found = violation(testing.check_sample_spec, broken(built, generator))
    assert "declares no sample_spec" in found.why


def test_randomness_outside_the_rng_is_caught(built) -> None:
    found = violation(testing.check_seeded, broken(built, Unseeded()))
    assert found.rule == "seeded" and "same seed" in found.why


def test_non_finite_metric_is_caught(built) -> None:
    found = violation(testing.check_loss, broken(built, NanMetric()), built.batch())
    assert found.rule == "loss" and "'perplexity' is nan" in found.why


def test_state_outside_the_checkpoint_is_caught(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("fake_plugin.components.Bigram", HiddenState)  # what the registry builds
    plugin_set = testing.load_only(["fake_plugin.hooks"])
    built = testing.build(plugin_set, "counting")
    found = violation(testing.check_round_trip, plugin_set, broken(built, HiddenState()), tmp_path)
    assert found.rule == "round_trip" and "after a save and load" in found.why


def test_decoder_of_the_wrong_media_type_is_caught(built, tmp_path: Path) -> None:
    built.pipeline.decoder = BytesDecoder()
    found = violation(testing.check_decoder, built, tmp_path)
    assert found.rule == "decoder" and "bytes, not str" in found.why


def test_a_component_no_pipeline_uses_is_caught(plugin_set) -> None:
    config = testing.compose(plugin_set, ["pipeline=counting"])
    OmegaConf.set_struct(config, False)
    config.dataset = None
    found = violation(testing.check_coverage, plugin_set, {"counting": config}, {})
    assert found.rule == "coverage" and "dataset:counting" in found.why
    testing.check_coverage(plugin_set, {"counting": config}, {"dataset:counting": "tested elsewhere"})


def test_a_hook_module_that_imports_torch_is_caught(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "heavy_hooks.py").write_text(textwrap.dedent("""
        import torch  # the mistake: model code at the top of the hook module
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = violation(testing.check_light_hook_module, "heavy_hooks")
    assert found.rule == "light_hook_module" and "imports torch" in found.why
    assert "heavy_hooks" not in sys.modules


def test_a_config_with_an_unknown_key_is_caught(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "typo_plugin"
    (package / "conf" / "generator").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "conf" / "__init__.py").write_text("")
    (package / "conf" / "generator" / "bigram_typo.yaml").write_text("name: bigram\nvocab_sise: 10\n")
    (package / "hooks.py").write_text(textwrap.dedent("""
        from genloom import hookimpl

        @hookimpl
        def genloom_register_config(register):
            register("typo_plugin.conf")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_set = testing.load_only(["fake_plugin.hooks", "typo_plugin.hooks"])
    found = violation(testing.check_configs_compose, plugin_set, "counting")
    assert found.rule == "configs_compose" and "bigram_typo" in found.where and "vocab_sise" in found.why


def test_violations_read_as_one_sentence() -> None:
    found = ContractViolation("seeded", "generator 'x' in pipeline 'p'", "example 0 differs")
    assert str(found) == "contract rule 'seeded' broken by generator 'x' in pipeline 'p': example 0 differs"


def test_a_component_missing_part_of_its_interface_is_caught(built) -> None:
    class Mute:
        media_type = "text"

        def decode(self, tensor):
            return ""

    built.pipeline.decoder = Mute()  # no write()
    found = violation(testing.check_builds, built)
    assert found.rule == "builds" and "decoder Mute" in found.where and "not a Decoder" in found.why


# ---------------------------------------------------------------------------- rng device


class DrawsOnTheDefaultDevice(Bigram):
    """Noise made without device=: fine on a CPU, "Expected a 'cuda' device type" on CUDA."""

    def generate(self, n, *, condition=None, rng=None, **options):
        noise = torch.randn(n, 8, generator=rng)
        return (noise.abs() * 3).long().clamp(0, self.vocab_size - 1).to(self.bias.device)


class DrawsFromCpuProbabilities(Bigram):
    """Probabilities moved to the CPU before multinomial: the scaffold's old mistake."""

    def generate(self, n, *, condition=None, rng=None, **options):
        probs = torch.softmax(self.bias, -1).expand(n, -1).cpu()
        return torch.multinomial(probs, 8, replacement=True, generator=rng).to(self.bias.device)


class DrawsOnTheRngsDevice(Bigram):
    def generate(self, n, *, condition=None, rng=None, **options):
        noise = torch.randn(n, 8, generator=rng, device=rng.device)
        probs = torch.softmax(self.bias, -1).expand(n, -1)
        picks = torch.multinomial(probs, 8, replacement=True, generator=rng)
        return (picks + noise.abs().long()).clamp(0, self.vocab_size - 1)


def test_a_draw_without_device_is_caught(built) -> None:
    found = violation(testing.check_rng_device, broken(built, DrawsOnTheDefaultDevice()))
    assert found.rule == "rng_device"
    assert "torch.randn(..., generator=rng) without device=" in found.why and "device=rng.device" in found.why


def test_a_draw_from_a_tensor_moved_to_the_cpu_is_caught(built) -> None:
    found = violation(testing.check_rng_device, broken(built, DrawsFromCpuProbabilities()))
    assert found.rule == "rng_device"
    assert "multinomial(..., generator=rng) reads a tensor on the CPU" in found.why


def test_draws_on_the_rngs_device_pass(built) -> None:
    testing.check_rng_device(broken(built, DrawsOnTheRngsDevice()))
    testing.check_rng_device(built)  # the fake plugin's bigram: .to(device) before it draws


# ---------------------------------------------------------------------------- value range


class ReadsFewDigits(DigitDecoder):
    input_range = (0, 4)  # the bigram draws ids up to 9


def test_samples_outside_the_decoders_range_are_caught(built) -> None:
    built.pipeline.decoder = ReadsFewDigits()
    found = violation(testing.check_value_range, built)
    assert found.rule == "value_range" and "decoder 'digits'" in found.where
    assert "but the decoder reads [0, 4] (its input_range)" in found.why
    assert "sample only ids in [0, 4] (mask the logits of any other id)" in found.why  # ids, not values


def test_an_unreadable_input_range_is_caught(built) -> None:
    decoder = DigitDecoder()
    decoder.input_range = (9, 0)
    built.pipeline.decoder = decoder
    assert "is not a (low, high) pair" in violation(testing.check_value_range, built).why


def test_samples_inside_the_decoders_range_pass(built) -> None:
    decoder = DigitDecoder()
    decoder.input_range = (0, 9)
    built.pipeline.decoder = decoder
    testing.check_value_range(built)


# ---------------------------------------------------------------------------- evaluation


class NoisyScore(Bigram):
    """Its validation loss carries noise from the global random state."""

    def loss(self, batch):
        out = super().loss(batch)
        return {**out, "loss": out["loss"] + 0.1 * torch.rand(())}


def test_an_evaluation_that_depends_on_the_global_rng_is_caught(built) -> None:
    found = violation(testing.check_evaluation, broken(built, NoisyScore()))
    assert found.rule == "evaluation" and "scoring the same validation batches twice gave loss" in found.why


def test_a_deterministic_evaluation_passes(built) -> None:
    testing.check_evaluation(built)


# ---------------------------------------------------------------------------- configs of every option


def config_plugin(root: Path, name: str, files: dict[str, str]) -> str:
    """A plugin package ``name`` under ``root`` that ships only config files; its hook module."""
    package = root / name
    for relative, text in {"__init__.py": "", "conf/__init__.py": "", **files}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (package / "hooks.py").write_text(textwrap.dedent(f"""
        from genloom import hookimpl

        @hookimpl
        def genloom_register_config(register):
            register("{name}.conf")
    """))
    return f"{name}.hooks"


UNLISTED_PRESET = """\
    # @package _global_
    defaults:
      - /dataset: counting
      - /encoder: digits
      - /generator: bigram
      - /decoder: digits
    generator:
      vocab_sise: 10
    """


def test_a_preset_the_test_does_not_list_is_checked_key_by_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    hooks = config_plugin(tmp_path, "preset_typo", {"conf/pipeline/unlisted.yaml": UNLISTED_PRESET})
    plugin_set = testing.load_only(["fake_plugin.hooks", hooks])
    found = violation(testing.check_configs_compose, plugin_set, "counting")
    assert found.rule == "configs_compose" and "pipeline/unlisted.yaml" in found.where
    assert "generator.vocab_sise" in found.why


@pytest.mark.parametrize(("package", "body", "message"), [
    ("trainer_key", "defaults:\n  - default\n  - _self_\nmax_step: 3\n",
     "the trainer has no option trainer.max_step"),
    ("trainer_value", "defaults:\n  - default\n  - _self_\nstrategy: zero\n", "trainer.strategy='zero'"),
])
def test_a_trainer_option_a_plugin_ships_is_checked(package, body, message, tmp_path: Path,
                                                    monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    hooks = config_plugin(tmp_path, package, {"conf/trainer/tuned.yaml": body})
    plugin_set = testing.load_only(["fake_plugin.hooks", hooks])
    found = violation(testing.check_configs_compose, plugin_set, "counting")
    assert found.rule == "configs_compose" and "trainer/tuned.yaml" in found.where and message in found.why


def test_a_preset_needing_an_unloaded_plugin_names_also_load(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    preset = UNLISTED_PRESET.replace("vocab_sise", "vocab_size")
    hooks = config_plugin(tmp_path, "reusing_plugin", {"conf/pipeline/reusing.yaml": preset})
    plugin_set = testing.load_only([hooks])  # fake_plugin.hooks, which ships them, is not loaded
    found = violation(testing.build, plugin_set, "reusing")
    assert found.rule == "builds" and found.where == "pipeline 'reusing'"
    assert re.search(r"it needs (dataset=counting|encoder=digits|generator=bigram|decoder=digits), "
                     r"which none of the loaded plugins \(reusing_plugin.hooks\) ships", found.why), found.why
    assert "also_load" in found.why and "pyproject.toml" in found.why
    found = violation(testing.check_configs_compose, plugin_set, "reusing")
    assert "also_load" in found.why and "MissingConfigException" not in found.why


class NeedsItsOwnDevice(Bigram):
    """Refuses an rng on another device than its weights, as CUDA would."""

    def generate(self, n, *, condition=None, rng=None, **options):
        if rng is not None and rng.device != self.bias.device:
            raise RuntimeError(f"Expected a '{self.bias.device.type}' device type for generator")
        return super().generate(n, condition=condition, rng=rng, **options)


class FailsOnTheAccelerator(Bigram):
    """Its first call (the CPU audit) works; the second (on the accelerator) fails as CUDA would."""

    calls = 0

    def generate(self, n, *, condition=None, rng=None, **options):
        type(self).calls += 1
        if type(self).calls > 1:
            raise RuntimeError("Expected a 'cuda' device type for generator but found 'cpu'")
        return super().generate(n, condition=condition, rng=rng, **options)


def test_on_an_accelerator_generate_really_runs_there(built, monkeypatch) -> None:
    # No accelerator here: the CPU stands in for one, so that the real run is exercised.
    monkeypatch.setattr(testing, "_accelerator", lambda: torch.device("cpu"))
    testing.check_rng_device(broken(built, NeedsItsOwnDevice()))
    found = violation(testing.check_rng_device, broken(built, FailsOnTheAccelerator()))
    assert found.rule == "rng_device"
    assert "generate() with the model and rng on cpu fails: RuntimeError: Expected a 'cuda'" in found.why


def test_a_component_option_is_checked_on_a_preset_of_its_kind(tmp_path: Path, monkeypatch) -> None:
    # `noisy` sets generator.noise, which the bigram takes and the unigram does not: the
    # unigram's option passes on `counting`, a base that sets no generator keys.
    monkeypatch.syspath_prepend(str(tmp_path))
    package = tmp_path / "two_generators"
    files = {
        "__init__.py": "",
        "conf/__init__.py": "",
        "conf/generator/unigram.yaml": "name: unigram\nvocab_size: 10\n",
        "conf/pipeline/noisy.yaml": UNLISTED_PRESET.replace("vocab_sise: 10", "noise: 0.1"),
        "components.py": "class Unigram:\n    def __init__(self, *, vocab_size: int = 10) -> None:\n"
                         "        self.vocab_size = vocab_size\n",
        "hooks.py": textwrap.dedent("""
            from genloom import hookimpl

            @hookimpl
            def genloom_register_components(register):
                register("generator", "unigram", "two_generators.components:Unigram", summary="unigram")

            @hookimpl
            def genloom_register_config(register):
                register("two_generators.conf")
        """),
    }
    for relative, text in files.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(textwrap.dedent(text) if relative.endswith(".yaml") else text)
    plugin_set = testing.load_only(["fake_plugin.hooks", "two_generators.hooks"])
    found = violation(testing.check_configs_compose, plugin_set, "noisy")
    assert "generator/unigram.yaml" in found.where and "generator.noise" in found.why
    testing.check_configs_compose(plugin_set, ["noisy", "counting"])
