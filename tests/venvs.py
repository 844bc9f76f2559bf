"""Fresh virtual environments with genloom installed from wheels, as a user's would be.

Wheels are built from clean copies of the sources (so setuptools' build/ folders never
land in the checkout). Third-party dependencies (torch, Hydra, pytest...) come from this
environment through a ``.pth`` file, as system site-packages would provide them: nothing
is downloaded, and nothing of genloom's own comes along.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("genloom", "__editable__", "fake_plugin")
IGNORED = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests", ".pytest_cache")


def run(*args: object, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def core_source(tmp: Path) -> Path:
    """A clean copy of the core distribution's sources."""
    core = tmp / "src" / "genloom"
    for part in ("core", "conf"):
        shutil.copytree(ROOT / part, core / part, ignore=IGNORED)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, core / file)
    return core


def clean_copy(source: Path, tmp: Path) -> Path:
    return shutil.copytree(source, tmp / "src" / source.name, ignore=IGNORED)


def build_wheels(dist: Path, *sources: Path) -> Path:
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps",
        "--wheel-dir", dist, *sources)
    return dist


def make_venv(tmp: Path) -> Path:
    """A venv that sees this environment's third-party packages, but no genloom."""
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
    return venv


def pip_install(venv: Path, *args: object) -> None:
    """pip (this environment's) installing into ``venv``, offline."""
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet",
        "--no-index", "--no-build-isolation", *args)


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """This process's environment without Python or genloom settings; ``venv`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GENLOOM", "VIRTUAL_ENV"))}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    return env
