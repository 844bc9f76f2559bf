"""Next-token sampling shared by the language models (the text ``transformer``, ``hf_causal_lm``).

Both take the same sampling options with the same meaning (``temperature``, ``top_k``,
``top_p``, ``stop``, ``max_new_tokens``, a seeded ``rng``), so the arithmetic that gives
them that meaning lives here once: drawing a token from logits (:func:`sample_token`), a
stop sequence watched token by token (:class:`StopMatcher`), the checks of the options.
"""

from __future__ import annotations

import torch
from torch import Tensor


class StopMatcher:
    """Watches one row for the stop sequence, holding back tokens that may begin it."""

    def __init__(self, stop: list[int]) -> None:
        self.stop = stop
        self.held: list[int] = []
        self.stopped = False

    def push(self, token: int) -> list[int]:
        """Take the row's next token; return the tokens now known to be output."""
        if self.stopped:
            return []
        held = [*self.held, token]
        if held == self.stop:
            # `held` is always the longest tail that could still become the stop sequence,
            # so the sequence has appeared exactly when `held` equals it.
            self.stopped, self.held = True, []
            return []
        keep = next(
            k
            for k in range(min(len(held), len(self.stop) - 1), -1, -1)
            if held[len(held) - k :] == self.stop[:k]
        )
        self.held = held[len(held) - keep :]
        return held[: len(held) - keep]

    def flush(self) -> list[int]:
        """The tokens still held when generation ends: they never became the stop sequence."""
        held, self.held = self.held, []
        return held


def sample_token(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    rng: torch.Generator | None,
) -> Tensor:
    """One token id per row ``(n,)`` from next-token logits ``(n, V)``."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]  # (n, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (n, V)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the likelier ones already reach top_p; the likeliest always stays.
        # (Kept by index, not by the comparison: a top_p below float32's range compares as 0.)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=rng).squeeze(-1)


def pad_rows(rows: list[list[int]]) -> Tensor:
    """Rows of different lengths as one ``(n, longest)`` tensor padded with -1."""
    chunk = torch.full((len(rows), max(map(len, rows))), -1, dtype=torch.long)
    for i, ids in enumerate(rows):
        chunk[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return chunk


def check_sampling_options(
    n: int, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Raise one ``ValueError`` listing every option out of its range."""
    problems = []
    if n < 1:
        problems.append(f"n={n} must be at least 1")
    if max_new_tokens < 0:
        problems.append(f"max_new_tokens={max_new_tokens} must be 0 or more")
    if temperature < 0:
        problems.append(f"temperature={temperature} must be 0 (greedy) or more")
    if top_k is not None and top_k < 1:
        problems.append(f"top_k={top_k} must be at least 1 (or null for no limit)")
    if top_p is not None and not 0 < top_p <= 1:
        problems.append(f"top_p={top_p} must be in (0, 1] (or null for no limit)")
    if problems:
        raise ValueError("invalid sampling options: " + "; ".join(problems))


def check_rng(rng: torch.Generator | None, device: torch.device) -> None:
    """Refuse a random generator on another device than the model's."""
    if rng is not None and rng.device.type != device.type:
        raise ValueError(
            f"rng is a generator on {rng.device} but the model is on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )
