"""docs/writing-a-plugin.md works as written: its commands run, in order, as a newcomer's would.

The commands are the ``$ `` lines of the tutorial's ``console`` blocks. They run in one
shell (so ``cd`` carries over) in an empty folder, inside a fresh virtual environment
where genloom is installed from its wheel and no plugin is installed. The only change:
``pip install`` runs offline (``--no-index --no-build-isolation``), as tests must.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from venvs import ROOT, clean_env, make_venv, pip_install

pytestmark = pytest.mark.slow

TUTORIAL = ROOT / "docs" / "writing-a-plugin.md"
MARK = "@@@ command"


def tutorial_commands(text: str) -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


@pytest.fixture(scope="module")
def tutorial_run(core_wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("tutorial")
    venv = make_venv(tmp)
    pip_install(venv, "--find-links", core_wheel, "genloom")
    commands = tutorial_commands(TUTORIAL.read_text(encoding="utf-8"))
    offline_pip = (
        f'pip() {{ {shlex.quote(sys.executable)} -m pip --python "$VIRTUAL_ENV/bin/python" "$@" '
        "--quiet --no-index --no-build-isolation; }"
    )
    script = "\n".join(
        ["set -euo pipefail", offline_pip]
        + [f"echo '{MARK} {i}'\n{command}" for i, command in enumerate(commands)]
    )
    work = tmp / "work"
    work.mkdir()
    result = subprocess.run(["bash", "-c", script], cwd=work, env=clean_env(venv),
                            capture_output=True, text=True, timeout=900, check=False)
    parts = result.stdout.split(MARK)
    outputs = {commands[int(p.split("\n", 1)[0])]: p.split("\n", 1)[1] for p in parts[1:]}
    assert result.returncode == 0, (
        f"tutorial command {commands[len(outputs) - 1]!r} failed:\n{parts[-1]}\n{result.stderr[-4000:]}"
    )
    return work / "plugin-tutorial", outputs


def output_of(outputs: dict[str, str], prefix: str) -> str:
    (out,) = [text for command, text in outputs.items() if command.startswith(prefix)]
    return out


def test_the_tutorial_has_the_steps_it_promises() -> None:
    commands = tutorial_commands(TUTORIAL.read_text(encoding="utf-8"))
    for step in ("genloom new-plugin", "pip install", "genloom plugins --check", "genloom train",
                 "genloom sample", "pytest"):
        assert any(step in c for c in commands), step


def test_genloom_finds_the_new_plugin(tutorial_run) -> None:
    _, outputs = tutorial_run
    listing = outputs["genloom plugins"]
    assert "sketches (genloom-sketches 0.1.0): ok" in listing
    assert "generator:" in listing and "sketches" in listing
    assert "no problems found" in outputs["genloom plugins --check"]


def test_the_trained_plugin_samples_pictures(tutorial_run) -> None:
    folder, _ = tutorial_run
    pictures = sorted((folder / "runs" / "discs" / "samples").glob("sample_*.pgm"))
    assert len(pictures) == 8
    assert all(p.read_bytes().startswith(b"P5 16 16 255\n") for p in pictures)
    assert (folder / "runs" / "sketches" / "plugins.json").read_text().count("genloom-sketches") == 1


def test_the_sweep_ran_each_setting(tutorial_run) -> None:
    folder, _ = tutorial_run
    for job in ("0", "1"):
        assert (folder / "runs" / "sweep" / job / "checkpoints" / "latest").is_file()


def test_the_plugins_own_tests_pass(tutorial_run) -> None:
    _, outputs = tutorial_run
    assert re.search(r"\b\d+ passed\b", output_of(outputs, "cd genloom-sketches"))


def test_the_hook_reference_is_printed(tutorial_run) -> None:
    _, outputs = tutorial_run
    assert "## genloom_register_components(register" in output_of(outputs, "genloom hooks")


def test_describe_shows_the_batches_and_the_samples(tutorial_run) -> None:
    _, outputs = tutorial_run
    described = output_of(outputs, "genloom describe")
    assert "x            (1, 8, 8) float32, values in [0, 1]" in described
    assert "sample_spec       (1, 8, 8) float32" in described and "media_type        image" in described


def test_the_generator_only_plugin_reuses_the_first(tutorial_run) -> None:
    folder, outputs = tutorial_run
    assert '"genloom-sketches",' in (folder / "genloom-mixer" / "pyproject.toml").read_text()
    assert re.search(r"\b\d+ passed\b", output_of(outputs, "cd genloom-mixer"))
