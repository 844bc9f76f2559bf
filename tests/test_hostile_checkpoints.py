"""A stranger's checkpoint: whatever its files hold, loading ends in one message, fast.

Each test starts from a real checkpoint of the fake plugin, damages one file the way an
attacker (or a bad disk) would, and runs the real command line on it: it must exit 1,
within seconds, with one message that names the file, and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import fake_plugin
import pytest
import torch
from genloom import checkpoint, cli, hookimpl, plugins
from genloom.interfaces import SampleSpec
from genloom.plugins import PluginSource, load_plugins
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

CONFIG = {
    "dataset": {"name": "counting", "length": 8, "vocab_size": 6, "examples": 64},
    "encoder": {"name": "digits"},
    "generator": {"name": "bigram", "vocab_size": 6, "length": 8},
    "decoder": {"name": "digits"},
}
SECRET = "s3cr3t-from-the-environment"
LIMIT_S = 20  # far more than any of these needs; what they took before the fix was unbounded


class Stack(nn.Module):
    """A deep generator for the tests of absurd sizes: ``n_layer`` linear layers."""

    def __init__(self, *, n_layer: int = 2, width: int = 3, cache: int = 0) -> None:
        super().__init__()
        self.sample_spec = SampleSpec(shape=(2,), dtype=torch.long)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layer))
        self.register_buffer("cache", torch.zeros(cache), persistent=False)  # e.g. a rope table

    def loss(self, batch):  # noqa: ANN001, ANN201
        return {"loss": self.layers[0].weight.sum()}

    def generate(self, n, *, condition=None, rng=None):  # noqa: ANN001, ANN201
        return torch.zeros(n, 2, dtype=torch.long)


@hookimpl
def genloom_register_components(register):  # noqa: ANN001, ANN201
    register("generator", "stack", f"{__name__}:Stack", summary="linear layers")


@pytest.fixture
def fakes():
    """The fake plugin, and this module as a second plugin that adds ``stack``."""
    this = PluginSource("hostile", lambda: sys.modules[__name__], __name__, "genloom-hostile", "0.0.1")
    plugin_set = load_plugins([fake_plugin.source(), this], strict=True, disabled=[])
    plugins.set_active(plugin_set)
    yield plugin_set
    plugins.set_active(None)


def write_checkpoint(directory: Path, config: dict = CONFIG) -> Path:
    """A real checkpoint of ``config``'s generator, as `genloom train` writes it."""
    from fake_plugin.components import Bigram

    generator = config["generator"]
    torch.manual_seed(0)
    options = {k: v for k, v in generator.items() if k != "name"}
    model = Bigram(**options) if generator["name"] == "bigram" else Stack(**options)
    return checkpoint.save(directory, step=3, model=model, config=OmegaConf.create(config),
                           plugins={"genloom-fake": "0.0.1"})


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail (rather than hang the suite) when the body runs past ``seconds``."""

    def expired(signum, frame):  # noqa: ANN001, ANN202
        raise TimeoutError(f"still running after {seconds} s: loading hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(command: str, step_dir: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, float]:
    """``genloom COMMAND checkpoint=...``: its exit status, everything it said, and seconds."""
    start = time.monotonic()
    with time_limit(LIMIT_S):
        status = cli.main([command, f"checkpoint={step_dir}", f"hydra.run.dir={tmp_path / 'out'}", *extra])
    captured = capsys.readouterr()
    return status, captured.out + captured.err, time.monotonic() - start


def refused(step_dir: Path, tmp_path: Path, capsys, file: str, *, command: str = "sample") -> str:
    """Load the damaged checkpoint; check the one-message refusal that names ``file``."""
    status, said, _ = run(command, step_dir, tmp_path, capsys)
    assert status == 1, said
    assert "Traceback" not in said
    assert str(step_dir / file) in said, said
    assert SECRET not in said
    errors = [line for line in said.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, said
    return errors[0]


def edit_config(step_dir: Path, text: str) -> None:
    (step_dir / "config.yaml").write_text(text)


def change_config(step_dir: Path, **changes: object) -> None:
    """Merge ``changes`` into the checkpoint's config.yaml (kept unresolved)."""
    config = OmegaConf.merge(OmegaConf.load(step_dir / "config.yaml"), OmegaConf.create(changes))
    edit_config(step_dir, OmegaConf.to_yaml(config))


# --- item 7: config.yaml is never interpolated, and YAML aliases are refused --------------


def test_an_environment_interpolation_is_refused_and_its_value_never_shown(
    fakes, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("GENLOOM_HOSTILE", SECRET)
    step_dir = write_checkpoint(tmp_path / "ckpt")
    change_config(step_dir, generator={"name": "${oc.env:GENLOOM_HOSTILE}"})
    error = refused(step_dir, tmp_path, capsys, "config.yaml")
    assert "generator.name holds an interpolation" in error


def test_an_exponential_interpolation_chain_is_refused_at_once(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    chain = {"a0": "x", **{f"a{i}": f"${{a{i - 1}}}${{a{i - 1}}}" for i in range(1, 60)}}
    change_config(step_dir, chain=chain, generator={"length": "${chain.a59}"})
    assert "holds an interpolation" in refused(step_dir, tmp_path, capsys, "config.yaml")


def test_a_yaml_alias_bomb_in_an_unused_key_is_refused_at_once(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    bomb = ["bomb:", "  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]  # 10**7 leaves
    edit_config(step_dir, (step_dir / "config.yaml").read_text() + "\n".join(bomb) + "\n")
    status, said, seconds = run("sample", step_dir, tmp_path, capsys)
    assert status == 1 and seconds < 10, said
    assert "found the alias *l0; genloom configs hold no YAML aliases" in said
    assert str(step_dir / "config.yaml") in said and "Traceback" not in said


def test_a_literal_dollar_brace_stays_literal_through_save_and_load(tmp_path):
    # As a user writes them in YAML (escaped), and the literal values training sees.
    written = [r"\${not.an.interpolation}", r"\\\${x}", r"a\b $ alone"]
    literal = ["${not.an.interpolation}", r"\${x}", r"a\b $ alone"]
    config = OmegaConf.create({**CONFIG, "dataset": {"name": "counting", "notes": written}})
    assert OmegaConf.to_container(config, resolve=True)["dataset"]["notes"] == literal
    step_dir = checkpoint.save(tmp_path, step=1, model=nn.Linear(1, 1), config=config, plugins={})
    loaded = checkpoint.read(step_dir).config
    assert OmegaConf.to_container(loaded, resolve=True)["dataset"]["notes"] == literal


# --- item 8: only regular files, each within a size bound ---------------------------------


def test_a_fifo_config_does_not_hang(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    (step_dir / "config.yaml").unlink()
    os.mkfifo(step_dir / "config.yaml")
    assert "is a FIFO, not a regular file" in refused(step_dir, tmp_path, capsys, "config.yaml")


def test_meta_json_linked_to_dev_zero_is_refused_without_reading_it(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    (step_dir / "meta.json").unlink()
    (step_dir / "meta.json").symlink_to("/dev/zero")
    assert "is a device, not a regular file" in refused(step_dir, tmp_path, capsys, "meta.json")


def test_an_oversized_config_is_refused_unread(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    with open(step_dir / "config.yaml", "ab") as f:
        f.truncate(checkpoint.CONFIG_LIMIT + 1)
    assert "is larger than 1,048,576 bytes" in refused(step_dir, tmp_path, capsys, "config.yaml")


# --- item 9: absurd shapes are refused before anything is allocated ------------------------


@pytest.mark.parametrize(("vocab_size", "expected"), [
    (10**9, "generator 'bigram' with these options would have more than 1,048,744 parameters"),  # 4 TB
    (10**10, "does not build: RuntimeError: Storage size calculation overflowed"),  # past int64
])
def test_an_absurd_size_is_refused_before_it_is_allocated(fakes, tmp_path, capsys, vocab_size, expected):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    change_config(step_dir, generator={"vocab_size": vocab_size})
    assert expected in refused(step_dir, tmp_path, capsys, "config.yaml")


def test_a_hundred_thousand_layers_are_refused_in_a_moment(fakes, tmp_path, capsys):
    config = {**CONFIG, "generator": {"name": "stack", "n_layer": 2}}
    step_dir = write_checkpoint(tmp_path / "ckpt", config)
    change_config(step_dir, generator={"n_layer": 100_000})
    start = time.monotonic()
    error = refused(step_dir, tmp_path, capsys, "config.yaml")
    assert time.monotonic() - start < 10
    assert "generator 'stack' with these options would have more than" in error
    assert f"{step_dir / 'model.safetensors'} holds 24 values in 4 tensors" in error


def test_weights_of_other_shapes_are_refused_before_the_model_is_allocated(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    change_config(step_dir, generator={"vocab_size": 7})
    error = refused(step_dir, tmp_path, capsys, "model.safetensors")
    assert "logits.weight is (6, 6) there, (7, 7) in the model" in error


def test_a_buffer_larger_than_memory_is_refused_before_it_is_allocated(fakes, tmp_path, capsys):
    config = {**CONFIG, "generator": {"name": "stack", "n_layer": 2}}
    step_dir = write_checkpoint(tmp_path / "ckpt", config)
    change_config(step_dir, generator={"cache": 10**14})
    error = refused(step_dir, tmp_path, capsys, "config.yaml")
    assert "would hold buffers larger than all" in error and "refusing to build it" in error


# --- item 10: no Hydra instantiation keys anywhere; option values have their declared types


@pytest.mark.parametrize("changes", [
    {"generator": {"length": {"_target_": "os.system", "_args_": ["echo pwned"]}}},
    {"_target_": "os.system"},
    {"trainer": {"_partial_": True}},
    {"decoder": {"_recursive_": False}},
], ids=["nested-in-an-option", "at-the-root", "in-trainer", "in-a-component"])
def test_instantiation_keys_are_refused_anywhere_in_a_checkpoint_config(fakes, tmp_path, capsys, changes):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    change_config(step_dir, **changes)
    assert "genloom builds components by registry name only" in refused(
        step_dir, tmp_path, capsys, "config.yaml"
    )


def test_an_option_of_the_wrong_type_names_the_key_and_the_type(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    change_config(step_dir, generator={"vocab_size": "abc"})
    error = refused(step_dir, tmp_path, capsys, "config.yaml")
    expected = "generator.vocab_size='abc': expected an integer (generator 'bigram' declares vocab_size: int)"
    assert expected in error


# --- item 11: damaged files -----------------------------------------------------------------


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def header_claiming(path: Path, length: int) -> None:
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", length) + data[8:])


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda p: truncate(p, 0), "is empty or truncated (0 bytes)"),
    (lambda p: truncate(p, 5), "is empty or truncated (5 bytes)"),
    (lambda p: truncate(p, p.stat().st_size - 10), "the file is truncated"),
    (lambda p: header_claiming(p, 2**63), "its header claims 9,223,372,036,854,775,808 bytes"),
    (lambda p: p.write_bytes(os.urandom(4096)), "is damaged or truncated"),
    (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"[1] " + bytes(8)), "not a JSON object"),
    (lambda p: p.write_bytes(struct.pack("<Q", 11) + b'{"a": "b"} '), "has no dtype, shape and offsets"),
], ids=["empty", "5-bytes", "truncated-data", "absurd-header-length", "garbage", "header-a-list",
        "entry-not-a-dict"])
def test_a_damaged_weights_file_is_one_message(fakes, tmp_path, capsys, damage, expected):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    damage(step_dir / "model.safetensors")
    assert expected in refused(step_dir, tmp_path, capsys, "model.safetensors")


def test_nan_weights_are_refused_on_load(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    weights = checkpoint.read_weights(step_dir)
    weights["bias"][2] = math.nan
    save_file(weights, str(step_dir / "model.safetensors"))
    error = refused(step_dir, tmp_path, capsys, "model.safetensors")
    assert "holds NaN or infinite values in bias" in error


@pytest.mark.parametrize(("meta", "expected"), [
    ({"format": 1}, "has no 'step'"),
    ({"format": 1, "step": "3"}, "has step '3'; a step is a whole number"),
    ({"format": 1, "step": True}, "has step True"),
    ("STEP", "has step inf"),
    ({"format": 1, "step": 3, "plugins": ["genloom-fake"]}, "has 'plugins' ['genloom-fake']"),
    ([1, 2], "must hold a JSON object, not list"),
    ("[" * 100_000, "is not valid JSON"),
    ({"format": 9, "step": 3}, "says format 9"),
], ids=["no-step", "step-a-string", "step-a-bool", "step-1e999", "plugins-a-list", "a-list",
        "deeply-nested", "other-format"])
def test_a_damaged_meta_json_is_one_message(fakes, tmp_path, capsys, meta, expected):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    text = '{"format": 1, "step": 1e999}' if meta == "STEP" else meta if isinstance(meta, str) else (
        json.dumps(meta))
    (step_dir / "meta.json").write_text(text)
    assert expected in refused(step_dir, tmp_path, capsys, "meta.json")


@pytest.mark.parametrize(("text", "expected"), [
    ("generator: !!python/object/apply:os.system ['echo pwned']\n", "is not valid YAML"),
    ("generator: [unclosed\n", "is not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping of config keys, not list"),
    ("", "must hold a mapping of config keys, not NoneType"),
    ("a: 1\na: 2\n", "found duplicate key a"),
    ("a: ${\n", "holds an interpolation"),
], ids=["python-tag", "does-not-parse", "a-list", "empty", "duplicate-key", "broken-interpolation"])
def test_a_damaged_config_yaml_is_one_message(fakes, tmp_path, capsys, text, expected):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    edit_config(step_dir, text)
    assert expected in refused(step_dir, tmp_path, capsys, "config.yaml")


# --- the same path for every command ----------------------------------------------------------


def test_eval_loads_through_the_same_checks(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    change_config(step_dir, generator={"vocab_size": 10**9})
    assert "refusing to build it" in refused(step_dir, tmp_path, capsys, "config.yaml", command="eval")


def test_resuming_from_a_truncated_weights_file_is_one_message(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    truncate(step_dir / "model.safetensors", 100)
    args = ["train", "pipeline=counting", "trainer=debug", "trainer.progress=false", "generator.vocab_size=6",
            f"trainer.resume={step_dir}", f"hydra.run.dir={tmp_path / 'run'}"]
    with time_limit(LIMIT_S):
        status = cli.main(args)
    said = "".join(capsys.readouterr())
    assert status == 1 and "Traceback" not in said
    assert f"{step_dir / 'model.safetensors'} is damaged or truncated" in said


def test_resuming_from_a_fifo_trainer_state_does_not_hang(fakes, tmp_path, capsys):
    args = ["train", "pipeline=counting", "trainer=debug", "trainer.progress=false"]
    assert cli.main([*args, f"hydra.run.dir={tmp_path / 'first'}"]) == 0
    step_dir = checkpoint.resolve(tmp_path / "first")
    (step_dir / "trainer.safetensors").unlink()
    os.mkfifo(step_dir / "trainer.safetensors")
    capsys.readouterr()
    args += [f"trainer.resume={step_dir}", f"hydra.run.dir={tmp_path / 'run'}"]
    with time_limit(LIMIT_S):
        status = cli.main(args)
    said = "".join(capsys.readouterr())
    assert status == 1 and "Traceback" not in said
    assert f"{step_dir / 'trainer.safetensors'} is a FIFO" in said


def test_an_oversized_latest_file_is_refused_unread(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "latest").write_text(step_dir.name + " " * (checkpoint.LATEST_LIMIT + 1))
    status, said, _ = run("sample", tmp_path / "ckpt", tmp_path, capsys, "n=1")
    assert status == 1 and "Traceback" not in said
    assert "latest is larger than" in said


def test_a_sound_checkpoint_still_samples(fakes, tmp_path, capsys):
    step_dir = write_checkpoint(tmp_path / "ckpt", {**CONFIG, "generator": {"name": "stack", "n_layer": 3}})
    status, said, _ = run("sample", step_dir, tmp_path, capsys, "n=2", "stream=false")
    assert status == 0, said
    assert len(list((tmp_path / "out" / "samples").glob("*.txt"))) == 2


def test_the_meta_build_initialises_nothing_and_imports_no_compiler():
    """Random init on meta would import torch._dynamo: seconds added to every `genloom sample`."""
    script = (
        "import sys, torch\n"
        "from genloom.sampler import _NoDataOnMeta\n"
        "with torch.device('meta'), _NoDataOnMeta():\n"
        "    layers = [torch.nn.Embedding(9, 4), torch.nn.Linear(4, 4), torch.nn.Conv2d(3, 4, 3),\n"
        "              torch.nn.LayerNorm(4), torch.nn.ConvTranspose1d(4, 4, 3)]\n"
        "    torch.nn.init.trunc_normal_(layers[1].weight)\n"
        "assert all(p.is_meta for layer in layers for p in layer.parameters())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
