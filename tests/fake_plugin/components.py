"""The fake plugin's components: small but real (the bigram model learns to count)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from genloom.interfaces import SampleSpec
from torch import nn


class DigitEncoder:
    def encode(self, media: str) -> torch.Tensor:
        try:
            return torch.tensor([int(tok) for tok in media.split()], dtype=torch.long)
        except ValueError as err:
            raise ValueError(f"digits encoder takes space-separated integers, got {media!r}") from err


class DigitDecoder:
    media_type = "text"

    def decode(self, tensor: torch.Tensor) -> str:
        return " ".join(str(int(t)) for t in tensor)

    def write(self, media: Sequence[str], directory: Path) -> list[Path]:
        paths = []
        for i, text in enumerate(media):
            path = directory / f"sample_{i:03d}.txt"
            path.write_text(text + "\n")
            paths.append(path)
        return paths


class Bigram(nn.Module):
    """``dropout`` and ``noise`` (Gaussian noise on the logits) draw from the global RNG in training."""

    def __init__(self, *, vocab_size: int = 10, length: int = 8, dropout: float = 0.0,
                 noise: float = 0.0) -> None:
        super().__init__()
        self.vocab_size, self.length, self.noise = vocab_size, length, noise
        self.sample_spec = SampleSpec(shape=(None,), dtype=torch.long)
        self.logits = nn.Embedding(vocab_size, vocab_size)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.dropout = nn.Dropout(dropout)

    def loss(self, batch):
        tokens = batch["tokens"]  # (B, T)
        logits = self.dropout(self.logits(tokens[:, :-1])) + self.bias  # (B, T-1, V)
        if self.training and self.noise:
            logits = logits + self.noise * torch.randn_like(logits)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        accuracy = (logits.argmax(-1) == tokens[:, 1:]).float().mean()
        return {"loss": loss, "accuracy": accuracy}

    @torch.no_grad()
    def generate(self, n, *, condition=None, rng=None, max_new_tokens: int = 8,
                 temperature: float = 1.0):
        start = condition.reshape(-1)[-1:] if condition is not None else torch.zeros(1, dtype=torch.long)
        current = start.expand(n).to(self.bias.device)
        out = []
        for _ in range(max_new_tokens):
            logits = self.logits(current) + self.bias  # (n, V)
            if temperature == 0:
                current = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, -1)
                current = torch.multinomial(probs, 1, generator=rng).squeeze(-1)
            out.append(current)
        return torch.stack(out, dim=1)  # (n, max_new_tokens)


class _CountingSplit(torch.utils.data.Dataset):
    def __init__(self, starts: list[int], length: int, vocab_size: int, augment: bool = False) -> None:
        self.starts, self.length, self.vocab_size, self.augment = starts, length, vocab_size, augment

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tokens = (torch.arange(self.length) + self.starts[i]) % self.vocab_size
        if self.augment:  # a random shift, drawn from all three global RNGs an augmentation might use
            shift = int(torch.randint(self.vocab_size, ())) + random.randrange(2) + int(np.random.randint(2))
            tokens = (tokens + shift) % self.vocab_size
        return {"tokens": tokens}


class Counting:
    unit = "tok"

    def __init__(
        self, *, length: int = 8, vocab_size: int = 10, examples: int = 64, augment: bool = False
    ) -> None:
        if examples < 4:
            raise ValueError(f"dataset.examples={examples}: need at least 4")
        self.length, self.vocab_size, self.examples, self.augment = length, vocab_size, examples, augment
        self.units_per_example = length

    def split(self, name, encoder, condition_encoder=None):
        starts = [i % self.vocab_size for i in range(self.examples)]
        starts = starts[::4] if name == "val" else [s for i, s in enumerate(starts) if i % 4]
        return _CountingSplit(starts, self.length, self.vocab_size, augment=self.augment and name == "train")
