"""`genloom new-plugin`: every modality's plugin passes its own tests as written."""

from __future__ import annotations

import subprocess
import sys

import pytest
from genloom import cli, scaffold

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("modality", scaffold.MODALITIES)
def test_the_written_plugin_passes_its_tests(modality, tmp_path, capsys) -> None:
    args = ["new-plugin", f"my{modality}", "--modality", modality, "--directory", str(tmp_path)]
    assert cli.main(args) == 0
    root = tmp_path / f"genloom-my{modality}"
    assert f"pip install -e '{root}[test]'" in capsys.readouterr().out
    # Its tests load the plugin by module (no install needed) and run the contract kit.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "11 passed" in result.stdout


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
