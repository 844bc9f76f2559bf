"""The audio front end: a waveform -> a normalised log-mel spectrogram, and back to power.

``log_mel`` computes a power mel spectrogram with ``torchaudio.transforms.MelSpectrogram``
(Hann window of ``n_fft`` samples, ``hop_length`` apart, centred and reflect-padded, so a
clip of ``T`` samples gives ``1 + T // hop_length`` frames; HTK mel scale, triangular
filters of peak 1) and maps it to [0, 1]:

    level_db = 10 * log10(max(mel / reference, 1e-10))
    x        = clamp((level_db - FLOOR_DB) / (CEILING_DB - FLOOR_DB), 0, 1)

``reference`` is the power a full-scale sine (amplitude 1) puts in the spectrogram bin
of its frequency, ``(sum(window) / 2) ** 2``, so 0 dB means "as loud as a full-scale
sine" and the normalisation does not depend on ``n_fft``. The fixed range
[FLOOR_DB, CEILING_DB] = [-80 dB, 0 dB] becomes [0, 1]: silence is 0, a full-scale tone 1.
Levels outside the range are clamped (quieter than -80 dB is silence; louder than a
full-scale sine, rare for music at sane levels, is capped). The map is invertible on
[0, 1] (:func:`to_power`), which is what the Griffin-Lim decoder relies on.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import Tensor

FLOOR_DB = -80.0
CEILING_DB = 0.0
MIN_RATIO = 1e-10  # the log's floor, far below FLOOR_DB


def full_scale_power(n_fft: int) -> float:
    """Power of a full-scale sine in its spectrogram bin, with a periodic Hann window of ``n_fft``."""
    return (float(torch.hann_window(n_fft).sum()) / 2) ** 2


def to_unit(mel_power: Tensor, reference: float) -> Tensor:
    """Power mel spectrogram -> normalised log-mel in [0, 1] (see the module docstring)."""
    level_db = 10 * torch.log10((mel_power / reference).clamp(min=MIN_RATIO))
    return ((level_db - FLOOR_DB) / (CEILING_DB - FLOOR_DB)).clamp(0, 1)


def to_power(unit: Tensor, reference: float) -> Tensor:
    """Normalised log-mel in [0, 1] -> power mel spectrogram: the inverse of :func:`to_unit`."""
    level_db = FLOOR_DB + unit.clamp(0, 1) * (CEILING_DB - FLOOR_DB)
    return reference * torch.pow(10.0, level_db / 10)


class LogMel:
    """Encoder: a mono waveform ``(T,)`` float in [-1, 1] -> ``(1, n_mels, 1 + T // hop_length)`` in [0, 1].

    Args:
        sample_rate: the waveform's rate in Hz (datasets resample to it).
        n_fft: window and FFT size, in samples.
        hop_length: samples between frames.
        n_mels: mel bands.
        f_min: lowest band edge, Hz.
        f_max: highest band edge, Hz; None is the Nyquist frequency.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
    ) -> None:
        check_front_end(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, where="encoder")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=2.0,
            mel_scale="htk",
        )
        self.reference = full_scale_power(n_fft)

    def fingerprint(self) -> str:
        """:class:`genloom.interfaces.Fingerprintable`: the output depends on these alone."""
        t = self.transform
        return (f"log_mel-v1 sample_rate={self.sample_rate} n_fft={self.n_fft} hop_length={self.hop_length} "
                f"n_mels={self.n_mels} f_min={t.f_min} f_max={t.f_max}")

    def frames(self, samples: int) -> int:
        """How many frames a clip of ``samples`` samples gives."""
        return 1 + samples // self.hop_length

    def encode(self, media: Tensor) -> Tensor:
        if not isinstance(media, Tensor):
            raise ValueError(
                f"the log_mel encoder encodes waveforms (a float tensor of samples), got {media!r}; "
                "a pitch- or timbre-conditioned model is sampled with label=N, a caption-conditioned "
                'one with prompt="..."'
            )
        return self.encode_batch(media[None])[0]

    def encode_batch(self, waveforms: Tensor) -> Tensor:
        """``(B, T)`` waveforms -> ``(B, 1, n_mels, frames)``; what :meth:`encode` does, many at once."""
        if waveforms.dim() != 2 or not waveforms.is_floating_point() or waveforms.shape[1] == 0:
            raise ValueError(
                f"the log_mel encoder takes mono float waveforms (T,), got shape "
                f"{tuple(waveforms.shape[1:])} of {waveforms.dtype}"
            )
        mel = self.transform(waveforms.float().cpu())  # (B, n_mels, frames)
        return to_unit(mel, self.reference)[:, None]


def check_front_end(
    sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float | None, where: str
) -> None:
    """Reject front-end settings that cannot give a spectrogram, naming the key."""
    for key, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("hop_length", hop_length),
                       ("n_mels", n_mels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}.{key} must be a positive integer, got {value!r}")
    if hop_length > n_fft:
        raise ValueError(f"{where}.hop_length={hop_length} must not exceed {where}.n_fft={n_fft}")
    top = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < top <= sample_rate / 2:
        raise ValueError(
            f"{where}: need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )
    lowest_band = _mel_hz(_hz_mel(f_min) + (_hz_mel(top) - _hz_mel(f_min)) * 2 / (n_mels + 1)) - f_min
    if lowest_band < sample_rate / n_fft:
        raise ValueError(
            f"{where}: n_mels={n_mels} bands are too narrow for n_fft={n_fft} at {sample_rate} Hz "
            f"(the lowest band spans {lowest_band:.1f} Hz, an FFT bin {sample_rate / n_fft:.1f} Hz): "
            "some bands would be empty; lower n_mels, raise n_fft or raise f_min"
        )


def _hz_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _mel_hz(mel: float) -> float:
    return 700.0 * (10 ** (mel / 2595.0) - 1.0)
