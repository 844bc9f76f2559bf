"""griffin_lim: a spectrogram back to the sound it describes; WAV files and pictures written."""

import math
from pathlib import Path

import pytest
import soundfile
import torch
from genloom_audio.griffin_lim import GriffinLimDecoder
from genloom_audio.mel import LogMel
from genloom_audio.pitch import median_pitch, semitones
from PIL import Image

RATE = 16000


def tone(hz: float, amplitude: float = 0.5, seconds: float = 0.5) -> torch.Tensor:
    return amplitude * torch.sin(2 * math.pi * hz * torch.arange(round(seconds * RATE)) / RATE)


@pytest.mark.parametrize("hz", [130.8, 261.6, 440.0, 987.8])
def test_a_tones_spectrogram_decodes_to_a_tone_of_its_pitch_and_level(hz: float) -> None:
    mel = LogMel(sample_rate=RATE).encode(tone(hz))
    waveform = GriffinLimDecoder(sample_rate=RATE).decode(mel)
    assert waveform.shape == (31 * 256,) and waveform.dtype == torch.float32
    assert semitones(median_pitch(waveform, RATE), hz).abs() < 0.25
    rms = waveform[1000:-1000].pow(2).mean().sqrt()
    assert rms == pytest.approx(0.5 / math.sqrt(2), rel=0.15)


def test_decoding_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    decoder = GriffinLimDecoder(sample_rate=RATE, n_iter=4)
    mel = LogMel(sample_rate=RATE).encode(tone(440.0))
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    first = decoder.decode(mel)
    assert torch.equal(first, decoder.decode(mel)) and torch.equal(torch.rand(1), before)


def test_write_makes_16_bit_wavs_at_the_rate_and_one_spectrogram_sheet(tmp_path: Path) -> None:
    decoder = GriffinLimDecoder(sample_rate=RATE, n_iter=4)
    media = [tone(220.0), tone(440.0, 0.2), tone(880.0, 0.9)]
    paths = decoder.write(media, tmp_path)
    names = [p.name for p in paths]
    assert names == ["sample_000.wav", "sample_001.wav", "sample_002.wav", "spectrograms.png"]
    info = soundfile.info(paths[0])
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (RATE, 1, "PCM_16", 8000)
    read, _ = soundfile.read(paths[1], dtype="float32")
    assert torch.allclose(torch.from_numpy(read), media[1], atol=1 / 32767)
    sheet = Image.open(paths[-1])
    assert sheet.mode == "RGB" and sheet.width > 2 * 128 and sheet.height > 128


def test_write_comparison_shows_pairs_and_writes_both_as_sound(tmp_path: Path) -> None:
    decoder = GriffinLimDecoder(sample_rate=RATE, n_iter=4)
    mels = torch.stack([LogMel(sample_rate=RATE).encode(tone(hz)) for hz in (220.0, 330.0)])
    paths = decoder.write_comparison(mels, mels.flip(0), tmp_path)
    assert sorted(p.name for p in paths) == [
        "original_000.wav", "original_001.wav", "reconstruction_000.wav", "reconstruction_001.wav",
        "reconstructions.png",
    ]
    original = median_pitch(torch.from_numpy(soundfile.read(tmp_path / "original_001.wav")[0]).float(), RATE)
    assert semitones(original, 330.0).abs() < 0.25
    with pytest.raises(ValueError, match="must have the same shape"):
        decoder.write_comparison(mels, mels[:1], tmp_path)


def test_a_spectrogram_of_the_wrong_shape_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"takes one spectrogram \(1, 80, frames\)"):
        GriffinLimDecoder().decode(torch.rand(1, 64, 10))
