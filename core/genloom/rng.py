"""The random streams a run draws from: seeded from the run's seed, saved and restored whole.

Training draws from the global streams: torch's CPU generator and each CUDA (or MPS)
device's, Python's ``random`` and NumPy's global generator. Dropout, a VAE's sampling noise
and a random augmentation all come from them. :func:`states` captures every one of them
for a checkpoint and :func:`restore` puts them back, so a resumed run draws what the
uninterrupted run would have drawn.

Data loading takes nothing from those streams. The trainer loads each example with the
CPU streams seeded from ``(seed, epoch, index)`` (:func:`seed_cpu_streams`) inside
:func:`cpu_streams_kept`, which puts the training's streams back afterwards: what a dataset
draws at random for an example is the same however many workers load it, whichever rank
it falls to and wherever a run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

NUMPY_SEEDS = 2**32  # np.random.seed takes 32 bits


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (on every machine and Python)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_all(seed: int) -> None:
    """Seed torch (every device), Python's ``random`` and NumPy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % NUMPY_SEEDS)


@contextlib.contextmanager
def cpu_streams_kept() -> Iterator[None]:
    """Whatever the body draws from the CPU streams, they are put back as they were."""
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def streams_kept(device: torch.device) -> Iterator[None]:
    """:func:`cpu_streams_kept`, and ``device``'s own stream too when it is a CUDA device."""
    cuda = [device] if device.type == "cuda" else []
    with cpu_streams_kept(), torch.random.fork_rng(devices=cuda, enabled=bool(cuda)):
        yield


def seed_cpu_streams(seed: int) -> None:
    """Seed the CPU streams only: a CUDA device's stream is the training's (dropout on the GPU)."""
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % NUMPY_SEEDS)


def states() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every global stream's state: tensors (for safetensors) and JSON-able scalars."""
    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    if torch.backends.mps.is_available():
        tensors["rng.mps"] = torch.mps.get_rng_state()
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    scalars = {
        "python_rng": [version, list(internal), gauss],
        "numpy_rng": [kind, int(pos), int(has_gauss), float(cached_gaussian)],
    }
    return tensors, scalars


def restore(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Put back the streams :func:`states` captured (raises KeyError/ValueError if malformed)."""
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(sum(k.startswith("rng.cuda.") for k in tensors))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if "rng.mps" in tensors and torch.backends.mps.is_available():
        torch.mps.set_rng_state(tensors["rng.mps"])
    version, internal, gauss = scalars["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy_rng" in scalars:  # checkpoints written before genloom saved it lack it
        kind, pos, has_gauss, cached_gaussian = scalars["numpy_rng"]
        keys = tensors["rng.numpy"].numpy().astype(np.uint32)
        np.random.set_state((kind, keys, pos, has_gauss, cached_gaussian))
