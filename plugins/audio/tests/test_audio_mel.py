"""The log-mel front end: a tone lands in its band, the normalisation is the documented one and inverts."""

import math

import pytest
import torch
import torchaudio
from genloom_audio.mel import CEILING_DB, FLOOR_DB, LogMel, full_scale_power, to_power, to_unit

RATE = 16000


def tone(hz: float, amplitude: float = 1.0, seconds: float = 0.5) -> torch.Tensor:
    return amplitude * torch.sin(2 * math.pi * hz * torch.arange(round(seconds * RATE)) / RATE)


def band_centres(n_mels: int, n_fft: int = 1024) -> torch.Tensor:
    """The frequency (of an FFT bin) each mel band responds to most."""
    bank = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, RATE / 2, n_mels, RATE, mel_scale="htk")
    return bank.argmax(0) * RATE / n_fft


@pytest.mark.parametrize("hz", [130.8, 440.0, 1000.0, 3520.0])
def test_a_tones_energy_peaks_in_the_band_of_its_frequency(hz: float) -> None:
    mel = LogMel(sample_rate=RATE).encode(tone(hz, 0.5))
    assert mel.shape == (1, 80, 32)
    loudest = mel[0, :, 4:-4].mean(1).argmax()  # away from the padded edges
    nearest_two = (band_centres(80) - hz).abs().topk(2, largest=False).indices  # the bands around hz
    assert loudest in nearest_two


def test_a_full_scale_sine_reads_0_db_and_silence_reads_the_floor() -> None:
    encoder = LogMel(sample_rate=RATE)
    loud = encoder.encode(tone(1000.0))[0, :, 4:-4]
    assert loud.max() == pytest.approx(1.0, abs=0.02)  # 0 dB -> 1, give or take the band's shape
    quiet = encoder.encode(tone(1000.0, 10 ** (-40 / 20)))[0, :, 4:-4]
    assert quiet.max() == pytest.approx(0.5, abs=0.02)  # -40 dB: halfway between -80 and 0
    assert encoder.encode(torch.zeros(8000)).max() == 0


def test_the_normalisation_inverts_within_its_range() -> None:
    reference = full_scale_power(1024)
    levels_db = torch.linspace(FLOOR_DB, CEILING_DB, 33)
    power = reference * 10 ** (levels_db / 10)
    assert torch.allclose(to_unit(power, reference), torch.linspace(0, 1, 33), atol=1e-5)
    assert torch.allclose(to_power(to_unit(power, reference), reference), power, rtol=1e-4)
    assert to_unit(power * 100, reference).max() == 1  # louder than 0 dB is clamped


def test_frames_follow_the_hop() -> None:
    encoder = LogMel(sample_rate=8000, n_fft=256, hop_length=128, n_mels=32)
    assert encoder.encode(torch.zeros(2000)).shape == (1, 32, encoder.frames(2000)) == (1, 32, 16)
    assert encoder.encode_batch(torch.zeros(3, 2000)).shape == (3, 1, 32, 16)


def test_text_given_to_the_waveform_encoder_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="encodes waveforms.*label=N"):
        LogMel().encode("a plucked C4")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_mels": 0}, "encoder.n_mels must be a positive integer"),
        ({"hop_length": 2048}, "hop_length=2048 must not exceed"),
        ({"f_max": 9000.0}, "f_max <= sample_rate / 2"),
        ({"n_mels": 256, "n_fft": 256}, "too narrow"),
    ],
)
def test_bad_front_end_settings_name_the_key(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogMel(**options)
