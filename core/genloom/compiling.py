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

from genloom.cache import user_cache_dir

log = logging.getLogger(__name__)

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
TOOLCHAIN_HELP = (
    "On Debian or Ubuntu: apt-get install g++ python3-dev (or set CXX to a C++ compiler "
    "you have); or run without {option}"
)


class CompileUnavailable(ValueError):
    """``torch.compile`` cannot work on this machine; the message says what to install."""


def use_cache_dir() -> Path:
    """Point inductor's on-disk caches at ``<user cache>/inductor`` unless the user chose a place.

    The user cache is :func:`genloom.cache.user_cache_dir`, where the token and decoded caches live too.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # Importing torch._dynamo already wrote inductor's default into the environment: that
    # one is not a choice. The FX graph and AOTAutograd caches read the variable at each use.
    chosen = os.environ.get(INDUCTOR_CACHE_ENV)
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return Path(chosen)
    directory = user_cache_dir() / "inductor"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_CACHE_ENV] = str(directory)  # read by inductor when it first caches
    return directory


def check_toolchain(option: str = "trainer.compile=true") -> None:
    """Raise :class:`CompileUnavailable` when inductor cannot build CPU kernels here.

    ``option`` is what the user set that compiles (the message names it).
    """
    from torch._inductor import cpp_builder, exc

    help_ = TOOLCHAIN_HELP.format(option=option)
    try:
        compiler = cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise CompileUnavailable(
            f"{option} on the CPU needs a C++ compiler to build inductor's kernels, and "
            f"none was found (looked for $CXX or g++). {help_}"
        ) from None
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        raise CompileUnavailable(
            f"{option} on the CPU needs Python's C headers to load inductor's kernels "
            f"({headers} is missing; the compiler {compiler} was found). {help_}"
        )


def compile_step(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(model)`` after checking the toolchain and choosing the cache; logs what it costs."""
    cache = use_cache_dir()  # first: inductor fixes its directory the first time it asks for it
    if device.type == "cpu":
        check_toolchain()
    log.info("compiling the training step with torch.compile (inductor): the first step takes "
             "tens of seconds on a CPU, a few with the kernels already cached in %s", cache)
    return torch.compile(model)
