"""The third-party example plugin works the way a stranger's would: installed from its wheel.

`examples/genloom-example-plugin` is built into a wheel and installed, with the core's
wheel and nothing else of genloom, into a fresh virtual environment. There genloom must
find it through its entry point, train and sample it with its own config groups, and its
own tests (the contract kit among them) must pass against the installed copy.
"""

from __future__ import annotations

import json
import shutil

import pytest
from venvs import ROOT, build_wheels, clean_copy, clean_env, make_venv, pip_install, run

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "genloom-example-plugin"


@pytest.fixture(scope="module")
def venv(core_wheel, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("example")
    dist = build_wheels(tmp / "dist", clean_copy(EXAMPLE, tmp))
    venv = make_venv(tmp)
    pip_install(venv, "--find-links", core_wheel, "--find-links", dist, "genloom", "genloom-example-plugin")
    return venv


def genloom(venv, *args, cwd):
    return run(venv / "bin" / "genloom", *args, cwd=cwd, env=clean_env(venv))


def test_genloom_finds_the_installed_example_and_only_it(venv, tmp_path) -> None:
    listing = json.loads(genloom(venv, "plugins", "--json", cwd=tmp_path).stdout)
    # genloom's built-in plugin (encoder/decoder from_checkpoint) comes with the core.
    assert [(p["name"], p["distribution"], p["status"]) for p in listing] == [
        ("genloom", "genloom", "ok"), ("pixelcnn", "genloom-example-plugin", "ok")]
    example = listing[1]
    assert example["components"]["generator"] == ["pixelcnn"]
    assert {"pixelcnn_debug", "pixelcnn_digits"} <= set(example["config_groups"]["pipeline"])
    assert "no problems found" in genloom(venv, "plugins", "--check", cwd=tmp_path).stdout


def test_the_example_trains_and_samples_through_the_cli(venv, tmp_path) -> None:
    genloom(venv, "train", "pipeline=pixelcnn_debug", "trainer=debug", "trainer.progress=false",
            f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert json.loads((tmp_path / "run" / "plugins.json").read_text()) == {
        "genloom": "0.1.0", "genloom-example-plugin": "0.1.0"}
    genloom(venv, "sample", f"checkpoint={tmp_path / 'run'}", "n=4", "label=3",
            f"hydra.run.dir={tmp_path / 'sample'}", cwd=tmp_path)
    pngs = sorted((tmp_path / "sample" / "samples").glob("*.png"))
    assert len(pngs) >= 4 and all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)


def test_the_examples_own_tests_and_the_contract_kit_pass_installed(venv, tmp_path) -> None:
    tests = shutil.copytree(EXAMPLE / "tests", tmp_path / "tests")  # not the source: the installed copy
    result = run(venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", tests,
                 cwd=tmp_path, env=clean_env(venv))
    assert "passed" in result.stdout and "TestExampleContract" in run(
        venv / "bin" / "python", "-m", "pytest", "--co", "-q", tests, cwd=tmp_path, env=clean_env(venv)
    ).stdout
