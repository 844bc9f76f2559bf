"""`genloom new-plugin`: every modality's plugin passes its own tests as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from genloom import cli, plugins, scaffold, testing

CONTRACT_RULES = 14  # tests of PluginContract per preset; the end-to-end test makes one more


def run_tests(root: Path, *pythonpath: Path) -> subprocess.CompletedProcess:
    """The written plugin's tests load it by module (no install needed) and run the contract kit."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root, env={"PYTHONPATH": os.pathsep.join(map(str, (root, *pythonpath))), "PATH": ""},
        capture_output=True, text=True, check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("modality", scaffold.MODALITIES)
def test_the_written_plugin_passes_its_tests(modality, tmp_path, capsys) -> None:
    args = ["new-plugin", f"my{modality}", "--modality", modality, "--directory", str(tmp_path)]
    assert cli.main(args) == 0
    root = tmp_path / f"genloom-my{modality}"
    assert f"pip install -e '{root}[test]'" in capsys.readouterr().out
    result = run_tests(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{CONTRACT_RULES + 1} passed" in result.stdout


@pytest.fixture
def image_plugin(tmp_path, monkeypatch) -> Path:
    """A scaffolded image plugin, the only plugin of the process: its presets are the ones to reuse."""
    assert scaffold.write("pictures", "image", tmp_path).is_dir()
    root = tmp_path / "genloom-pictures"
    monkeypatch.syspath_prepend(str(root))
    plugins.set_active(testing.load_only(["genloom_pictures.plugin"]))
    yield root
    plugins.set_active(None)
    for module in [m for m in sys.modules if m.startswith("genloom_pictures")]:
        del sys.modules[module]


@pytest.mark.slow
def test_a_generator_only_plugin_reuses_another_plugins_components(image_plugin, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["new-plugin", "mixer", "--generator-only", "pictures_debug", "--directory", str(out)]
    assert cli.main(args) == 0, capsys.readouterr().err
    root = out / "genloom-mixer"
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert {f"genloom_mixer/conf/{c}.yaml" for c in ("generator/mixer", "pipeline/mixer_debug")} <= files
    assert not any("/conf/dataset/" in f or "/conf/decoder/" in f for f in files)
    # loaded by module here, the plugin's name stands for its distribution (pip reads _ as -)
    assert '"genloom_pictures",  # its dataset, encoder and decoder' in (root / "pyproject.toml").read_text()
    assert 'also_load = ["genloom_pictures.plugin"]' in (root / "tests" / "test_contract.py").read_text()
    generator = (root / "genloom_mixer" / "conf" / "generator" / "mixer.yaml").read_text()
    assert "key: x" in generator and "shape: [1, 8, 8]" in generator and "num_classes: 4" in generator
    plugin_py = (root / "genloom_mixer" / "plugin.py").read_text()
    assert plugin_py.count("register(") == 2 and '"generator", "mixer"' in plugin_py
    result = run_tests(root, image_plugin)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{CONTRACT_RULES + 1} passed" in result.stdout


def test_a_generator_only_plugin_needs_float_examples(fake_plugins, tmp_path, capsys) -> None:
    args = ["new-plugin", "mixer", "--generator-only", "counting", "--directory", str(tmp_path)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "--generator-only counting: the generator written is a mixture of Gaussians" in err
    assert "tokens       (8) int64" in err and not any(tmp_path.iterdir())


def test_a_generator_only_plugin_takes_no_modality(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["new-plugin", "mixer", "--generator-only", "x", "--modality", "image"])
    assert "leave out --modality" in capsys.readouterr().err


@pytest.mark.parametrize(("modality", "declared"), [
    ("text", "input_range = (0, 255)"), ("image", "input_range = (0.0, 1.0)"),
    ("audio", "input_range = (-1.0, 1.0)"),
])
def test_the_written_decoders_declare_what_they_read(modality, declared) -> None:
    components = scaffold.render("melody", modality)["genloom_melody/components.py"]
    assert declared in components
    assert ".cpu()" not in components.split("class MelodyDecoder")[0]  # draws stay on rng's device


def test_the_written_files_are_a_distribution_with_an_entry_point(tmp_path) -> None:
    files = scaffold.render("melody", "audio")
    pyproject = files["pyproject.toml"]
    assert 'name = "genloom-melody"' in pyproject
    assert 'melody = "genloom_melody.plugin"' in pyproject
    assert '"genloom>=0.1,<0.2"' in pyproject
    assert 'genloom_melody = ["conf/**/*.yaml"]' in pyproject
    assert "import torch" not in files["genloom_melody/plugin.py"]
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")
        if path.endswith(".yaml"):
            assert text.startswith("# "), path
    assert sorted(p for p in files if "/conf/pipeline/" in p) == [
        "genloom_melody/conf/pipeline/melody.yaml", "genloom_melody/conf/pipeline/melody_debug.yaml"]


@pytest.mark.parametrize(("name", "message"), [
    ("Melody", "lowercase"), ("2tone", "lowercase"), ("class", "lowercase"), ("my-plugin", "lowercase"),
])
def test_bad_names_are_refused(name, message, tmp_path, capsys) -> None:
    assert cli.main(["new-plugin", name, "--directory", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_existing_folder_is_never_overwritten(tmp_path, capsys) -> None:
    (tmp_path / "genloom-melody").mkdir()
    (tmp_path / "genloom-melody" / "mine.txt").write_text("keep me")
    assert cli.main(["new-plugin", "melody", "--directory", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "genloom-melody" / "mine.txt").read_text() == "keep me"
