"""YIN finds the pitch of every synthesised timbre across the range, where torchaudio's estimator does not."""

import math

import pytest
import torch
from genloom_audio.pitch import median_pitch, semitones, yin
from genloom_audio.synth import TIMBRES, NoteSpec, SynthNotes, midi_hz

RATE = 16000


def notes(timbre: int, pitches: range) -> list[NoteSpec]:
    return [
        NoteSpec(root=m, timbre=timbre, intervals=(0,), attack=0.01, decay=0.2, sustain=0.7, release=0.05,
                 onset=0.01, peak_db=-6.0, noise_db=50.0, bell_index=2.0, seed=m)
        for m in pitches
    ]


@pytest.mark.parametrize("timbre", TIMBRES)
def test_yin_reads_every_timbre_within_half_a_semitone_across_the_range(timbre: str) -> None:
    synth = SynthNotes(sample_rate=RATE, low=36, high=96, chords=0.0)
    pitches = range(36, 97, 3)  # C2 (65 Hz) to C7 (2093 Hz)
    waveforms = synth.render(notes(TIMBRES.index(timbre), pitches))
    f0 = median_pitch(waveforms, RATE, f_min=50.0, f_max=2500.0)
    errors = semitones(f0, midi_hz(torch.tensor(pitches)))
    assert errors.abs().max() < 0.5, dict(zip(pitches, errors.tolist(), strict=True))


def test_silence_and_noise_have_no_pitch() -> None:
    quiet = torch.zeros(8000)
    noise = torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.3
    assert median_pitch(torch.stack([quiet, noise]), RATE).isnan().all()


def test_frames_are_voiced_only_where_the_note_sounds() -> None:
    t = torch.arange(16000) / RATE
    waveform = torch.sin(2 * math.pi * 220 * t) * (t < 0.5)  # half a second of A3, then silence
    f0, voiced = yin(waveform, RATE)
    assert voiced[:10].all() and not voiced[-10:].any()
    assert semitones(f0[voiced].median(), 220.0).abs() < 0.05
