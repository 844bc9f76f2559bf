"""A convolutional variational autoencoder (VAE), optionally conditioned on a label or a caption.

The whole model is in this file. An image ``x`` ``(C, R, R)`` in [0, 1] is encoded to a
Gaussian posterior over a spatial latent ``z`` ``(latent_channels, R / f, R / f)``, where
the downsampling factor is ``f = 2 ** len(widths)``; the decoder maps ``z`` back to the
mean of a Gaussian over pixels whose standard deviation ``sigma`` is one learned number
(a "calibrated decoder": it weighs reconstruction against the KL term by itself, so
``beta = 1`` is a true evidence lower bound and works without tuning). Training minimises

    loss = (recon + beta * kl) / (C * R * R)

with ``recon = -log N(x; decoder(z), sigma^2)`` for one ``z`` drawn from the posterior and
``kl = KL(q(z | x) || N(0, I))``, both in nats per image.

Conditioning: a label (``nn.Embedding``) or a caption (``nn.EmbeddingBag``, the mean of
its hashed word ids; or, with ``caption_embedding_dim``, a learned projection of a
pretrained sentence encoder's embedding) is embedded and steers every block of both encoder and decoder by
FiLM: a per-channel scale and shift computed from the embedding. It is also added to the
decoder's first feature map: with that direct path the decoder learns to use the condition
within the first few hundred steps (conditioned glyph samples read as the asked digit went
from 50% to 88% in one measurement), where FiLM alone leaves the latent to carry the
class and the condition half ignored. In training the condition of each example is
dropped with probability ``condition_dropout`` (replaced by "no condition": the extra
label index ``num_classes``, or an empty caption), so the same model also samples
without one.

The latent prior is a standard normal per latent value, which fits the encoded data only
when the latent is small: the demo configs use a 2 x 2 grid (see conf/generator/vae.yaml).

The conditioning layers (the embedding, FiLM, the residual blocks, the checks of condition
ids) and the Gaussian pieces of the objective are in :mod:`genloom_blocks`, shared with the
audio plugin's VAE.

The two halves are themselves components (``encoder=vae_latents``,
``decoder=vae_latents``): :class:`VAEEncoder` and :class:`VAEDecoder` take the VAE's
architecture keys and hold exactly its ``encoder.*`` and ``decoder.*`` weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from genloom.interfaces import SampleSpec
from genloom_blocks.conditioning import ConditionIds, Down, Up, check_widths, condition_embedding, embed
from genloom_blocks.gaussian import gaussian_nll, posterior_sample, prior_sample, standard_normal_kl
from PIL import Image
from torch import Tensor, nn

from genloom_image.pixels import Pixels, check_image_size
from genloom_image.png import PngDecoder


class VAE(nn.Module):
    """Convolutional VAE; its keyword arguments are its whole config.

    Args:
        resolution: side of the square images; a multiple of ``2 ** len(widths)``.
        channels: image channels, 1 or 3 (the encoder's).
        widths: channels of each resolution level; one downsampling by 2 per entry.
        latent_channels: channels of the latent ``z``.
        beta: weight of the KL term; 1 gives the evidence lower bound, less trades
            sample quality for sharper reconstructions.
        condition: ``none``, ``label`` (a class index, ``0 .. num_classes - 1``) or ``caption``
            (word ids ``1 .. caption_buckets`` from ``caption_words`` with as many ``buckets``,
            or a sentence embedding of ``caption_embedding_dim`` values from ``hf_sentence``);
            embedded to ``condition_dim`` and dropped in training with probability
            ``condition_dropout`` (:class:`genloom_blocks.conditioning.ConditionIds`).
    """

    def __init__(
        self,
        *,
        resolution: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (16, 48, 96, 96),
        latent_channels: int = 8,
        beta: float = 1.0,
        condition: str = "none",
        num_classes: int = 10,
        caption_buckets: int = 512,
        caption_embedding_dim: int = 0,
        condition_dim: int = 64,
        condition_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"generator.beta must be at least 0, got {beta}")
        self.condition_ids = ConditionIds(
            condition,
            num_classes=num_classes,
            caption_buckets=caption_buckets,
            caption_embedding_dim=caption_embedding_dim,
            dropout=condition_dropout,
        )
        architecture = dict(
            resolution=resolution,
            channels=channels,
            widths=widths,
            latent_channels=latent_channels,
            condition=condition,
            num_classes=num_classes,
            caption_buckets=caption_buckets,
            caption_embedding_dim=caption_embedding_dim,
            condition_dim=condition_dim,
        )
        self.encoder = VAEEncoder(**architecture)
        self.decoder = VAEDecoder(**architecture)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))  # the decoder's pixel noise
        self.resolution, self.channels = resolution, channels
        self.sample_spec = SampleSpec(shape=(channels, resolution, resolution), dtype=torch.float32)
        self.latent_shape = (latent_channels, *(2 * [resolution // 2 ** len(widths)]))
        self.beta = beta
        self.num_condition_classes = self.condition_ids.label_classes  # ClassConditioned

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Score ``batch["image"]`` ``(B, C, R, R)``, steered by ``batch["condition"]`` if conditioned.

        Returns ``loss`` (minimised: nats per pixel value, KL weighted by ``beta``), and
        per image: ``recon`` and ``kl`` (nats), ``elbo`` (the evidence lower bound
        ``-(recon + kl)``, nats; a density over continuous pixel values, so it may be
        positive; higher is better) and ``psnr`` (dB, of the reconstruction from the
        posterior mean in eval mode, from the sampled latent in training).
        """
        x = batch["image"]
        self._check_pixels(x)
        ids = self.condition_ids.batch(batch, len(x), train=self.training)
        mean, logvar = self.encoder(x, ids)
        x_hat = self.decoder(posterior_sample(mean, logvar, training=self.training), ids)  # (B, C, R, R)
        recon = gaussian_nll(x, x_hat, self.log_sigma)
        kl = standard_normal_kl(mean, logvar)
        if not self.training:
            x_hat = self.decoder(mean, ids)
        squared = (x - x_hat).detach().pow(2).flatten(1)  # (B, C * R * R)
        mse = squared.mean(1).clamp(min=1e-10)
        return {
            "loss": (recon + self.beta * kl) / squared.shape[1],
            "recon": recon.detach(),
            "kl": kl.detach(),
            "elbo": -(recon + kl).detach(),
            "psnr": (-10 * torch.log10(mse)).mean(),
        }

    @torch.no_grad()
    def reconstruct(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(originals, reconstructions)`` ``(B, C, R, R)``: decoded posterior means, in [0, 1]."""
        x = batch["image"]
        ids = self.condition_ids.batch(batch, len(x), train=False)
        mean, _ = self.encoder(x, ids)
        return x, self.decoder(mean, ids).clamp(0, 1)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        condition: Tensor | None = None,
        rng: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Draw ``n`` images ``(n, C, R, R)`` in [0, 1].

        Args:
            n: how many images.
            condition: ``label=`` (a 0-dim or ``(n,)`` class index) or an encoded
                ``prompt=`` (``(W,)`` or ``(n, W)`` word ids, or a ``(D,)`` or ``(n, D)``
                sentence embedding); None draws unconditioned images.
            rng: on the model's device; the same seed draws the same images.
            temperature: the prior's standard deviation; below 1 trades variety for
                typical-looking images, 0 gives one image per condition.
        """
        device = self.log_sigma.device
        z = prior_sample(n, self.latent_shape, temperature=temperature, rng=rng, device=device)
        return self.decoder(z, self.condition_ids.sampling(condition, n, device)).clamp(0, 1)

    def _check_pixels(self, x: Tensor) -> None:
        expected = (self.channels, self.resolution, self.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"the VAE takes images (B, {', '.join(map(str, expected))}) (generator.channels, "
                f"generator.resolution), got {tuple(x.shape)}; make the encoder's resolution "
                "and channels match the generator's"
            )


class VAEEncoder(nn.Module):
    """The VAE's encoder half: pixels ``(B, C, R, R)`` -> posterior mean and log-variance.

    As an encoder component (``encoder=vae_latents``) it turns one PIL image into its
    latent mean ``(latent_channels, R / f, R / f)``, with no condition.
    """

    def __init__(
        self,
        *,
        resolution: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (16, 48, 96, 96),
        latent_channels: int = 8,
        condition: str = "none",
        num_classes: int = 10,
        caption_buckets: int = 512,
        caption_embedding_dim: int = 0,
        condition_dim: int = 64,
    ) -> None:
        super().__init__()
        widths = _check_architecture(resolution, channels, widths, latent_channels)
        self.embed = condition_embedding(
            condition, num_classes, caption_buckets, condition_dim, caption_embedding_dim
        )
        film = condition_dim if self.embed is not None else 0
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.stages = nn.ModuleList(
            Down(w_in, w_out, film) for w_in, w_out in zip((widths[0], *widths[:-1]), widths, strict=True)
        )
        self.head = nn.Conv2d(widths[-1], 2 * latent_channels, 1)
        self.pixels = Pixels(resolution=resolution, channels=channels)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c = embed(self.embed, condition, len(x))  # (B, condition_dim) or None
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h, c)
        mean, logvar = self.head(h).chunk(2, dim=1)  # each (B, latent_channels, R / f, R / f)
        return mean, logvar.clamp(-30.0, 20.0)

    @torch.no_grad()
    def encode(self, media: Image.Image) -> Tensor:
        pixels = self.pixels.encode(media)[None].to(self.stem.weight.device)
        mean, _ = self(pixels)
        return mean[0]


class VAEDecoder(nn.Module):
    """The VAE's decoder half: latents ``(B, latent_channels, R / f, R / f)`` -> pixel means.

    As a decoder component (``decoder=vae_latents``) it turns one latent into a PIL image,
    with no condition, and writes PNGs like the ``png`` decoder.
    """

    media_type = "image"

    def __init__(
        self,
        *,
        resolution: int = 32,
        channels: int = 3,
        widths: Sequence[int] = (16, 48, 96, 96),
        latent_channels: int = 8,
        condition: str = "none",
        num_classes: int = 10,
        caption_buckets: int = 512,
        caption_embedding_dim: int = 0,
        condition_dim: int = 64,
    ) -> None:
        super().__init__()
        widths = _check_architecture(resolution, channels, widths, latent_channels)
        self.embed = condition_embedding(
            condition, num_classes, caption_buckets, condition_dim, caption_embedding_dim
        )
        film = condition_dim if self.embed is not None else 0
        up = widths[::-1]
        self.stem = nn.Conv2d(latent_channels, up[0], 3, padding=1)
        self.stem_condition = nn.Linear(condition_dim, up[0]) if film else None
        self.stages = nn.ModuleList(
            Up(w_in, w_out, film) for w_in, w_out in zip(up, (*up[1:], up[-1]), strict=True)
        )
        self.head = nn.Conv2d(up[-1], channels, 3, padding=1)
        self.png = PngDecoder()

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        c = embed(self.embed, condition, len(z))
        h = self.stem(z)
        if self.stem_condition is not None:
            h = h + self.stem_condition(c)[:, :, None, None]
        h = F.silu(h)
        for stage in self.stages:
            h = stage(h, c)
        return torch.sigmoid(self.head(h))  # (B, C, R, R): the mean of each pixel, in (0, 1)

    @torch.no_grad()
    def decode(self, tensor: Tensor) -> Image.Image:
        pixels = self(tensor[None].to(self.stem.weight.device))[0]
        return self.png.decode(pixels)

    def write(self, media: Sequence[Image.Image], directory: Path) -> list[Path]:
        return self.png.write(media, directory)


def _check_architecture(
    resolution: int, channels: int, widths: Sequence[int], latent_channels: int
) -> tuple[int, ...]:
    """The image sizes, checked (the condition is checked where it is embedded)."""
    widths = check_widths(widths)
    check_image_size(resolution, channels, len(widths))
    if latent_channels < 1:
        raise ValueError(f"generator.latent_channels must be at least 1, got {latent_channels}")
    return widths
