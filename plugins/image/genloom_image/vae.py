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
its hashed word ids) is embedded and steers every block of both encoder and decoder by
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
from PIL import Image
from torch import Tensor, nn

from genloom_image.pixels import Pixels
from genloom_image.png import PngDecoder

CONDITIONS = ("none", "label", "caption")
LOG_2PI = math.log(2 * math.pi)
# Posterior noise in evaluation is drawn from this seed, once per example shape: metrics are
# reproducible and an example's score is the same whatever batch it is scored in.
EVAL_SEED = 0


class VAE(nn.Module):
    """Convolutional VAE; its keyword arguments are its whole config.

    Args:
        resolution: side of the square images; a multiple of ``2 ** len(widths)``.
        channels: image channels, 1 or 3 (the encoder's).
        widths: channels of each resolution level; one downsampling by 2 per entry.
        latent_channels: channels of the latent ``z``.
        beta: weight of the KL term; 1 gives the evidence lower bound, less trades
            sample quality for sharper reconstructions.
        condition: ``none``, ``label`` or ``caption``.
        num_classes: labels are ``0 .. num_classes - 1`` (``condition=label``).
        caption_buckets: word ids are ``1 .. caption_buckets`` (the caption encoder's
            ``buckets``; ``condition=caption``).
        condition_dim: width of the condition embedding.
        condition_dropout: probability of training an example without its condition.
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
        condition_dim: int = 64,
        condition_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"generator.beta must be at least 0, got {beta}")
        if not 0 <= condition_dropout < 1:
            raise ValueError(f"generator.condition_dropout must lie in [0, 1), got {condition_dropout}")
        architecture = dict(
            resolution=resolution,
            channels=channels,
            widths=widths,
            latent_channels=latent_channels,
            condition=condition,
            num_classes=num_classes,
            caption_buckets=caption_buckets,
            condition_dim=condition_dim,
        )
        self.encoder = VAEEncoder(**architecture)
        self.decoder = VAEDecoder(**architecture)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))  # the decoder's pixel noise
        self.resolution, self.channels = resolution, channels
        self.sample_spec = SampleSpec(shape=(channels, resolution, resolution), dtype=torch.float32)
        self.latent_shape = (latent_channels, *(2 * [resolution // 2 ** len(widths)]))
        self.beta = beta
        self.condition = condition
        self.num_classes = num_classes
        self.num_condition_classes = num_classes if condition == "label" else None  # ClassConditioned
        self.caption_buckets = caption_buckets
        self.condition_dropout = condition_dropout
        self._labels_checked = False  # see _batch_condition

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
        ids = self._batch_condition(batch, len(x))
        mean, logvar = self.encoder(x, ids)
        if self.training:
            noise = torch.randn_like(mean)
        else:  # one seeded draw shared by every example: its score does not depend on its batch
            rng = torch.Generator(x.device).manual_seed(EVAL_SEED)
            one = torch.randn(mean.shape[1:], generator=rng, device=x.device, dtype=mean.dtype)
            noise = one.expand_as(mean)
        z = mean + torch.exp(0.5 * logvar) * noise
        x_hat = self.decoder(z, ids)  # (B, C, R, R)
        log_sigma = self.log_sigma.clamp(min=math.log(1e-3))
        squared = (x - x_hat).pow(2).flatten(1)  # (B, C * R * R)
        recon = (0.5 * squared * torch.exp(-2 * log_sigma) + log_sigma + 0.5 * LOG_2PI).sum(1).mean()
        kl = (0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)).flatten(1).sum(1).mean()
        if not self.training:
            squared = (x - self.decoder(mean, ids)).pow(2).flatten(1)
        mse = squared.detach().mean(1).clamp(min=1e-10)
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
        ids = self._batch_condition(batch, len(x), dropout=False)
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
            condition: a class index (a 0-dim or ``(n,)`` integer tensor) for
                ``condition=label``; an encoded caption (``(W,)`` or ``(n, W)`` word ids)
                for ``condition=caption``; None samples without a condition.
            rng: the random generator, on the model's device; the same seed gives the
                same images.
            temperature: scale of the prior's standard deviation: ``z ~ N(0, temperature^2)``;
                below 1 trades variety for typical-looking images, 0 gives one image.
        """
        if n < 1:
            raise ValueError(f"n={n} must be at least 1")
        if temperature < 0:
            raise ValueError(f"temperature={temperature} must be at least 0")
        device = self.log_sigma.device
        if rng is not None and rng.device.type != device.type:
            raise ValueError(
                f"rng is a generator on {rng.device} but the model is on {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )
        ids = self._sampling_condition(condition, n, device)
        z = torch.randn((n, *self.latent_shape), generator=rng, device=device) * temperature
        return self.decoder(z, ids).clamp(0, 1)

    # -- conditions ----------------------------------------------------------------------

    def _batch_condition(self, batch: Mapping[str, Tensor], size: int, dropout: bool = True) -> Tensor | None:
        """The batch's condition ids, some replaced by "no condition" in training."""
        if self.condition == "none":
            return None
        ids = batch.get("condition")
        if ids is None:
            raise ValueError(
                f"generator.condition={self.condition} but the batch has no 'condition'; "
                f"set dataset.condition={self.condition}"
            )
        if ids.dim() != (1 if self.condition == "label" else 2):
            raise ValueError(
                f"generator.condition={self.condition} but the batch's condition has shape "
                f"{tuple(ids.shape)}; set dataset.condition={self.condition}"
            )
        if self.condition == "label" and not self._labels_checked:
            # Once: an out-of-range label would otherwise surface as an opaque index error,
            # and checking every batch would cost a device sync per step.
            self._check_labels(
                ids, "the data holds label {}, which",
                "Set generator.num_classes to the dataset's number of classes",
            )
            self._labels_checked = True
        if dropout and self.training and self.condition_dropout > 0:  # ids of "no condition"
            drop = torch.rand(size, device=ids.device) < self.condition_dropout
            if self.condition == "label":
                ids = torch.where(drop, self.num_classes, ids)
            else:
                ids = ids.masked_fill(drop[:, None], 0)
        return ids

    def _sampling_condition(self, condition: Tensor | None, n: int, device: torch.device) -> Tensor | None:
        """Condition ids for ``n`` samples; "no condition" when ``condition`` is None."""
        if self.condition == "none":
            if condition is not None:
                raise ValueError(
                    "this VAE was trained without a condition (generator.condition=none); "
                    "sample it without prompt= or label="
                )
            return None
        if condition is None:
            return None  # the halves embed "no condition"
        if condition.is_floating_point():
            raise ValueError(f"condition must hold integer ids, got dtype {condition.dtype}")
        condition = condition.to(device=device, dtype=torch.long)
        if self.condition == "label":
            if condition.dim() > 1 or (condition.dim() == 1 and len(condition) != n):
                raise ValueError(
                    "this VAE is conditioned on labels (generator.condition=label): sample it "
                    f"with label=N, 0 <= N < {self.num_classes}, not a prompt"
                )
            self._check_labels(
                condition, "label={}", "The model was trained with these classes: sample it with one of them"
            )
            return condition.expand(n)
        if condition.dim() == 0:
            raise ValueError(
                "this VAE is conditioned on captions (generator.condition=caption): sample it "
                'with prompt="a caption", not label='
            )
        if condition.numel() and (int(condition.min()) < 0 or int(condition.max()) > self.caption_buckets):
            raise ValueError(
                f"the caption's word ids lie outside 0..{self.caption_buckets} "
                "(generator.caption_buckets); encode prompts with the condition encoder the "
                "model was trained with"
            )
        return condition.expand(n, -1) if condition.dim() == 1 else condition

    def _check_labels(self, labels: Tensor, what: str, advice: str) -> None:
        """Reject labels outside ``0..num_classes - 1``; ``what`` names the label: ``"label={}"``."""
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"{what.format(bad)} is not a class of this model: generator.num_classes="
                f"{self.num_classes} gives labels 0..{self.num_classes - 1}. {advice}"
            )

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
        condition_dim: int = 64,
    ) -> None:
        super().__init__()
        widths = _check_architecture(resolution, channels, widths, latent_channels, condition)
        self.embed = _condition_embedding(condition, num_classes, caption_buckets, condition_dim)
        film = condition_dim if self.embed is not None else 0
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.stages = nn.ModuleList(
            Down(w_in, w_out, film) for w_in, w_out in zip((widths[0], *widths[:-1]), widths, strict=True)
        )
        self.head = nn.Conv2d(widths[-1], 2 * latent_channels, 1)
        self.pixels = Pixels(resolution=resolution, channels=channels)

    def forward(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c = _embed(self.embed, condition, len(x))  # (B, condition_dim) or None
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
        condition_dim: int = 64,
    ) -> None:
        super().__init__()
        widths = _check_architecture(resolution, channels, widths, latent_channels, condition)
        self.embed = _condition_embedding(condition, num_classes, caption_buckets, condition_dim)
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
        c = _embed(self.embed, condition, len(z))
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


class Down(nn.Module):
    """Halve the resolution (strided conv), then a residual block; both FiLM-conditioned."""

    def __init__(self, width_in: int, width_out: int, condition_dim: int) -> None:
        super().__init__()
        self.resample = ConvNorm(width_in, width_out, condition_dim, kernel=4, stride=2)
        self.block = ConvNorm(width_out, width_out, condition_dim)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = self.resample(x, c)
        return h + self.block(h, c)


class Up(nn.Module):
    """A residual block, then double the resolution (transposed conv); both FiLM-conditioned.

    A 4x4 kernel at stride 2 covers every output pixel equally often, which avoids the
    checkerboard of odd kernels; on a CPU it is also several times faster than nearest
    upsampling followed by a conv.
    """

    def __init__(self, width_in: int, width_out: int, condition_dim: int) -> None:
        super().__init__()
        self.block = ConvNorm(width_in, width_in, condition_dim)
        self.resample = ConvNorm(width_in, width_out, condition_dim, kernel=4, stride=2, transposed=True)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = x + self.block(x, c)
        return self.resample(h, c)


class ConvNorm(nn.Module):
    """conv (or transposed conv) -> GroupNorm -> FiLM (scale and shift from the condition) -> SiLU."""

    def __init__(
        self,
        width_in: int,
        width_out: int,
        condition_dim: int,
        kernel: int = 3,
        stride: int = 1,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv(width_in, width_out, kernel, stride=stride, padding=(kernel - 1) // 2)
        self.norm = nn.GroupNorm(math.gcd(8, width_out), width_out)
        self.film = nn.Linear(condition_dim, 2 * width_out) if condition_dim else None
        if self.film is not None:  # start as the identity: the condition's effect is learned
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = self.norm(self.conv(x))
        if self.film is not None and c is not None:
            scale, shift = self.film(c)[:, :, None, None].chunk(2, dim=1)  # each (B, width_out, 1, 1)
            h = h * (1 + scale) + shift
        return F.silu(h)


class ConditionEmbedding(nn.Module):
    """Condition ids -> a vector: a label's embedding, or the mean of a caption's word embeddings.

    "No condition" has its own embedding: label index ``num_classes``, or a caption of
    padding only (an all-zero mean, then the MLP's bias).
    """

    def __init__(self, condition: str, num_classes: int, caption_buckets: int, dim: int) -> None:
        super().__init__()
        if condition == "label":
            self.table: nn.Module = nn.Embedding(num_classes + 1, dim)
        else:
            self.table = nn.EmbeddingBag(caption_buckets + 1, dim, mode="mean", padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, ids: Tensor) -> Tensor:
        return self.mlp(self.table(ids))  # (B, dim)


def _condition_embedding(
    condition: str, num_classes: int, caption_buckets: int, dim: int
) -> ConditionEmbedding | None:
    if condition == "none":
        return None
    sizes = {"num_classes": num_classes, "caption_buckets": caption_buckets, "condition_dim": dim}
    for key, value in sizes.items():
        if value < 1:
            raise ValueError(f"generator.{key} must be at least 1, got {value}")
    return ConditionEmbedding(condition, num_classes, caption_buckets, dim)


def _embed(embed: ConditionEmbedding | None, condition: Tensor | None, size: int) -> Tensor | None:
    """The condition vector ``(B, dim)``; "no condition" for a conditioned model given None."""
    if embed is None:
        return None
    if condition is None:
        device = embed.mlp[0].weight.device
        if isinstance(embed.table, nn.Embedding):
            condition = torch.full((size,), embed.table.num_embeddings - 1, device=device)
        else:
            condition = torch.zeros((size, 1), dtype=torch.long, device=device)
    return embed(condition)


def _check_architecture(
    resolution: int, channels: int, widths: Sequence[int], latent_channels: int, condition: str
) -> tuple[int, ...]:
    widths = tuple(widths)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"generator.widths must be a non-empty list of positive widths, got {list(widths)}")
    factor = 2 ** len(widths)
    if resolution % factor or resolution < factor:
        raise ValueError(
            f"generator.resolution={resolution} must be a multiple of 2 ** len(generator.widths) "
            f"= {factor} (one halving per width)"
        )
    if channels not in (1, 3):
        raise ValueError(f"generator.channels must be 1 or 3, got {channels}")
    if latent_channels < 1:
        raise ValueError(f"generator.latent_channels must be at least 1, got {latent_channels}")
    if condition not in CONDITIONS:
        raise ValueError(f"generator.condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
    return widths
