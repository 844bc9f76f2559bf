"""``logger=tensorboard``: event files under the run directory, for ``tensorboard --logdir``.

What is written (docs/tracking.md, "TensorBoard"):

* scalars ``train/<metric>`` at each logged step (``loss``, ``lr``, ``throughput``,
  ``grad_norm``...) and ``val/<metric>`` at each evaluation;
* the resolved config as text (``config``), at the step the process started from;
* at each evaluation, the decoder's files of the drawn samples (``samples/<file name>``):
  its gallery (an image grid, a spectrogram sheet, a Markdown page of texts) when it
  writes one, else each sample's file, and every WAV clip as audio.

A resumed run writes to the same folder with ``purge_step`` just past the step it resumes
from, so TensorBoard hides what the stopped run logged after its checkpoint: the curves
read as one run, like ``metrics.jsonl``.
"""

from __future__ import annotations

import wave
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from genloom.settings import SettingsError, check_types
from genloom.trainer import DrawnSamples
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

IMAGES = (".png", ".jpg", ".jpeg")
TEXTS = (".md", ".txt")
WAV_SAMPLE_TYPES = {1: np.uint8, 2: np.int16, 4: np.int32}  # bytes per sample -> PCM type
FLUSH_SECONDS = 30  # between evaluations (after each one the writer flushes)


@dataclass(frozen=True)
class Settings:
    """``logger.tensorboard`` (genloom_loggers/conf/logger/tensorboard.yaml documents each key)."""

    dir: str = "tensorboard"
    samples: int = 4

    def __post_init__(self) -> None:
        check_types(self, where="logger.tensorboard")
        if self.samples < 0:
            raise SettingsError(f"logger.tensorboard.samples={self.samples} must be at least 0 "
                                "(0: no samples)")


class Logger:
    """One run's TensorBoard writer (``torch.utils.tensorboard``)."""

    def __init__(self, settings: Settings, run: Any) -> None:
        self.samples = settings.samples
        self.directory = Path(run.run_dir) / settings.dir  # an absolute dir stays itself
        # Events past the step a run resumes at (a stopped run's tail, logged again now) are
        # hidden: TensorBoard purges those at or after purge_step. The resumed step's own
        # metrics were logged before its checkpoint, so they stay.
        purge_step = run.step + 1 if run.step else None
        self.writer = SummaryWriter(log_dir=str(self.directory), purge_step=purge_step,
                                    flush_secs=FLUSH_SECONDS)
        self.writer.add_text("config", _as_code(OmegaConf.to_yaml(run.config, resolve=True)), run.step)

    def log_metrics(self, split: str, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"{split}/{key}", value, step)

    def log_samples(self, step: int, drawn: DrawnSamples) -> None:
        for path in shown(drawn):
            tag = f"samples/{path.name}"
            suffix = path.suffix.lower()
            if suffix in IMAGES:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
                self.writer.add_image(tag, pixels, step, dataformats="HWC")
            elif suffix == ".wav":
                waveform, rate = read_wav(path)
                self.writer.add_audio(tag, waveform, step, sample_rate=rate)
            elif suffix in TEXTS:
                text = path.read_text(encoding="utf-8", errors="replace")
                self.writer.add_text(tag, text if suffix == ".md" else _as_code(text), step)

    def checkpoint_saved(self, step: int, path: Path) -> None:
        """TensorBoard keeps no checkpoints (MLflow does)."""

    def flush(self) -> None:
        self.writer.flush()

    def close(self, reason: str) -> None:
        self.writer.close()


def shown(drawn: DrawnSamples) -> list[Path]:
    """What TensorBoard shows: the decoder's gallery, else each sample's file; and every WAV clip."""
    items, gallery = drawn.paths[: len(drawn.media)], drawn.paths[len(drawn.media):]
    clips = [p for p in items if p.suffix.lower() == ".wav"]
    return list(dict.fromkeys([*(gallery or items), *clips]))


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file as a mono waveform ``(T,)`` in [-1, 1] (channels averaged), and its sample rate."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    if width not in WAV_SAMPLE_TYPES:
        raise ValueError(f"{path}: {8 * width}-bit samples; TensorBoard is given 8, 16 or 32-bit PCM WAV")
    samples = np.frombuffer(frames, dtype=WAV_SAMPLE_TYPES[width]).astype(np.float32)
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        samples = samples - 128.0
    scale = float(2 ** (8 * width - 1))
    return (samples.reshape(-1, channels).mean(axis=1) / scale).clip(-1, 1), rate


def _as_code(text: str) -> str:
    """Text shown verbatim by TensorBoard's Markdown: an indented code block."""
    return "\n".join("    " + line for line in text.splitlines())
