"""``trainer.compile=true``: the training step through ``torch.compile``, its cost said and cached.

Inductor turns the loss call (forward and backward, :class:`genloom.trainer.LossModule`)
into fused kernels: C++/OpenMP on a CPU, Triton on CUDA. That costs seconds to minutes once,
at the first step, so three things are done around ``torch.compile``:

* **Checked first.** On a CPU inductor needs a C++ compiler and Python's headers; without
  them it fails inside the first step with a compiler trace. :func:`check_toolchain` says
  what is missing and which Debian/Ubuntu package gives it before any work is done.
* **Said.** The run logs that it is compiling before the first step, and how long that
  step took (compilation included) after it.
* **Cached.** Inductor's FX graph cache and AOTAutograd cache keep the compiled kernels on
  disk, keyed by the graph, the shapes and the torch version. :func:`use_cache_dir` points
  them at ``<genloom cache>/inductor`` (``$GENLOOM_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/genloom``, else ``~/.cache/genloom``) rather than a per-user ``/tmp``
  directory a reboot empties, so a second run of the same model and batch shape reuses
  them and starts in a few seconds. ``TORCHINDUCTOR_CACHE_DIR``, when set, wins.

Modality-blind: it compiles whatever module the trainer hands it.
"""

from __future__ import annotations

import logging
import os
import sysconfig
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

CACHE_ENV = "GENLOOM_CACHE_DIR"
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
TOOLCHAIN_HELP = (
    "On Debian or Ubuntu: apt-get install g++ python3-dev (or set CXX to a C++ compiler "
    "you have); or train without it: trainer.compile=false"
)


class CompileUnavailable(ValueError):
    """``trainer.compile=true`` cannot work on this machine; the message says what to install."""


def cache_root() -> Path:
    """genloom's cache directory for derived files that any run may reuse."""
    if configured := os.environ.get(CACHE_ENV):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "genloom"


def use_cache_dir() -> Path:
    """Point inductor's on-disk caches at ``<cache_root>/inductor`` unless the user chose a place."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # Importing torch._dynamo already wrote inductor's default into the environment: that
    # one is not a choice. The FX graph and AOTAutograd caches read the variable at each use.
    chosen = os.environ.get(INDUCTOR_CACHE_ENV)
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return Path(chosen)
    directory = cache_root() / "inductor"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_CACHE_ENV] = str(directory)  # read by inductor when it first caches
    return directory


def check_toolchain() -> None:
    """Raise :class:`CompileUnavailable` when inductor cannot build CPU kernels here."""
    from torch._inductor import cpp_builder, exc

    try:
        compiler = cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise CompileUnavailable(
            "trainer.compile=true on the CPU needs a C++ compiler to build inductor's kernels, and "
            f"none was found (looked for $CXX or g++). {TOOLCHAIN_HELP}"
        ) from None
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        raise CompileUnavailable(
            f"trainer.compile=true on the CPU needs Python's C headers to load inductor's kernels "
            f"({headers} is missing; the compiler {compiler} was found). {TOOLCHAIN_HELP}"
        )


def compile_step(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(model)`` after checking the toolchain and choosing the cache; logs what it costs."""
    cache = use_cache_dir()  # first: inductor fixes its directory the first time it asks for it
    if device.type == "cpu":
        check_toolchain()
    log.info("compiling the training step with torch.compile (inductor): the first step takes "
             "tens of seconds on a CPU, a few with the kernels already cached in %s", cache)
    return torch.compile(model)
