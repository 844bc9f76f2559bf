"""The Gaussian pieces of a VAE with a calibrated decoder, as the image and audio VAEs train them.

The posterior ``q(z | x) = N(mean, exp(logvar))`` is sampled once per example
(:func:`posterior_sample`), the decoder's output is the mean of a Gaussian whose standard
deviation ``sigma`` is one learned number (:func:`gaussian_nll`: it weighs reconstruction
against the KL term by itself, so ``beta = 1`` is a true evidence lower bound), the prior is
``N(0, I)`` (:func:`standard_normal_kl`, and :func:`prior_sample` to draw from it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)
# Posterior noise in evaluation is drawn from this seed, once per example shape: metrics are
# reproducible and an example's score is the same whatever batch it is scored in.
EVAL_SEED = 0
MIN_SIGMA = 1e-3  # the decoder's noise never shrinks past this: the likelihood stays bounded


def posterior_sample(mean: Tensor, logvar: Tensor, *, training: bool) -> Tensor:
    """``z = mean + exp(logvar / 2) * noise``: fresh noise in training, one seeded draw in evaluation."""
    if training:
        noise = torch.randn_like(mean)
    else:  # one seeded draw shared by every example: its score does not depend on its batch
        rng = torch.Generator(mean.device).manual_seed(EVAL_SEED)
        one = torch.randn(mean.shape[1:], generator=rng, device=mean.device, dtype=mean.dtype)
        noise = one.expand_as(mean)
    return mean + torch.exp(0.5 * logvar) * noise


def gaussian_nll(x: Tensor, x_hat: Tensor, log_sigma: Tensor) -> Tensor:
    """``-log N(x; x_hat, sigma^2)`` summed over each example's values, averaged over the batch (nats)."""
    log_sigma = log_sigma.clamp(min=math.log(MIN_SIGMA))
    squared = (x - x_hat).pow(2).flatten(1)  # (B, values)
    return (0.5 * squared * torch.exp(-2 * log_sigma) + log_sigma + 0.5 * LOG_2PI).sum(1).mean()


def standard_normal_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` summed over each example's latent, averaged over the batch."""
    return (0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)).flatten(1).sum(1).mean()


def prior_sample(
    n: int, shape: tuple[int, ...], *, temperature: float, rng: torch.Generator | None, device: torch.device
) -> Tensor:
    """``n`` latents ``(n, *shape)`` from ``N(0, temperature^2)``, with the sampling options checked."""
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be at least 0")
    if rng is not None and rng.device.type != device.type:
        raise ValueError(
            f"rng is a generator on {rng.device} but the model is on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )
    return torch.randn((n, *shape), generator=rng, device=device) * temperature
