"""Settings for every test under this checkout (core, plugins, examples).

``make test`` runs two pytest-xdist workers on what may be two cores: each worker keeps
torch to one intra-op thread, so that the two never fight over the cores.
"""

from __future__ import annotations

import os


def pytest_configure(config) -> None:  # noqa: ANN001 - a pytest.Config
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
