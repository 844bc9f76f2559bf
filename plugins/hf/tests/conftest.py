"""Fixtures shared by the Hugging Face plugin's tests: tiny random model directories, the plugins.

The models are written by ``genloom_hf.random_model`` (``save_pretrained`` of a random
GPT-2 or Llama, 2 layers, width 32, a 384-id byte-level BPE): nothing is downloaded.
"""

from pathlib import Path

import pytest
from genloom.plugins import PluginSet
from genloom.testing import load_only
from genloom_hf.random_model import write_random_model

PLUGINS = ("genloom_hf.plugin", "genloom_text.plugin")  # the presets read the text datasets


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    return write_random_model(tmp_path_factory.mktemp("tiny-gpt2"), family="gpt2")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return write_random_model(tmp_path_factory.mktemp("tiny-llama"), family="llama")


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def model_dir(request, gpt2_dir, llama_dir) -> Path:
    """Each family in turn."""
    return {"gpt2": gpt2_dir, "llama": llama_dir}[request.param]


@pytest.fixture(scope="module")
def hf_plugins() -> PluginSet:
    """This plugin and the text plugin alone, loaded as genloom loads any plugin."""
    return load_only(PLUGINS)
