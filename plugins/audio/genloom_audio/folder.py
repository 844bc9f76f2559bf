"""Your audio: a folder of WAV, FLAC or OGG files searched recursively, optionally one subfolder per class.

Files are read with soundfile (libsndfile): WAV (8-bit unsigned, 16/24/32-bit integer and
float PCM), FLAC (16/24-bit), OGG Vorbis, and whatever else libsndfile reads (AIFF...).
Each clip is mixed to mono (the mean of its channels), resampled to ``sample_rate`` with
``torchaudio.functional.resample`` (windowed sinc), and cropped to its first ``duration``
seconds or padded with silence at the end. Only the start of a long file is read.

Files are read and encoded when the dataset is first split, so a corrupt file is found
before training, never halfway through an epoch. A file that fails (a truncated WAV,
text renamed ``.wav``) is skipped and counted in one warning, or with ``strict=true`` the
first one is an error naming it. Files with other suffixes (``.txt``, ``.csv``, a cover
``.jpg``) are not audio and are left alone.

Split: files are taken in sorted order of their paths (within each class, with labels),
and every k-th goes to validation, k = round(1 / val_fraction). The split depends only on
the file names, never on chance.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import soundfile
import torch
import torchaudio
from genloom.folders import find_files, split_every
from genloom.interfaces import Encoder, Split
from torch import Tensor

from genloom_audio.examples import EncodedExamples, encode_clips, make_examples

log = logging.getLogger(__name__)

SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff")
CONDITIONS = ("none", "label")
SHOWN_FAILURES = 3  # files named in the warning about skipped files
RESAMPLE_MARGIN = 64  # extra input samples read past the crop, for the resampling filter's tail


class AudioFolder:
    """Audio files under ``path``, searched recursively (hidden files and folders skipped).

    Args:
        path: the folder.
        sample_rate: every clip is resampled to this rate (the encoder's).
        duration: every clip is cropped or padded to this many seconds.
        labels: read each file's class from its top-level subfolder (``path/dog/1.wav`` is
            class ``dog``); classes are numbered in sorted order of their names. Files
            directly in ``path`` are then left out.
        strict: an unreadable file is an error instead of a skipped file.
        val_fraction: the share of files held out for validation.
        condition: what ``example["condition"]`` holds: ``none`` or ``label`` (needs
            ``labels: true``).
    """

    unit = "clip"
    units_per_example = 1

    def __init__(
        self,
        *,
        path: str,
        sample_rate: int = 16000,
        duration: float = 0.5,
        labels: bool = False,
        strict: bool = False,
        val_fraction: float = 0.1,
        condition: str = "none",
    ) -> None:
        if condition not in CONDITIONS:
            raise ValueError(f"dataset.condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
        if condition == "label" and not labels:
            raise ValueError(
                "dataset.condition=label needs the class of each file: set dataset.labels=true "
                "and put the files of each class in its own subfolder of dataset.path"
            )
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1000:
            raise ValueError(
                f"dataset.sample_rate must be an integer of at least 1000 Hz, got {sample_rate!r}"
            )
        if not 0 < duration <= 600:
            raise ValueError(f"dataset.duration must lie in (0, 600] seconds, got {duration!r}")
        if not 0 < val_fraction <= 0.5:
            raise ValueError(f"dataset.val_fraction must lie in (0, 0.5], got {val_fraction!r}")
        self.root = Path(path).expanduser()
        self.sample_rate = sample_rate
        self.samples = round(duration * sample_rate)
        self.duration = duration
        self.labels = labels
        self.strict = strict
        self.val_fraction = val_fraction
        self.every = round(1 / val_fraction)
        self.condition = condition
        self.files = find_files(self.root, what="audio files", suffixes=SUFFIXES,
                                hint="put WAV, FLAC or OGG files in it")
        self.classes: list[str] = []
        if labels:
            folders = {f.relative_to(self.root).parts[0] for f in self.files if f.parent != self.root}
            self.classes = sorted(folders)
            if not self.classes:
                raise ValueError(
                    f"dataset.path {path!r} has no subfolders, so dataset.labels=true finds no "
                    "classes: put each class's files in a subfolder (path/dog/, path/bird/), "
                    "or set dataset.labels=false"
                )
            log.info("audio_folder classes: %s", ", ".join(f"{i}={c}" for i, c in enumerate(self.classes)))
        self._encoded: tuple[Encoder, dict[str, EncodedExamples]] | None = None

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> EncodedExamples:
        """The split's examples; the whole folder is read once per encoder."""
        if self._encoded is None or self._encoded[0] is not encoder:
            self._encoded = (encoder, self._encode(encoder))
        return self._encoded[1][name]

    def read(self, file: Path) -> Tensor:
        """One file as a mono waveform ``(samples,)`` at ``sample_rate``, cropped or padded."""
        with soundfile.SoundFile(file) as sound:
            rate = sound.samplerate
            wanted = math.ceil(self.duration * rate) + RESAMPLE_MARGIN
            data = sound.read(frames=wanted, dtype="float32", always_2d=True)  # (frames, channels)
        if data.shape[0] == 0:
            raise ValueError("it holds no samples")
        waveform = torch.from_numpy(data).mean(1)
        if rate != self.sample_rate:
            waveform = torchaudio.functional.resample(waveform, rate, self.sample_rate)
        waveform = waveform[: self.samples]
        return torch.nn.functional.pad(waveform, (0, self.samples - len(waveform)))

    def _encode(self, encoder: Encoder) -> dict[str, EncodedExamples]:
        start = time.perf_counter()
        clips: list[tuple[int | None, Tensor]] = []  # (label, waveform), in path order
        failures: list[tuple[Path, str]] = []
        outside = 0
        for file in self.files:
            label = None
            if self.labels:
                if file.parent == self.root:
                    outside += 1
                    continue
                label = self.classes.index(file.relative_to(self.root).parts[0])
            try:
                clips.append((label, self.read(file)))
            except Exception as err:  # libsndfile and the resampler raise many kinds of error on bad data
                reason = f"{type(err).__name__}: {err}"
                if self.strict:
                    raise ValueError(
                        f"{file} is not a readable audio file ({reason}); remove it from dataset.path, "
                        "or set dataset.strict=false to skip such files with a warning"
                    ) from err
                failures.append((file, reason))
        if outside:
            log.warning(
                "%d file(s) directly in %s belong to no class and were left out "
                "(dataset.labels=true reads classes from subfolders)",
                outside, self.root,
            )
        if failures:
            shown = "; ".join(f"{f.relative_to(self.root)} ({why})" for f, why in failures[:SHOWN_FAILURES])
            more = f"; and {len(failures) - SHOWN_FAILURES} more" if len(failures) > SHOWN_FAILURES else ""
            log.warning(
                "skipped %d of %d audio files in %s that are not readable: %s%s "
                "(dataset.strict=true makes this an error)",
                len(failures), len(self.files), self.root, shown, more,
            )
        if not clips:
            raise ValueError(
                f"dataset.path {str(self.root)!r} holds no readable audio: {len(self.files)} "
                f"file(s) found, {len(failures)} unreadable. Supported: WAV, FLAC, OGG Vorbis "
                "(anything libsndfile reads)"
            )
        examples = {}
        for name, members in self._split(clips).items():
            waveforms = torch.stack([waveform for _, waveform in members])
            labels = [label for label, _ in members] if self.labels else None
            mels = encode_clips(encoder, waveforms)
            examples[name] = make_examples(mels, labels=labels, condition=self.condition)
        log.info(
            "audio_folder: %d train / %d val clips from %s in %.1f s",
            len(examples["train"]), len(examples["val"]), self.root, time.perf_counter() - start,
        )
        return examples

    def _split(self, items: list[tuple[int | None, Tensor]]) -> dict[str, list]:
        """Every k-th item of each class (in path order) to validation, the rest to training."""
        return split_every(items, every=self.every, group=lambda item: item[0], what="clips",
                           root=self.root, val_fraction=self.val_fraction)
