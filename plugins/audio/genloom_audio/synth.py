"""Notes and chords synthesised on the fly: pitched audio with labels and captions, no download.

Each example is one note, or with probability ``chords`` a major or minor triad on it, in
one of five timbres:

* ``sine``: a pure tone;
* ``square`` and ``sawtooth``: band-limited (odd harmonics at 1/k, every harmonic at 1/k,
  up to 0.45 of the sample rate), so nothing aliases;
* ``plucked``: a Karplus-Strong string: a burst of noise circulating in a delay line of
  one period through the two-point averaging filter, with a linearly interpolated
  fractional delay so that every pitch is in tune;
* ``bell``: a simple FM bell (Chowning): a carrier at the pitch, modulated at three times
  the pitch by an index that decays with the sound. The 1:3 ratio keeps the partials
  harmonic (f, 2f, 4f, 5f, 7f...), so the note has the pitch its label says; the classic
  1:1.4 bell is inharmonic and has none.

Sustained timbres (sine, square, sawtooth) follow an ADSR envelope (attack, decay, sustain,
release); plucked and bell decay by themselves, with a short attack and a release. Each
clip is scaled to a random peak level between -9 and -3 dBFS and gets white noise 45 to 60
dB below that peak.

Example ``i`` is a pure function of ``(seed, i)``: its choices come from a random
generator seeded with both, so the same seed gives the same audio everywhere and growing
``size`` keeps the examples already there. Synthesis itself is vectorised over a block
of examples (tensors of ``(examples, voices, samples)``), so thousands of clips render in
seconds. The first ``round(size * val_fraction)`` examples are the validation split.

Labels: ``label`` is the root's pitch index ``midi - low`` (so ``label=12`` asks for the
note an octave above ``low``); ``timbre`` is the index in ``timbres``. Captions read
"a plucked A3", "a sine chord on C4", "a bell F#5".
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from genloom.interfaces import Encoder, Split
from torch import Tensor

from genloom_audio.examples import EncodedExamples, check_condition_encoder, encode_clips, make_examples

log = logging.getLogger(__name__)

TIMBRES = ("sine", "square", "sawtooth", "plucked", "bell")
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CONDITIONS = ("none", "pitch", "timbre", "caption")
TRIADS = {"major": (0, 4, 7), "minor": (0, 3, 7)}
BLOCK = 1024  # examples synthesised together: fewer, larger tensor ops; memory ~ BLOCK x samples x 40 B
TABLE = 2048  # samples in one period of a square or sawtooth wavetable
BELL_RATIO = 3.0  # FM modulator frequency / carrier frequency


def midi_hz(midi: float | Tensor) -> float | Tensor:
    """Equal-tempered frequency of a MIDI note number (69 = A4 = 440 Hz)."""
    return 440.0 * 2 ** ((midi - 69) / 12)


def note_name(midi: int) -> str:
    """``57 -> "A3"``, ``61 -> "C#4"`` (scientific pitch notation, MIDI 60 = C4)."""
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


@dataclass(frozen=True)
class NoteSpec:
    """Everything about one example that was chosen at random."""

    root: int  # MIDI note number
    timbre: int  # index in the dataset's timbres
    intervals: tuple[int, ...]  # semitones above the root: (0,) for a note, a triad for a chord
    attack: float  # seconds
    decay: float  # seconds (ADSR), or the time constant of a plucked/bell decay
    sustain: float  # ADSR sustain level, 0..1
    release: float  # seconds before the end of the clip
    onset: float  # seconds of silence before the note
    peak_db: float  # the clip's peak level, dBFS
    noise_db: float  # noise level below the peak, dB
    bell_index: float  # FM modulation index at the onset
    seed: int  # noise, phases and the string's burst


class SynthNotes:
    """Synthesised notes and chords with pitch, timbre and caption (see the module docstring).

    Args:
        sample_rate: samples per second of the clips.
        duration: length of every clip, seconds.
        low: lowest root note, MIDI number (60 = C4).
        high: highest root note, MIDI number (inclusive); labels are ``0 .. high - low``.
        timbres: which of sine, square, sawtooth, plucked, bell to use.
        size: number of examples, both splits together.
        seed: which examples: the same seed gives the same audio.
        val_fraction: the share of examples held out for validation.
        condition: what ``example["condition"]`` holds: ``none``, ``pitch`` (the label),
            ``timbre`` (the timbre index) or ``caption`` (the caption, encoded by the
            pipeline's condition encoder).
        chords: probability that an example is a triad on its root instead of one note.

    Examples (batch keys): ``"mel"``, the encoder's output (``log_mel``: float32
    ``(1, n_mels, frames)`` in [0, 1]); ``"label"``, int64 ``()``, ``midi - low`` of the
    root; ``"timbre"``, int64 ``()``, the index in ``timbres``; ``"condition"``: the label
    (``pitch``), the timbre (``timbre``) or the caption's word ids, int64 ``(max_words,)``
    (``caption``), absent for ``none``.
    """

    unit = "clip"
    units_per_example = 1

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        duration: float = 0.5,
        low: int = 60,
        high: int = 95,
        timbres: Sequence[str] = TIMBRES,
        size: int = 6000,
        seed: int = 0,
        val_fraction: float = 0.05,
        condition: str = "none",
        chords: float = 0.2,
    ) -> None:
        if condition not in CONDITIONS:
            raise ValueError(f"dataset.condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1000:
            raise ValueError(
                f"dataset.sample_rate must be an integer of at least 1000 Hz, got {sample_rate!r}"
            )
        if not 0.05 <= duration <= 30:
            raise ValueError(f"dataset.duration must lie in [0.05, 30] seconds, got {duration!r}")
        if not 0 <= low <= high <= 127:
            raise ValueError(f"need 0 <= dataset.low <= dataset.high <= 127 (MIDI notes), got {low}..{high}")
        top = midi_hz(high + (7 if chords > 0 else 0))
        if top > 0.45 * sample_rate:
            raise ValueError(
                f"dataset.high={high} ({note_name(high)}, {top:.0f} Hz with its chord's fifth) is above "
                f"0.45 x dataset.sample_rate={sample_rate}: lower high or raise sample_rate"
            )
        unknown = sorted(set(timbres) - set(TIMBRES))
        if unknown or not timbres:
            raise ValueError(
                f"dataset.timbres must be a non-empty list of {', '.join(TIMBRES)}; got {list(timbres)}"
            )
        if not 0 <= chords <= 1:
            raise ValueError(f"dataset.chords is a probability in [0, 1], got {chords!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"dataset.size must be an integer of at least 2 (one per split), got {size!r}")
        if not 0 < val_fraction <= 0.5:
            raise ValueError(f"dataset.val_fraction must lie in (0, 0.5], got {val_fraction!r}")
        n_val = min(max(1, round(size * val_fraction)), size - 1)
        self.indices = {"val": range(n_val), "train": range(n_val, size)}
        self.sample_rate = sample_rate
        self.samples = round(duration * sample_rate)
        self.low, self.high = low, high
        self.timbres = tuple(timbres)
        self.seed = seed
        self.condition = condition
        self.chords = chords
        self.classes = tuple(note_name(m) for m in range(low, high + 1))

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> EncodedExamples:
        check_condition_encoder(self.condition, condition_encoder)
        start = time.perf_counter()
        indices = self.indices[name]
        specs = [self.spec(i) for i in indices]
        mels = []
        for first in range(0, len(specs), BLOCK):
            waveforms = self.render(specs[first : first + BLOCK])
            mels.append(encode_clips(encoder, waveforms))
        examples = make_examples(
            torch.cat(mels),
            labels=[s.root - self.low for s in specs],
            timbres=[s.timbre for s in specs],
            captions=[self.caption(s) for s in specs],
            condition=self.condition,
            condition_encoder=condition_encoder,
        )
        log.info("synthesised %d %s clips in %.1f s", len(examples), name, time.perf_counter() - start)
        return examples

    def spec(self, index: int) -> NoteSpec:
        """The random choices of example ``index``."""
        rng = np.random.default_rng([self.seed, index])
        chord = rng.random() < self.chords
        return NoteSpec(
            root=int(rng.integers(self.low, self.high + 1)),
            timbre=int(rng.integers(len(self.timbres))),
            intervals=TRIADS["major" if rng.random() < 0.5 else "minor"] if chord else (0,),
            attack=float(rng.uniform(0.005, 0.04)),
            decay=float(rng.uniform(0.08, 0.3)),
            sustain=float(rng.uniform(0.4, 0.9)),
            release=float(rng.uniform(0.03, 0.1)),
            onset=float(rng.uniform(0.0, 0.02)),
            peak_db=float(rng.uniform(-9.0, -3.0)),
            noise_db=float(rng.uniform(45.0, 60.0)),
            bell_index=float(rng.uniform(0.5, 1.5)),
            seed=int(rng.integers(2**31)),
        )

    def caption(self, spec: NoteSpec) -> str:
        """``"a plucked A3"`` or ``"a sine chord on C4"``."""
        timbre, note = self.timbres[spec.timbre], note_name(spec.root)
        return f"a {timbre} chord on {note}" if len(spec.intervals) > 1 else f"a {timbre} {note}"

    def render(self, specs: Sequence[NoteSpec]) -> Tensor:
        """The clips of ``specs`` as waveforms ``(len(specs), samples)`` in [-1, 1]."""
        sr = self.sample_rate
        t = torch.arange(self.samples, dtype=torch.float64) / sr  # (T,)
        gens = [torch.Generator().manual_seed(s.seed) for s in specs]
        # One row per sounding note: (example, MIDI note, starting phase).
        notes = [(i, s.root + step, float(torch.rand((), generator=gens[i], dtype=torch.float64)))
                 for i, s in enumerate(specs) for step in s.intervals]
        owner = torch.tensor([i for i, _, _ in notes])
        freq = midi_hz(torch.tensor([m for _, m, _ in notes], dtype=torch.float64))
        phase = torch.tensor([p for _, _, p in notes], dtype=torch.float64)
        kinds = [self.timbres[specs[i].timbre] for i, _, _ in notes]
        voices = torch.zeros(len(notes), self.samples)
        for kind in sorted(set(kinds)):
            rows = torch.tensor([r for r, k in enumerate(kinds) if k == kind])
            members = [specs[i] for i in owner[rows]]
            voices[rows] = _voices(kind, freq[rows], phase[rows], t, sr, members, gens, owner[rows])
        clip = torch.zeros(len(specs), self.samples).index_add_(0, owner, voices)
        clip = clip * _envelope(specs, [self.timbres[s.timbre] for s in specs], t.float())  # (N, T)
        peak_db = torch.tensor([s.peak_db for s in specs])[:, None]
        clip = clip / clip.abs().amax(1, keepdim=True).clamp(min=1e-12) * 10 ** (peak_db / 20)
        noise_db = torch.tensor([s.noise_db for s in specs])[:, None]
        noise = torch.stack([torch.randn(self.samples, generator=g) for g in gens])
        clip = clip + noise * 10 ** ((peak_db - noise_db) / 20)
        return clip.clamp(-1, 1)


def _voices(
    kind: str, freq: Tensor, phase: Tensor, t: Tensor, sr: int, specs: Sequence[NoteSpec],
    gens: Sequence[torch.Generator], owner: Tensor,
) -> Tensor:
    """``(n, T)`` notes of one timbre at frequencies ``freq`` ``(n,)``; ``specs[j]`` is note j's example."""
    cycles = (freq[:, None] * t + phase[:, None]) % 1.0  # (n, T): position within the period
    cycles = cycles.float()  # reduced to [0, 1) in float64 first: late samples keep their phase
    if kind == "sine":
        return torch.sin(2 * math.pi * cycles)
    if kind in ("square", "sawtooth"):
        return _wavetable(kind, freq, cycles, sr)
    if kind == "bell":
        index = torch.tensor([s.bell_index for s in specs])[:, None]
        fade = torch.exp(-t.float() / torch.tensor([s.decay for s in specs])[:, None])
        modulator = torch.sin(2 * math.pi * ((BELL_RATIO * freq[:, None] * t) % 1.0).float())
        return torch.sin(2 * math.pi * cycles + index * fade * modulator)
    span = math.ceil(sr / float(freq.min())) + 3  # samples of noise the longest delay line holds
    burst = torch.stack([torch.rand(span, generator=gens[int(i)]) * 2 - 1 for i in owner])
    t60 = 4 * torch.tensor([s.decay for s in specs])
    return karplus_strong(freq.float(), burst, t60, t.numel(), sr)


def karplus_strong(freq: Tensor, burst: Tensor, t60: Tensor, samples: int, sample_rate: int) -> Tensor:
    """Plucked strings ``(n, samples)``: Karplus-Strong, vectorised over the ``n`` strings.

    ``y[i] = g * ((1 - s) * y[i - D] + s * y[i - D - 1])``: a delay line of ``D`` samples
    closed through a two-point lowpass, the string's loss. The loop's period is
    ``D`` plus the lowpass's phase delay (``s`` samples at low frequencies), made exactly
    ``sample_rate / freq`` with a fractional ``D`` read by linear interpolation, so every
    pitch is in tune. ``s = 1/2`` is the original algorithm; high notes, whose many
    periods per second would damp them to a click, get a smaller ``s`` (Jaffe and Smith's
    decay stretching); ``g`` sets the fundamental to fall 60 dB in ``t60`` seconds.
    The loop starts filled with ``burst`` (noise, minus its mean; at least the longest
    period plus 3 samples). Blocks no longer than the shortest delay are computed at once,
    since each sample depends only on samples at least a period older.
    """
    freq, t60 = freq.double(), t60.double()
    period = sample_rate / freq  # (n,)
    omega = 2 * math.pi * freq / sample_rate
    target = 10 ** (-3 / (freq * t60))  # the fundamental's loss per period
    # The lowpass's gain at the fundamental is sqrt(1 - 2 s (1 - s) (1 - cos omega)): s = 1/2
    # where that loses at most half the target (in dB), else the s at which it loses exactly
    # half; g < 1 then always supplies the rest, so no mode (not even DC) rings forever.
    product = ((1 - target) / (2 * (1 - torch.cos(omega)))).clamp(max=0.25)
    stretch = (1 - torch.sqrt(1 - 4 * product)) / 2
    response = (1 - stretch) + stretch * torch.exp(-1j * omega)  # the lowpass at the fundamental
    gain = (target / response.abs())[:, None]
    delay = period - torch.angle(response).neg() / omega
    whole = delay.floor().long()
    frac = (delay - whole)[:, None]
    s = stretch[:, None]
    taps = ((1 - s) * (1 - frac), (1 - s) * frac + s * (1 - frac), s * frac)  # y[i-m], y[i-m-1], y[i-m-2]
    history = int(whole.max()) + 3
    length = torch.ceil(period).long()
    inside = torch.arange(history) >= history - length[:, None]  # the last `period` samples before the start
    loop = burst[:, -history:].double() * inside
    loop = (loop - loop.sum(1, keepdim=True) / length[:, None]) * inside
    y = torch.cat([loop, torch.zeros(len(freq), samples, dtype=loop.dtype)], dim=1)
    block = int(whole.min())
    for start in range(history, history + samples, block):
        now = torch.arange(start, min(start + block, history + samples))
        i = now[None] - whole[:, None]  # (n, block): one delay back
        older = taps[0] * y.gather(1, i) + taps[1] * y.gather(1, i - 1) + taps[2] * y.gather(1, i - 2)
        y[:, now] = gain * older
    return y[:, history:].float()


def _wavetable(kind: str, freq: Tensor, cycles: Tensor, sr: int) -> Tensor:
    """Band-limited square or sawtooth notes ``(n, T)``, read from one period per distinct frequency."""
    distinct, which = torch.unique(freq, return_inverse=True)
    tables = torch.stack([_table(kind, float(f), sr) for f in distinct])  # (U, TABLE)
    position = cycles * TABLE
    left = position.long().clamp(max=TABLE - 1)
    weight = position - left
    flat = left + (which * TABLE)[:, None]  # index into tables.flatten()
    right = flat + 1 - TABLE * (left == TABLE - 1)
    table = tables.flatten()
    return torch.lerp(table.take(flat), table.take(right), weight)


@functools.cache
def _table(kind: str, freq: float, sr: int) -> Tensor:
    """One period of a band-limited ``kind`` wave at ``freq``: harmonics below 0.45 ``sr``."""
    k = torch.arange(1, max(1, int(0.45 * sr / freq)) + 1, dtype=torch.float64)
    amplitude = 1 / k if kind == "sawtooth" else (k % 2 == 1) / k
    angle = 2 * math.pi * torch.arange(TABLE, dtype=torch.float64)[:, None] / TABLE * k
    return (torch.sin(angle) @ amplitude).float()


def _envelope(specs: Sequence[NoteSpec], kinds: Sequence[str], t: Tensor) -> Tensor:
    """``(N, T)`` amplitude envelopes: ADSR for sustained timbres, attack and release for the rest."""
    def column(key: str) -> Tensor:
        return torch.tensor([getattr(s, key) for s in specs])[:, None]

    onset, attack, decay, sustain, release = map(column, ("onset", "attack", "decay", "sustain", "release"))
    sustained = torch.tensor([k in ("sine", "square", "sawtooth") for k in kinds])[:, None]
    since = (t - onset).clamp(min=0)
    rise = (since / attack).clamp(max=1) * (t >= onset)
    fall = 1 - (1 - sustain) * ((since - attack) / decay).clamp(0, 1)
    end = t[-1]
    tail = ((end - t) / release).clamp(0, 1)
    return rise * torch.where(sustained, fall, torch.ones_like(fall)) * tail

