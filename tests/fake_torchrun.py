"""``genloom`` with the fake plugin and the built-in one: what the distributed tests start under torchrun.

    python -m torch.distributed.run --nproc-per-node 2 tests/fake_torchrun.py train ...

``FAKE_STOP_AT=<rank>:<step>`` adds a plugin that asks for a stop on that rank at that step;
``FAKE_PAUSE_AT=<step>`` one that holds every rank after that step until it is signalled.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fake_plugin  # noqa: E402
from genloom import cli, plugins  # noqa: E402

if __name__ == "__main__":
    sources = [fake_plugin.source(), fake_plugin.builtin_source()]  # the built-in keeps trainer.ema
    if "FAKE_STOP_AT" in os.environ:
        sources.append(fake_plugin.stopper_source())
    if "FAKE_PAUSE_AT" in os.environ:
        sources.append(fake_plugin.pauser_source())
    plugins.set_active(plugins.load_plugins(sources, strict=True, disabled=()))
    sys.exit(cli.main(sys.argv[1:]))
