"""``genloom`` with only the fake plugin: what the distributed tests start under torchrun.

    python -m torch.distributed.run --nproc-per-node 2 tests/fake_torchrun.py train ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fake_plugin  # noqa: E402
from genloom import cli, plugins  # noqa: E402

if __name__ == "__main__":
    plugins.set_active(plugins.load_plugins([fake_plugin.source()], strict=True, disabled=()))
    sys.exit(cli.main(sys.argv[1:]))
