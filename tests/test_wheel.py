"""The built wheels work on their own, not only the editable checkout.

Builds the core and text wheels, installs them into a fresh virtual environment whose
third-party dependencies (torch, Hydra...) come from this environment, as system
site-packages would provide them, and runs `genloom plugins` and a two-step training run.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("genloom", "__editable__", "fake_plugin")
# Build from clean copies so setuptools' build/ folders never land in the checkout.
IGNORED = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests")

pytestmark = pytest.mark.slow


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheels")
    core = tmp / "src" / "genloom"
    for part in ("core", "conf"):
        shutil.copytree(ROOT / part, core / part, ignore=IGNORED)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, core / file)
    text = shutil.copytree(ROOT / "plugins" / "text", tmp / "src" / "genloom-text", ignore=IGNORED)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps",
        "--wheel-dir", tmp / "dist", core, text)

    # Everything but genloom itself, visible to the fresh venv like system site-packages.
    provided = tmp / "provided"
    provided.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(OURS) and not entry.name.endswith(".pth"):
            (provided / entry.name).symlink_to(entry)

    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    Path(site, "provided.pth").write_text(f"{provided}\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index",
        "--find-links", tmp / "dist", "genloom", "genloom-text")
    return venv


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GENLOOM"))}


def test_installed_wheels_list_the_text_plugin(wheel_env, tmp_path):
    out = run(wheel_env / "bin" / "genloom", "plugins", "--json", cwd=tmp_path, env=clean_env()).stdout
    (text,) = [p for p in json.loads(out) if p["name"] == "text"]
    assert text["status"] == "ok" and text["distribution"] == "genloom-text"
    assert "transformer" in text["config_groups"]["generator"]
    where = run(wheel_env / "bin" / "python", "-c",
                "import genloom, genloom.conf, genloom_text; "
                "print(genloom.__file__, genloom.conf.__file__, genloom_text.__file__)",
                cwd=tmp_path, env=clean_env()).stdout
    assert str(ROOT) not in where and where.count(str(wheel_env)) == 3


def test_installed_wheels_train_two_steps(wheel_env, tmp_path):
    run(wheel_env / "bin" / "genloom", "train", "pipeline=text_debug", "trainer=debug",
        "trainer.max_steps=2", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path, env=clean_env())
    assert (tmp_path / "run" / "checkpoints" / "step_000002" / "model.safetensors").is_file()
