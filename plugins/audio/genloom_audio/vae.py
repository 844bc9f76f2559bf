"""A convolutional VAE over mel spectrograms, optionally conditioned on a label or a caption.

The whole model is in this file. A normalised log-mel spectrogram ``x`` ``(1, n_mels,
frames)`` in [0, 1] (see :mod:`genloom_audio.mel`) is padded with silence to a multiple of
``f = 2 ** len(widths)`` on both axes, reduced by strided convolutions to a small grid, and
encoded to a Gaussian posterior over one latent vector ``z`` ``(latent_dim,)``. The
decoder projects ``z`` back onto the grid and mirrors the encoder with transposed
convolutions up to the mean of a Gaussian over each spectrogram value, whose standard
deviation ``sigma`` is one learned number (a "calibrated decoder": it weighs
reconstruction against the KL term by itself, so ``beta = 1`` is a true evidence lower
bound). The padding is cropped off again. Training minimises

    loss = (recon + beta * kl) / (n_mels * frames)

with ``recon = -log N(x; decoder(z), sigma^2)`` for one ``z`` drawn from the posterior and
``kl = KL(q(z | x) || N(0, I))``, both in nats per clip.

Conditioning: a label (a pitch or timbre index; ``nn.Embedding``) or a caption
(``nn.EmbeddingBag``, the mean of its hashed word ids) is embedded and steers every block
of both encoder and decoder by FiLM (a per-channel scale and shift). In the decoder it is
also added to the first feature map and, after every stage, sets a bias per channel and
mel band: a pitch is a pattern along the frequency axis, which that path can draw
straight from the label. In training the condition of each example is dropped with
probability ``condition_dropout`` (replaced by "no condition": the extra label index
``num_classes``, or an empty caption), so the same model also samples without one.

Why one latent vector and not a latent grid: with a spatial latent the encoder writes the
pitch into *where* the latent is active along the frequency axis, the decoder reads it
from there, and the label is ignored: such a model reconstructs well and samples notes of
random pitch (4% within a semitone of the asked one, measured on ``pipeline=notes``). A
vector has no frequency axis to hide the pitch in, and the KL term charges for every nat
it holds, so what the label says for free (the pitch) is left to the label.

The conditioning layers (the embedding, FiLM, the residual blocks, the checks of condition
ids) and the Gaussian pieces of the objective are in :mod:`genloom_blocks`, shared with the
image plugin's VAE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from genloom.interfaces import SampleSpec
from genloom_blocks.conditioning import ConditionIds, Down, Up, check_widths, condition_embedding, embed
from genloom_blocks.gaussian import gaussian_nll, posterior_sample, prior_sample, standard_normal_kl
from torch import Tensor, nn


class MelVAE(nn.Module):
    """Convolutional VAE over ``(1, n_mels, frames)`` spectrograms; its keyword arguments are its config.

    Args:
        n_mels: mel bands (the encoder's).
        frames: frames per clip (``1 + duration * sample_rate // hop_length``).
        widths: channels of each resolution level; one halving of both axes per entry.
        latent_dim: size of the latent vector ``z``.
        beta: weight of the KL term; 1 gives the evidence lower bound, more leaves the
            latent less to say and the condition more.
        condition: ``none``, ``label`` (a pitch or timbre index ``0 .. num_classes - 1``) or
            ``caption`` (``caption_buckets``: the ``buckets`` of its ``caption_words``; or a
            sentence embedding of ``caption_embedding_dim`` values from ``hf_sentence``); one
            ``condition_dim`` vector for the clip, which training drops with probability
            ``condition_dropout`` (see :mod:`genloom_blocks.conditioning`).
    """

    def __init__(
        self, *, n_mels: int = 80, frames: int = 32, widths: Sequence[int] = (16, 32, 64, 64),
        latent_dim: int = 4, beta: float = 1.0, condition: str = "none", num_classes: int = 36,
        caption_buckets: int = 1060, caption_embedding_dim: int = 0, condition_dim: int = 64,
        condition_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        widths = _check_architecture(n_mels, frames, widths, latent_dim)
        if beta < 0:
            raise ValueError(f"generator.beta must be at least 0, got {beta}")
        self.condition_ids = ConditionIds(
            condition, num_classes=num_classes, caption_buckets=caption_buckets,
            caption_embedding_dim=caption_embedding_dim, dropout=condition_dropout,
            dataset_conditions={"label": ("pitch", "timbre", "label")},
            classes_hint=" (pitches: high - low + 1)",
        )
        self.embed = condition_embedding(
            condition, num_classes, caption_buckets, condition_dim, caption_embedding_dim
        )
        film = condition_dim if self.embed is not None else 0
        factor = 2 ** len(widths)
        self.padded = (math.ceil(n_mels / factor) * factor, math.ceil(frames / factor) * factor)
        grid = (self.padded[0] // factor, self.padded[1] // factor)
        self.encoder = MelEncoder(widths, grid, latent_dim, film)
        self.decoder = MelDecoder(widths, grid, latent_dim, film)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))  # the decoder's noise, normalised units
        self.n_mels, self.frames = n_mels, frames
        self.sample_spec = SampleSpec(shape=(1, n_mels, frames), dtype=torch.float32)
        self.latent_dim = latent_dim
        self.beta = beta
        self.num_condition_classes = self.condition_ids.label_classes  # ClassConditioned

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Score ``batch["mel"]`` ``(B, 1, n_mels, frames)``, steered by ``batch["condition"]`` if any.

        Returns ``loss`` (minimised: nats per spectrogram value, KL weighted by ``beta``),
        and per clip: ``recon`` and ``kl`` (nats), ``elbo`` (``-(recon + kl)``, nats; a
        density over continuous values, so it may be positive; higher is better), and
        ``mel_l1``: the mean absolute error of the reconstruction in normalised log-mel
        units (1 = the 80 dB range), from the posterior mean in eval mode, from the sampled
        latent in training.
        """
        x = batch["mel"]
        self._check_mel(x)
        c = embed(self.embed, self.condition_ids.batch(batch, len(x), train=self.training), len(x))
        mean, logvar = self.encoder(self._pad(x), c)
        x_hat = self._crop(self.decoder(posterior_sample(mean, logvar, training=self.training), c))
        recon = gaussian_nll(x, x_hat, self.log_sigma)
        kl = standard_normal_kl(mean, logvar)
        if not self.training:
            x_hat = self._crop(self.decoder(mean, c))
        error = (x - x_hat).flatten(1)  # (B, n_mels * frames)
        return {
            "loss": (recon + self.beta * kl) / error.shape[1],
            "recon": recon.detach(),
            "kl": kl.detach(),
            "elbo": -(recon + kl).detach(),
            "mel_l1": error.detach().abs().mean(),
        }

    @torch.no_grad()
    def reconstruct(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(originals, reconstructions)`` ``(B, 1, n_mels, frames)``: decoded posterior means, in [0, 1]."""
        x = batch["mel"]
        self._check_mel(x)
        c = embed(self.embed, self.condition_ids.batch(batch, len(x), train=False), len(x))
        mean, _ = self.encoder(self._pad(x), c)
        return x, self._crop(self.decoder(mean, c))

    @torch.no_grad()
    def generate(
        self, n: int, *, condition: Tensor | None = None, rng: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Draw ``n`` spectrograms ``(n, 1, n_mels, frames)`` in [0, 1].

        Args:
            n: how many clips.
            condition: a pitch or timbre index for ``label=N`` (0-dim, or one per clip),
                or an encoded ``prompt=`` (word ids, or a sentence embedding); None: clips of
                no condition.
            rng: a generator on the model's device: a seed fixes the spectrograms.
            temperature: scales ``z ~ N(0, I)``: below 1 the sounds are more typical,
                at 0 there is one sound per condition.
        """
        device = self.log_sigma.device
        z = prior_sample(n, (self.latent_dim,), temperature=temperature, rng=rng, device=device)
        c = embed(self.embed, self.condition_ids.sampling(condition, n, device), n)
        return self._crop(self.decoder(z, c))

    # -- shapes --------------------------------------------------------------------------

    def _pad(self, x: Tensor) -> Tensor:
        """Silence (0) above the top band and after the last frame, up to multiples of the factor."""
        return F.pad(x, (0, self.padded[1] - self.frames, 0, self.padded[0] - self.n_mels))

    def _crop(self, x: Tensor) -> Tensor:
        return x[..., : self.n_mels, : self.frames]

    def _check_mel(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, self.n_mels, self.frames):
            raise ValueError(
                f"the VAE takes spectrograms (B, 1, {self.n_mels}, {self.frames}) (generator.n_mels, "
                f"generator.frames), got {tuple(x.shape)}; set generator.n_mels to encoder.n_mels and "
                "generator.frames to 1 + round(dataset.duration * sample_rate) // encoder.hop_length"
            )


class MelEncoder(nn.Module):
    """Padded spectrograms ``(B, 1, M, F)`` -> posterior mean and log-variance, each ``(B, latent_dim)``."""

    def __init__(
        self, widths: Sequence[int], grid: tuple[int, int], latent_dim: int, condition_dim: int
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, widths[0], 3, padding=1)
        self.stages = nn.ModuleList(
            Down(w_in, w_out, condition_dim)
            for w_in, w_out in zip((widths[0], *widths[:-1]), widths, strict=True)
        )
        self.head = nn.Linear(widths[-1] * grid[0] * grid[1], 2 * latent_dim)

    def forward(self, x: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h, c)
        mean, logvar = self.head(h.flatten(1)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class MelDecoder(nn.Module):
    """Latents ``(B, latent_dim)`` -> the mean of each padded spectrogram value ``(B, 1, M, F)``, in (0, 1).

    Besides FiLM, the condition sets a bias per channel and mel band after every stage
    (:class:`BandBias`): a pitch is a pattern along the frequency axis (where the harmonics
    lie), which this path can draw directly from the label, leaving the latent to say how
    the note sounds and evolves.
    """

    def __init__(
        self, widths: Sequence[int], grid: tuple[int, int], latent_dim: int, condition_dim: int
    ) -> None:
        super().__init__()
        up = tuple(widths)[::-1]
        self.grid = grid
        self.project = nn.Linear(latent_dim, up[0] * grid[0] * grid[1])
        self.stem_condition = nn.Linear(condition_dim, up[0]) if condition_dim else None
        outs = (*up[1:], up[-1])
        self.stages = nn.ModuleList(
            Up(w_in, w_out, condition_dim) for w_in, w_out in zip(up, outs, strict=True)
        )
        self.bands = nn.ModuleList(
            BandBias(condition_dim, w_out, grid[0] * 2 ** (i + 1)) for i, w_out in enumerate(outs)
        ) if condition_dim else None
        self.head = nn.Conv2d(up[-1], 1, 3, padding=1)

    def forward(self, z: Tensor, c: Tensor | None) -> Tensor:
        h = self.project(z).view(len(z), -1, *self.grid)
        if self.stem_condition is not None and c is not None:
            h = h + self.stem_condition(c)[:, :, None, None]
        h = F.silu(h)
        for i, stage in enumerate(self.stages):
            h = stage(h, c)
            if self.bands is not None and c is not None:
                h = h + self.bands[i](c)
        return torch.sigmoid(self.head(h))


class BandBias(nn.Module):
    """The condition -> a bias per channel and mel band ``(B, width, bands, 1)``, the same in every frame."""

    def __init__(self, condition_dim: int, width: int, bands: int) -> None:
        super().__init__()
        self.width, self.bands = width, bands
        self.linear = nn.Linear(condition_dim, width * bands)

    def forward(self, c: Tensor) -> Tensor:
        return self.linear(c).view(len(c), self.width, self.bands, 1)


def _check_architecture(n_mels: int, frames: int, widths: Sequence[int], latent_dim: int) -> tuple[int, ...]:
    """The spectrogram and latent sizes, checked (the condition is checked where it is embedded)."""
    widths = check_widths(widths)
    for key, value in (("n_mels", n_mels), ("frames", frames), ("latent_dim", latent_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"generator.{key} must be a positive integer, got {value!r}")
    return widths
