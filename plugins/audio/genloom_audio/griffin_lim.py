"""Normalised log-mel spectrograms back to sound: Griffin-Lim, then WAV files and pictures.

A generated spectrogram has magnitudes but no phases. The ``griffin_lim`` decoder undoes
the front end's normalisation (:func:`genloom_audio.mel.to_power`), maps the mel bands
back to linear frequency bins with ``torchaudio.transforms.InverseMelScale`` (a
non-negative least-squares fit to the mel filterbank), then finds phases that agree with
those magnitudes by ``torchaudio.transforms.GriffinLim`` (``n_iter`` rounds of ISTFT and
STFT with momentum). Its random starting phases are drawn from a fixed seed, so the same
spectrogram always gives the same waveform.

It is one registered component so that a learned vocoder can replace it without touching
the generator: anything that turns ``(1, n_mels, frames)`` into a waveform and writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import soundfile
import torch
import torchaudio
from torch import Tensor

from genloom_audio import spectrograms
from genloom_audio.mel import LogMel, check_front_end, full_scale_power, to_power

log = logging.getLogger(__name__)

PHASE_SEED = 0  # Griffin-Lim's starting phases: the same spectrogram gives the same waveform


class GriffinLimDecoder:
    """Decoder: ``(1, n_mels, frames)`` normalised log-mel -> a waveform ``(T,)`` in [-1, 1].

    ``T = (frames - 1) * hop_length``, at ``sample_rate``. The front-end keys must be the
    encoder's (the presets link them).

    Args:
        sample_rate, n_fft, hop_length, n_mels, f_min, f_max: the ``log_mel`` encoder's.
        n_iter: Griffin-Lim iterations; more is cleaner and slower (the time is linear).
        momentum: Griffin-Lim's momentum (the "fast Griffin-Lim" of Perraudin et al.).
    """

    media_type = "audio"
    input_range = (0.0, 1.0)  # the log_mel encoder's levels, -80..0 dB; outside would be clamped

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        n_iter: int = 32,
        momentum: float = 0.99,
    ) -> None:
        check_front_end(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, where="decoder")
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"decoder.n_iter must be a positive integer, got {n_iter!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"decoder.momentum must lie in [0, 1), got {momentum!r}")
        self.sample_rate, self.hop_length, self.n_mels = sample_rate, hop_length, n_mels
        self.reference = full_scale_power(n_fft)
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=n_fft // 2 + 1, n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max,
            mel_scale="htk",
        )
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=n_fft, n_iter=n_iter, hop_length=hop_length, power=2.0, momentum=momentum
        )
        self.front_end = LogMel(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min,
            f_max=f_max,
        )

    def decode(self, tensor: Tensor) -> Tensor:
        unit = tensor.detach().float().cpu()
        if unit.dim() == 3 and unit.shape[0] == 1:
            unit = unit[0]
        if unit.dim() != 2 or unit.shape[0] != self.n_mels:
            raise ValueError(
                f"the griffin_lim decoder takes one spectrogram (1, {self.n_mels}, frames) "
                f"(decoder.n_mels={self.n_mels}), got shape {tuple(tensor.shape)}; was the "
                "generator trained with the log_mel encoder and the same n_mels?"
            )
        power = self.inverse_mel(to_power(unit, self.reference))  # (n_fft // 2 + 1, frames)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PHASE_SEED)
            waveform = self.griffin_lim(power)  # ((frames - 1) * hop_length,)
        return waveform.clamp(-1, 1)

    def write(self, media: Sequence[Tensor], directory: Path) -> list[Path]:
        """Write ``sample_000.wav``, ... (16-bit PCM) and ``spectrograms.png``, a sheet of them all.

        The sheet shows the log-mel spectrogram of each written waveform (what you hear,
        after Griffin-Lim), not the generated one.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        digits = max(3, len(str(len(media) - 1)))
        paths = []
        for i, waveform in enumerate(media):
            path = directory / f"sample_{i:0{digits}d}.wav"
            self._write_wav(path, waveform)
            paths.append(path)
        if media:
            units = [self.front_end.encode(waveform) for waveform in media]
            picture = directory / "spectrograms.png"
            spectrograms.sheet([[u] for u in units], [p.stem for p in paths]).save(picture)
            paths.append(picture)
        return paths

    def write_comparison(self, originals: Tensor, reconstructions: Tensor, directory: Path) -> list[Path]:
        """Write ``reconstructions.png`` (each original spectrogram with its reconstruction on
        its right) and both as sound: ``original_000.wav``, ``reconstruction_000.wav``, ..."""
        if originals.shape != reconstructions.shape:
            raise ValueError(
                f"originals {tuple(originals.shape)} and reconstructions "
                f"{tuple(reconstructions.shape)} must have the same shape"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        digits = max(3, len(str(len(originals) - 1)))
        paths = [directory / "reconstructions.png"]
        captions = [f"{i:0{digits}d}: original | reconstruction" for i in range(len(originals))]
        spectrograms.sheet(list(zip(originals, reconstructions, strict=True)), captions).save(paths[0])
        for i, (original, reconstruction) in enumerate(zip(originals, reconstructions, strict=True)):
            for name, unit in (("original", original), ("reconstruction", reconstruction)):
                path = directory / f"{name}_{i:0{digits}d}.wav"
                self._write_wav(path, self.decode(unit))
                paths.append(path)
        return paths

    def _write_wav(self, path: Path, waveform: Tensor) -> None:
        samples = waveform.detach().float().cpu()
        if samples.dim() != 1:
            raise ValueError(f"a waveform to write is (T,) samples, got shape {tuple(samples.shape)}")
        clipped = int((samples.abs() > 1).sum())
        if clipped:
            log.warning("%s: %d samples beyond full scale were clipped", path.name, clipped)
        soundfile.write(path, samples.clamp(-1, 1).numpy(), self.sample_rate, subtype="PCM_16")
