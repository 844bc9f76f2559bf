"""Your audio: a folder of WAV, FLAC or OGG files searched recursively, optionally one subfolder per class.

Files are read with soundfile (libsndfile): WAV (8-bit unsigned, 16/24/32-bit integer and
float PCM), FLAC (16/24-bit), OGG Vorbis, AIFF, and MP3 and Opus where the installed
libsndfile reads them (1.1 and later). Other audio (``.m4a``, ``.aac``, ``.wma``...) is
left out and named in a warning that says to convert it.
Each clip is mixed to mono (the mean of its channels), resampled to ``sample_rate`` with
``torchaudio.functional.resample`` (windowed sinc), and cropped to its first ``duration``
seconds or padded with silence at the end. Only the start of a long file is read.

Files are read and encoded when the dataset is first split, so a corrupt file is found
before training, never halfway through an epoch. A file that fails (a truncated WAV,
text renamed ``.wav``) is skipped and counted in one warning, or with ``strict=true`` the
first one is an error naming it. Files with other suffixes (``.txt``, ``.csv``, a cover
``.jpg``) are not audio and are left alone.

Clips that read but may not be what you meant are kept and counted in one warning each:
a WAV whose header promises more audio than the file holds (truncated: read as far as it
goes), a silent clip (peak below -80 dB in the part that is used, including stereo whose
channels cancel out in the mono mix; ``drop_silent=true`` leaves these out), and a
clipped one (0.1 % or more of its samples at full scale, or a peak beyond full scale
after resampling).

A folder larger than memory: with ``lazy=true`` every file is still read once up front
(the checks and warnings above, and the split, stay exactly the same) but only the file
list and labels are kept; each clip is read and encoded again when the trainer asks for
it (in its DataLoader workers with ``trainer.num_workers > 0``), so memory does not grow
with the folder. A file that fails to read later (changed or removed mid-run) is named in
a warning and the next readable clip of the split takes its place
(:class:`genloom.folders.LazyExamples`). Examples are equal to
the ones ``lazy=false`` holds.

With ``cache_decoded=true`` as well, each clip's encoded mel is kept on disk the first time
it is read (one small file per clip in ``cache_dir``, default ``~/.cache/genloom/decoded``;
:class:`genloom.cache.DecodedCache`) and read back instead of decoding, resampling and
encoding on later epochs and runs. An entry is keyed by the file's path, size and
modification time, the sample rate, the duration and the encoder's settings, so an edited
file or another front end is read afresh; a damaged entry is encoded again with a warning.

Split: files are taken in sorted order of their paths (within each class, with labels),
and every k-th goes to validation, k = round(1 / val_fraction). The split depends only on
the file names, never on chance.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any

import soundfile
import torch
import torchaudio
from genloom.cache import DecodedCache, check_decoded_cache, decoded_cache
from genloom.folders import LazyExamples, count_classes, describe_classes, find_files, split_every
from genloom.interfaces import Encoder, Split
from torch import Tensor

from genloom_audio.examples import EncodedExamples, encode_clips, make_examples

log = logging.getLogger(__name__)

SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff")
OPTIONAL_SUFFIXES = {".mp3": "MP3", ".opus": "OPUS"}  # read where libsndfile has the format
OTHER_AUDIO = (".mp3", ".opus", ".m4a", ".aac", ".wma", ".ape", ".mka", ".amr", ".mpc")
CONDITIONS = ("none", "label")
SHOWN_FAILURES = 3  # files named in each warning
RESAMPLE_MARGIN = 64  # extra input samples read past the crop, for the resampling filter's tail
SILENCE = 1e-4  # a peak below -80 dB, the log-mel floor: nothing to hear
FULL_SCALE = 0.999
CLIPPED_SHARE = 0.001  # this share of samples at full scale marks a clipped recording


def readable_suffixes() -> tuple[str, ...]:
    """The suffixes read: :data:`SUFFIXES`, plus MP3 and Opus where this libsndfile has them."""
    formats = set(soundfile.available_formats())
    subtypes = set(soundfile.available_subtypes("OGG")) if "OGG" in formats else set()
    extra = tuple(s for s, name in OPTIONAL_SUFFIXES.items() if name in formats | subtypes)
    return SUFFIXES + extra


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
        drop_silent: leave silent clips out instead of training on them (with a warning
            either way).
        lazy: keep only the file list, and read and encode each clip when it is asked for
            (see the module docstring), instead of encoding the whole folder into memory.
        cache_decoded: with ``lazy``, keep each clip's encoded mel on disk once read, and
            read it back on later epochs and runs instead of decoding again.
        cache_dir: where ``cache_decoded`` keeps them; None is ``<user cache>/decoded``
            (``$GENLOOM_CACHE_DIR``, else ``~/.cache/genloom``).

    Examples (batch keys): ``"mel"``, the encoder's output (``log_mel``: float32
    ``(1, n_mels, frames)`` in [0, 1]); with ``labels=true`` ``"label"``, int64 ``()`` in
    ``0 .. len(classes) - 1``; with ``condition=label`` ``"condition"``, the label again.
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
        drop_silent: bool = False,
        lazy: bool = False,
        cache_decoded: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        if condition not in CONDITIONS:
            raise ValueError(
                f"dataset.condition={condition} is not something audio_folder provides: a folder "
                "has no pitches, timbres or captions, only classes from subfolders (none | label). "
                "Train your folder with pipeline=audio_folder dataset.path=DIR (unconditional), "
                "adding dataset.labels=true generator.condition=label generator.num_classes=N to "
                "steer by class (docs/audio.md)"
            )
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
        self.drop_silent = drop_silent
        self.lazy = lazy
        self.cache_decoded, self.cache_dir = check_decoded_cache(cache_decoded, cache_dir, lazy=lazy)
        readable = readable_suffixes()
        found = find_files(self.root, what="audio files", suffixes=readable + OTHER_AUDIO,
                           hint="put WAV, FLAC or OGG files in it")
        self.files = [f for f in found if f.suffix.lower() in readable]
        left_out = [f for f in found if f.suffix.lower() not in readable]
        if left_out:
            shown = ", ".join(str(f.relative_to(self.root)) for f in left_out[:SHOWN_FAILURES])
            more = f", and {len(left_out) - SHOWN_FAILURES} more" if len(left_out) > SHOWN_FAILURES else ""
            log.warning(
                "left out %d file(s) in %s that soundfile (libsndfile %s) cannot read: %s%s; "
                "convert them to WAV or FLAC to train on them (ffmpeg -i IN.m4a OUT.flac)",
                len(left_out), self.root, soundfile.__libsndfile_version__, shown, more,
            )
        if not self.files:
            raise ValueError(
                f"dataset.path {path!r} holds no audio files this soundfile reads: {len(left_out)} "
                f"file(s) in formats it lacks ({', '.join(sorted({f.suffix for f in left_out}))}); "
                "convert them to WAV or FLAC"
            )
        counts = count_classes(self.files, self.root) if labels else {}
        self.classes: list[str] = list(counts)
        self.condition_classes = counts if condition == "label" else None  # see ConditionClasses
        if labels:
            if not self.classes:
                raise ValueError(
                    f"dataset.path {path!r} has no subfolders, so dataset.labels=true finds no "
                    "classes: put each class's files in a subfolder (path/dog/, path/bird/), "
                    "or set dataset.labels=false"
                )
            log.info("audio_folder: %d classes in %s: %s", len(counts), self.root, describe_classes(counts))
        self._encoded: tuple[Encoder, dict[str, EncodedExamples]] | None = None
        self._checked: dict[str, list[tuple[int | None, Path]]] | None = None  # lazy: the split's files

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> EncodedExamples | LazyExamples:
        """The split's examples; the whole folder is read once per encoder (or, lazily, read
        once to check it and each clip read again when asked for)."""
        if self.lazy:
            if self._checked is None:
                start = time.perf_counter()
                self._checked = self._split(self._readable(keep="file"))
                log.info(
                    "audio_folder: %d train / %d val clips in %s, checked in %.1f s and read when "
                    "asked for (dataset.lazy=true)", len(self._checked["train"]),
                    len(self._checked["val"]), self.root, time.perf_counter() - start,
                )
            members = self._checked[name]
            cache = (decoded_cache(encoder, {"sample_rate": self.sample_rate, "duration": self.duration},
                                   directory=self.cache_dir, source=self.root)
                     if self.cache_decoded else None)
            read = functools.partial(self._example, encoder, cache, members)
            return LazyExamples([file for _, file in members], read, what="clip", root=self.root)
        if self._encoded is None or self._encoded[0] is not encoder:
            self._encoded = (encoder, self._encode(encoder))
        return self._encoded[1][name]

    def _example(self, encoder: Encoder, cache: DecodedCache | None,
                 members: list[tuple[int | None, Path]], i: int) -> dict[str, Tensor]:
        """Example ``i`` of a lazy split: equal to example ``i`` of the split held in memory
        (to float rounding: the mel of one clip, not of a batch)."""
        label, file = members[i]
        mel = (encode_clips(encoder, self.read(file)[None]) if cache is None
               else cache.get(file, lambda: encode_clips(encoder, self.read(file)[None])))
        return make_examples(mel, labels=[label] if self.labels else None, condition=self.condition)[0]

    def read(self, file: Path) -> Tensor:
        """One file as a mono waveform ``(samples,)`` at ``sample_rate``, cropped or padded."""
        return self._read(file)[0]

    def _read(self, file: Path) -> tuple[Tensor, dict[str, str]]:
        """The waveform, and ``{"truncated" | "silent" | "clipped": why}`` for what is odd about it."""
        notes = {}
        with soundfile.SoundFile(file) as sound:
            rate = sound.samplerate
            wanted = math.ceil(self.duration * rate) + RESAMPLE_MARGIN
            data = sound.read(frames=wanted, dtype="float32", always_2d=True)  # (frames, channels)
        if data.shape[0] == 0:
            raise ValueError("it holds no samples")
        shortfall = _wav_shortfall(file)
        if shortfall:
            notes["truncated"] = shortfall
        channels = torch.from_numpy(data)
        waveform = channels.mean(1)
        if rate != self.sample_rate:
            waveform = torchaudio.functional.resample(waveform, rate, self.sample_rate)
        waveform = waveform[: self.samples]
        used = channels[: math.ceil(self.duration * rate)]
        peak = float(waveform.abs().max())
        at_full_scale = float((used.abs() >= FULL_SCALE).float().mean())
        if peak < SILENCE:
            cancelled = float(used.abs().max()) >= SILENCE
            notes["silent"] = "its channels cancel out in the mono mix" if cancelled else "no sound"
        elif at_full_scale >= CLIPPED_SHARE:
            notes["clipped"] = f"{100 * at_full_scale:.1f}% of its samples sit at full scale"
        elif peak > 1.0:
            notes["clipped"] = f"resampling takes its peak to {peak:.3f}, beyond full scale"
        return torch.nn.functional.pad(waveform, (0, self.samples - len(waveform))), notes

    def _encode(self, encoder: Encoder) -> dict[str, EncodedExamples]:
        start = time.perf_counter()
        clips = self._readable(keep="waveform")
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

    def _readable(self, *, keep: str) -> list[tuple[int | None, Any]]:
        """``(label, waveform)`` (``keep="waveform"``) or ``(label, file)`` (``keep="file"``)
        for every clip that reads, in path order; the rest skipped and counted in warnings."""
        clips: list[tuple[int | None, Any]] = []
        failures: list[tuple[Path, str]] = []
        noted: dict[str, list[tuple[Path, str]]] = {"truncated": [], "silent": [], "clipped": []}
        outside = 0
        for file in self.files:
            label = None
            if self.labels:
                if file.parent == self.root:
                    outside += 1
                    continue
                label = self.classes.index(file.relative_to(self.root).parts[0])
            try:
                waveform, notes = self._read(file)
            except Exception as err:  # libsndfile and the resampler raise many kinds of error on bad data
                reason = f"{type(err).__name__}: {err}"
                if self.strict:
                    raise ValueError(
                        f"{file} is not a readable audio file ({reason}); remove it from dataset.path, "
                        "or set dataset.strict=false to skip such files with a warning"
                    ) from err
                failures.append((file, reason))
                continue
            for kind, why in notes.items():
                noted[kind].append((file, why))
            if not (self.drop_silent and "silent" in notes):
                clips.append((label, waveform if keep == "waveform" else file))
        if outside:
            log.warning(
                "%d file(s) directly in %s belong to no class and were left out "
                "(dataset.labels=true reads classes from subfolders)",
                outside, self.root,
            )
        if failures:
            log.warning(
                "skipped %d of %d audio files in %s that are not readable: %s "
                "(dataset.strict=true makes this an error)",
                len(failures), len(self.files), self.root, self._shown(failures),
            )
        self._warn_about(noted)
        if not clips:
            dropped = len(noted["silent"]) if self.drop_silent else 0
            raise ValueError(
                f"dataset.path {str(self.root)!r} holds no readable audio: {len(self.files)} "
                f"file(s) found, {len(failures)} unreadable"
                + (f", {dropped} silent and dropped (dataset.drop_silent=true)" if dropped else "")
                + ". Supported: WAV, FLAC, OGG Vorbis (anything libsndfile reads)"
            )
        return clips

    def _warn_about(self, noted: dict[str, list[tuple[Path, str]]]) -> None:
        """One warning for each kind of odd clip: truncated, silent, clipped."""
        if noted["truncated"]:
            log.warning(
                "%d truncated WAV file(s) in %s, read as far as they go: %s",
                len(noted["truncated"]), self.root, self._shown(noted["truncated"]),
            )
        if noted["silent"]:
            what = "dropped %d silent clip(s)" if self.drop_silent else "%d silent clip(s)"
            advice = "" if self.drop_silent else "; dataset.drop_silent=true leaves them out"
            log.warning(
                what + " in %s (peak below -80 dB in the first %g s): %s%s",
                len(noted["silent"]), self.root, self.duration, self._shown(noted["silent"]), advice,
            )
        if noted["clipped"]:
            log.warning(
                "%d clipped clip(s) in %s, trained on as they are (lower their level to avoid "
                "distortion in the model): %s",
                len(noted["clipped"]), self.root, self._shown(noted["clipped"]),
            )

    def _shown(self, files: list[tuple[Path, str]]) -> str:
        shown = "; ".join(f"{f.relative_to(self.root)} ({why})" for f, why in files[:SHOWN_FAILURES])
        return shown + (f"; and {len(files) - SHOWN_FAILURES} more" if len(files) > SHOWN_FAILURES else "")

    def _split(self, items: list[tuple[int | None, Any]]) -> dict[str, list]:
        """Every k-th item of each class (in path order) to validation, the rest to training."""
        return split_every(items, every=self.every, group=lambda item: item[0], what="clips",
                           root=self.root, val_fraction=self.val_fraction)


def _wav_shortfall(file: Path) -> str | None:
    """For a RIFF WAV whose data chunk promises more bytes than the file holds, say how many."""
    with open(file, "rb") as stream:
        head = stream.read(12)
        if head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        size = file.stat().st_size
        while len(chunk := stream.read(8)) == 8:
            length = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                held = size - stream.tell()
                streaming = length in (0, 0xFFFFFFFF)  # a writer that never filled the size in
                if not streaming and length > held:
                    return f"its header promises {length} bytes of audio, the file holds {held}"
                return None
            stream.seek(length + (length & 1), 1)
    return None
