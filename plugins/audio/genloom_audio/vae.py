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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from genloom.interfaces import SampleSpec
from torch import Tensor, nn

CONDITIONS = ("none", "label", "caption")
LOG_2PI = math.log(2 * math.pi)
# Posterior noise in evaluation is drawn from this seed, once per example shape: metrics are
# reproducible and an example's score is the same whatever batch it is scored in.
EVAL_SEED = 0


class MelVAE(nn.Module):
    """Convolutional VAE over ``(1, n_mels, frames)`` spectrograms; its keyword arguments are its config.

    Args:
        n_mels: mel bands (the encoder's).
        frames: frames per clip (``1 + duration * sample_rate // hop_length``).
        widths: channels of each resolution level; one halving of both axes per entry.
        latent_dim: size of the latent vector ``z``.
        beta: weight of the KL term; 1 gives the evidence lower bound, more leaves the
            latent less to say and the condition more.
        condition: ``none``, ``label`` (a pitch or timbre index) or ``caption``.
        num_classes: labels are ``0 .. num_classes - 1`` (``condition=label``).
        caption_buckets: word ids are ``1 .. caption_buckets`` (the caption encoder's
            ``buckets``; ``condition=caption``).
        condition_dim: width of the condition embedding.
        condition_dropout: probability of training an example without its condition.
    """

    def __init__(
        self,
        *,
        n_mels: int = 80,
        frames: int = 32,
        widths: Sequence[int] = (16, 32, 64, 64),
        latent_dim: int = 4,
        beta: float = 1.0,
        condition: str = "none",
        num_classes: int = 36,
        caption_buckets: int = 1060,
        condition_dim: int = 64,
        condition_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        widths = _check_architecture(n_mels, frames, widths, latent_dim, condition)
        if beta < 0:
            raise ValueError(f"generator.beta must be at least 0, got {beta}")
        if not 0 <= condition_dropout < 1:
            raise ValueError(f"generator.condition_dropout must lie in [0, 1), got {condition_dropout}")
        self.embed = _condition_embedding(condition, num_classes, caption_buckets, condition_dim)
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
        self.condition = condition
        self.num_classes = num_classes
        self.num_condition_classes = num_classes if condition == "label" else None  # ClassConditioned
        self.caption_buckets = caption_buckets
        self.condition_dropout = condition_dropout
        self._labels_checked = False  # see _batch_condition

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
        c = self._embed(self._batch_condition(batch, len(x)), len(x))
        mean, logvar = self.encoder(self._pad(x), c)
        if self.training:
            noise = torch.randn_like(mean)
        else:  # one seeded draw shared by every example: its score does not depend on its batch
            rng = torch.Generator(x.device).manual_seed(EVAL_SEED)
            one = torch.randn(mean.shape[1:], generator=rng, device=x.device, dtype=mean.dtype)
            noise = one.expand_as(mean)
        z = mean + torch.exp(0.5 * logvar) * noise
        x_hat = self._crop(self.decoder(z, c))  # (B, 1, n_mels, frames)
        log_sigma = self.log_sigma.clamp(min=math.log(1e-3))
        error = (x - x_hat).flatten(1)  # (B, n_mels * frames)
        recon = (0.5 * error.pow(2) * torch.exp(-2 * log_sigma) + log_sigma + 0.5 * LOG_2PI).sum(1).mean()
        kl = (0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)).sum(1).mean()
        if not self.training:
            error = (x - self._crop(self.decoder(mean, c))).flatten(1)
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
        c = self._embed(self._batch_condition(batch, len(x), dropout=False), len(x))
        mean, _ = self.encoder(self._pad(x), c)
        return x, self._crop(self.decoder(mean, c))

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        condition: Tensor | None = None,
        rng: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Draw ``n`` spectrograms ``(n, 1, n_mels, frames)`` in [0, 1].

        Args:
            n: how many clips.
            condition: a class index (a 0-dim or ``(n,)`` integer tensor) for
                ``condition=label``; an encoded caption (``(W,)`` or ``(n, W)`` word ids)
                for ``condition=caption``; None samples without a condition.
            rng: the random generator, on the model's device; the same seed gives the
                same spectrograms.
            temperature: scale of the prior's standard deviation: ``z ~ N(0, temperature^2)``;
                below 1 trades variety for typical sounds, 0 gives one sound per condition.
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
        c = self._embed(self._sampling_condition(condition, n, device), n)
        z = torch.randn((n, self.latent_dim), generator=rng, device=device) * temperature
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

    # -- conditions ----------------------------------------------------------------------

    def _embed(self, ids: Tensor | None, size: int) -> Tensor | None:
        """The condition vector ``(B, condition_dim)``; "no condition" when ``ids`` is None."""
        if self.embed is None:
            return None
        if ids is None:
            device = self.log_sigma.device
            if self.condition == "label":
                ids = torch.full((size,), self.num_classes, device=device)
            else:
                ids = torch.zeros((size, 1), dtype=torch.long, device=device)
        return self.embed(ids)

    def _batch_condition(self, batch: Mapping[str, Tensor], size: int, dropout: bool = True) -> Tensor | None:
        """The batch's condition ids, some replaced by "no condition" in training."""
        if self.condition == "none":
            return None
        ids = batch.get("condition")
        expected = "pitch, timbre or label" if self.condition == "label" else "caption"
        if ids is None:
            raise ValueError(
                f"generator.condition={self.condition} but the batch has no 'condition'; "
                f"set dataset.condition to {expected}"
            )
        if ids.dim() != (1 if self.condition == "label" else 2):
            raise ValueError(
                f"generator.condition={self.condition} but the batch's condition has shape "
                f"{tuple(ids.shape)}; set dataset.condition to {expected}"
            )
        if self.condition == "label" and not self._labels_checked:
            # Once: an out-of-range label would otherwise surface as an opaque index error,
            # and checking every batch would cost a device sync per step.
            self._check_labels(
                ids, "the data holds label {}, which",
                "Set generator.num_classes to the dataset's number of classes (pitches: high - low + 1)",
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
        """Condition ids for ``n`` samples; None means "no condition"."""
        if self.condition == "none":
            if condition is not None:
                raise ValueError(
                    "this VAE was trained without a condition (generator.condition=none); "
                    "sample it without prompt= or label="
                )
            return None
        if condition is None:
            return None
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


class Down(nn.Module):
    """Halve both axes (strided conv), then a residual block; both FiLM-conditioned."""

    def __init__(self, width_in: int, width_out: int, condition_dim: int) -> None:
        super().__init__()
        self.resample = ConvNorm(width_in, width_out, condition_dim, kernel=4, stride=2)
        self.block = ConvNorm(width_out, width_out, condition_dim)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = self.resample(x, c)
        return h + self.block(h, c)


class Up(nn.Module):
    """A residual block, then double both axes (transposed conv, 4x4 at stride 2: no checkerboard)."""

    def __init__(self, width_in: int, width_out: int, condition_dim: int) -> None:
        super().__init__()
        self.block = ConvNorm(width_in, width_in, condition_dim)
        self.resample = ConvNorm(width_in, width_out, condition_dim, kernel=4, stride=2, transposed=True)

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        return self.resample(x + self.block(x, c), c)


class ConvNorm(nn.Module):
    """conv (or transposed conv) -> GroupNorm -> FiLM (scale and shift from the condition) -> SiLU."""

    def __init__(
        self, width_in: int, width_out: int, condition_dim: int, kernel: int = 3, stride: int = 1,
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


def _check_architecture(
    n_mels: int, frames: int, widths: Sequence[int], latent_dim: int, condition: str
) -> tuple[int, ...]:
    widths = tuple(widths)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"generator.widths must be a non-empty list of positive widths, got {list(widths)}")
    for key, value in (("n_mels", n_mels), ("frames", frames), ("latent_dim", latent_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"generator.{key} must be a positive integer, got {value!r}")
    if condition not in CONDITIONS:
        raise ValueError(f"generator.condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
    return widths
