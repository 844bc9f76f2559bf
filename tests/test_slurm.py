"""The SLURM launcher configs compose without a cluster, and a SLURM task finds its rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from genloom import distributed
from genloom.config import PluginConfigSearchPath
from hydra import compose, initialize_config_module
from hydra.core.plugins import Plugins


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_the_slurm_launchers_compose(launcher, fake_plugins) -> None:
    Plugins.instance().register(PluginConfigSearchPath)
    with initialize_config_module("genloom.conf", version_base=None):
        cfg = compose("train", overrides=["pipeline=counting", f"hydra/launcher={launcher}"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    if launcher == "slurm":  # genloom's defaults on top of the plugin's
        assert (cfg.hydra.launcher.gpus_per_node, cfg.hydra.launcher.tasks_per_node) == (1, 1)
        assert cfg.hydra.launcher.timeout_min == 240


def test_cfg_hydra_shows_the_launcher_chosen_on_the_command_line(tmp_path) -> None:
    launcher = Path(__file__).parent / "fake_torchrun.py"  # genloom with the fake plugin only
    out = subprocess.run(
        [sys.executable, str(launcher), "train", "pipeline=counting", "hydra/launcher=slurm",
         "hydra.launcher.partition=gpu", "--cfg", "hydra"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out
    assert "partition: gpu" in out and "hydra/launcher: slurm" in out


def test_a_multi_task_slurm_job_exports_torch_ranks(monkeypatch) -> None:
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what submitit exports stays in this test
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4",
             "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "2",
             "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NODEID": "1"}
    os.environ.update(slurm)
    assert distributed.launched_ranks() == (3, 4)
    assert os.environ["LOCAL_RANK"] == "1" and os.environ["MASTER_ADDR"] == "gpu07"
