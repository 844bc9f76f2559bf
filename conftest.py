"""Settings for every test under this checkout (core, plugins, examples).

``make test`` runs two pytest-xdist workers on what may be two cores: each worker keeps
torch to one intra-op thread, so that the two never fight over the cores. Every test gets
its own user cache (``GENLOOM_CACHE_DIR``: the text datasets' token files).
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config) -> None:  # noqa: ANN001 - a pytest.Config
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _own_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test (and any genloom it starts) has its own user cache, never ``~/.cache/genloom``."""
    monkeypatch.setenv("GENLOOM_CACHE_DIR", str(tmp_path_factory.mktemp("user-cache")))
