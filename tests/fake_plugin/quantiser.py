"""A tiny stage-1 autoencoder with a discrete code, for the core's two-stage tests.

Vectors of ``dim`` floats go through a small network to ``dim`` latents in (-1, 1), each
rounded to one of ``levels`` values (finite scalar quantisation, with a straight-through
gradient): ``dim`` codes in ``[0, levels)`` per vector. It trains (the reconstruction error
falls) and is :class:`genloom.interfaces.Tokenizing`, so a frozen copy of it serves as a
stage-2 pipeline's encoder and decoder with no image or audio plugin installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from genloom.interfaces import SampleSpec
from torch import nn


class FloatsEncoder:
    """``"0.5 -1 2"`` (or a list of numbers) -> a float tensor."""

    def encode(self, media: str | Sequence[float]) -> torch.Tensor:
        try:
            values = [float(v) for v in (media.split() if isinstance(media, str) else media)]
        except (TypeError, ValueError) as err:
            raise ValueError(f"floats encoder takes numbers, got {media!r}") from err
        return torch.tensor(values, dtype=torch.float32)


class FloatsDecoder:
    media_type = "text"

    def decode(self, tensor: torch.Tensor) -> str:
        return " ".join(f"{float(v):.3f}" for v in tensor)

    def write(self, media: Sequence[str], directory: Path) -> list[Path]:
        paths = []
        for i, text in enumerate(media):
            path = directory / f"vector_{i:03d}.txt"
            path.write_text(text + "\n")
            paths.append(path)
        return paths


class Quantiser(nn.Module):
    def __init__(self, *, dim: int = 8, levels: int = 5, hidden: int = 16) -> None:
        super().__init__()
        self.dim, self.levels = dim, levels
        self.codebook_size, self.token_count = levels, dim
        self.sample_spec = SampleSpec(shape=(dim,), dtype=torch.float32)
        self.encode_net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.decode_net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.encode_net(x))  # (B, dim) in (-1, 1)

    def _codes(self, z: torch.Tensor) -> torch.Tensor:
        return torch.round((z + 1) / 2 * (self.levels - 1)).long().clamp(0, self.levels - 1)

    def _values(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.float() / (self.levels - 1) * 2 - 1

    def loss(self, batch):
        x = batch["vector"]  # (B, dim)
        z = self._latent(x)
        q = z + (self._values(self._codes(z)) - z).detach()  # straight through the rounding
        return {"loss": nn.functional.mse_loss(self.decode_net(q), x)}

    def tokenize(self, examples: torch.Tensor) -> torch.Tensor:
        return self._codes(self._latent(examples))  # (B, dim) int64

    def detokenize(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_net(self._values(codes))  # (B, dim)

    @torch.no_grad()
    def generate(self, n, *, condition=None, rng=None):
        device = self.decode_net[0].weight.device
        codes = torch.randint(self.levels, (n, self.dim), generator=rng, device=device)
        return self.detokenize(codes)


class _Examples(torch.utils.data.Dataset):
    def __init__(self, tensors: list[torch.Tensor], key: str) -> None:
        self.tensors, self.key = tensors, key

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {self.key: self.tensors[i]}


class Waves:
    """Sine waves of ``dim`` samples at ``examples`` phases, encoded under the batch key ``key``."""

    unit = "vec"

    def __init__(self, *, dim: int = 8, examples: int = 32, key: str = "vector") -> None:
        self.dim, self.examples, self.key = dim, examples, key
        self.units_per_example = 1

    def media(self, i: int) -> list[float]:
        phase = 2 * math.pi * i / self.examples
        return [math.sin(2 * math.pi * j / self.dim + phase) for j in range(self.dim)]

    def split(self, name, encoder, condition_encoder=None):
        indices = [i for i in range(self.examples) if (i % 4 == 0) == (name == "val")]
        return _Examples([encoder.encode(self.media(i)) for i in indices], self.key)
