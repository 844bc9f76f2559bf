"""The built wheels work on their own, not only the editable checkout.

Builds the core, text and blocks wheels, installs them into a fresh virtual environment whose
third-party dependencies (torch, Hydra...) come from this environment, as system
site-packages would provide them, and runs `genloom plugins` and a two-step training run.
"""

import json

import pytest
from venvs import ROOT, build_wheels, clean_copy, clean_env, make_venv, pip_install, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_env(core_wheel, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheels")
    # genloom-text samples with genloom_blocks.sampling, so its wheel needs genloom-blocks'.
    dist = build_wheels(tmp / "dist", clean_copy(ROOT / "plugins" / "text", tmp),
                        clean_copy(ROOT / "plugins" / "blocks", tmp))
    venv = make_venv(tmp)
    pip_install(venv, "--find-links", core_wheel, "--find-links", dist, "genloom", "genloom-text")
    return venv


def test_installed_wheels_list_the_text_plugin(wheel_env, tmp_path):
    out = run(wheel_env / "bin" / "genloom", "plugins", "--json", cwd=tmp_path,
              env=clean_env(wheel_env)).stdout
    (text,) = [p for p in json.loads(out) if p["name"] == "text"]
    assert text["status"] == "ok" and text["distribution"] == "genloom-text"
    assert "transformer" in text["config_groups"]["generator"]
    (core,) = [p for p in json.loads(out) if p["name"] == "genloom"]  # the built-in plugin and its config
    assert core["status"] == "ok" and core["config_groups"]["encoder"] == ["from_checkpoint"]
    where = run(wheel_env / "bin" / "python", "-c",
                "import genloom, genloom.conf, genloom_text; "
                "print(genloom.__file__, genloom.conf.__file__, genloom_text.__file__)",
                cwd=tmp_path, env=clean_env(wheel_env)).stdout
    assert str(ROOT) not in where and where.count(str(wheel_env)) == 3


def test_installed_wheels_train_two_steps(wheel_env, tmp_path):
    run(wheel_env / "bin" / "genloom", "train", "pipeline=text_debug", "trainer=debug",
        "trainer.max_steps=2", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path, env=clean_env(wheel_env))
    assert (tmp_path / "run" / "checkpoints" / "step_000002" / "model.safetensors").is_file()
