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
* **Partitioned for the CPU.** On a CPU the backward pass reads the activations the
  forward saved instead of recomputing them (:func:`keep_activations`).

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
    """``torch.compile(model)`` after checking the toolchain and choosing the cache; logs what it costs.

    On a CPU the backward graph is given every activation it needs (:func:`keep_activations`).
    """
    cache = use_cache_dir()  # first: inductor fixes its directory the first time it asks for it
    options = {}
    if device.type == "cpu":
        check_toolchain()
        options = keep_activations()
    log.info("compiling the training step with torch.compile (inductor): the first step takes "
             "tens of seconds on a CPU, a few with the kernels already cached in %s", cache)
    return torch.compile(model, options=options or None)


def keep_activations() -> dict[str, object]:
    """Inductor options that make the backward graph read what the forward saved, not recompute it.

    Inductor's default partitioner (min-cut rematerialisation) saves fewer activations and
    recomputes cheap elementwise ones (GELU, layer norm) in the backward pass: on a GPU,
    where memory traffic is dear and arithmetic cheap, that wins. On a CPU it is arithmetic
    spent for nothing: the text Transformer at 6 layers x 384 stepped 4.5% slower compiled
    than eager with it (2,557 against 2,448 ms a step, one thread) and as fast as eager
    without it (2,446 ms), its peak memory the same (1,581 and 1,576 MiB;
    docs/benchmarks.md). Empty where this torch has no ``custom_partitioner_fn`` option.
    """
    try:
        from torch._functorch.partitioners import default_partition
        from torch._inductor import config
        from torch._inductor.custom_graph_pass import CustomPartitionerFn
    except ImportError:
        return {}
    if not hasattr(config, "custom_partitioner_fn"):
        return {}

    class SaveActivations(CustomPartitionerFn):
        """Autograd's own split: the forward saves every tensor the backward reads."""

        def __call__(self, gm, joint_inputs, **kwargs):  # noqa: ANN001, ANN003, ANN204 - inductor's signature
            kwargs.pop("compiler", None)  # min-cut's argument; the default partition takes none
            return default_partition(gm, joint_inputs, **kwargs)

        def uuid(self) -> str:  # part of inductor's cache key
            return "genloom.compiling.SaveActivations/1"

    return {"custom_partitioner_fn": SaveActivations()}
