"""The one sampler, for every generator: seeded, batched, streaming where it can.

It rebuilds a pipeline from a checkpoint directory alone, draws samples from the
generator, turns them into media through the decoder and writes them to files. When the
generator and decoder both stream and samples are drawn one at a time, output is echoed
as it is generated (text to the terminal, token by token).
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from genloom import checkpoint, pipeline
from genloom.distributed import select_device
from genloom.interfaces import StreamingDecoder, StreamingGenerator
from genloom.plugins import PluginSet
from genloom.registry import RegistryError

log = logging.getLogger(__name__)

# Options given as media (text) that the sampler encodes before the generator sees them.
ENCODED_OPTIONS = ("stop",)


@dataclass
class LoadedModel:
    pipeline: pipeline.Pipeline
    checkpoint: checkpoint.Checkpoint
    device: torch.device


def load(path: str | Path, plugins: PluginSet, device: str = "auto") -> LoadedModel:
    """Rebuild the pipeline saved in a checkpoint and load its weights (no pickle)."""
    ckpt = checkpoint.read(path)
    _warn_on_plugin_drift(ckpt, plugins)
    built = pipeline.build(ckpt.config, plugins.registry, with_dataset=False)
    target = select_device(device)
    checkpoint.load_weights(built.generator, ckpt.path, target)
    built.generator.to(target).eval()
    return LoadedModel(built, ckpt, target)


def _warn_on_plugin_drift(ckpt: checkpoint.Checkpoint, plugins: PluginSet) -> None:
    installed = plugins.versions()
    for dist, version in ckpt.meta.get("plugins", {}).items():
        if dist in installed and installed[dist] != version:
            log.warning(
                "checkpoint %s was made with %s %s; %s is installed",
                ckpt.path, dist, version, installed[dist],
            )


class Sampler:
    def __init__(self, model: LoadedModel, *, hooks: Any, echo: TextIO | None = None) -> None:
        self.pipeline = model.pipeline
        self.device = model.device
        self.hooks = hooks
        self.echo = echo if echo is not None else sys.stdout

    def sampling_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Keep the options a user set; reject those this generator does not take."""
        generate = self.pipeline.generator.generate
        params = inspect.signature(generate).parameters
        accepted = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
                          and n not in ("condition", "rng"))
        chosen = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(chosen) - set(accepted))
        if unknown:
            name = type(self.pipeline.generator).__name__
            raise RegistryError(
                f"generator {name} does not take {', '.join(unknown)}; "
                f"its sampling options are: {', '.join(accepted) or 'none'}"
            )
        for key in ENCODED_OPTIONS:
            if key in chosen:
                chosen[key] = self.pipeline.encoder.encode(str(chosen[key])).to(self.device)
        return chosen

    def condition(self, prompt: str | None, label: int | None) -> torch.Tensor | None:
        """The generator's condition: the encoded prompt, or a class index."""
        if prompt is not None and label is not None:
            raise ValueError("give prompt= or label=, not both")
        if label is not None:
            if not isinstance(label, int) or isinstance(label, bool):
                raise ValueError(f"label={label!r} must be a class index (an integer)")
            return torch.tensor(label, device=self.device)
        if prompt is not None:
            return self.pipeline.prompt_encoder.encode(prompt).to(self.device)
        return None

    def run(
        self,
        *,
        n: int,
        batch_size: int,
        seed: int,
        out_dir: Path,
        prompt: str | None = None,
        label: int | None = None,
        stream: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> list[Path]:
        """Draw ``n`` samples and write them under ``out_dir``; return the files written."""
        if n < 1 or batch_size < 1:
            raise ValueError(f"n={n} and batch_size={batch_size} must both be at least 1")
        generator, decoder = self.pipeline.generator, self.pipeline.decoder
        opts = self.sampling_options(options or {})
        condition = self.condition(prompt, label)
        rng = torch.Generator(device=self.device).manual_seed(seed)
        streaming = (
            stream and isinstance(generator, StreamingGenerator) and isinstance(decoder, StreamingDecoder)
        )
        step = 1 if streaming else batch_size
        media: list[Any] = []
        with torch.inference_mode():
            for start in range(0, n, step):
                count = min(step, n - start)
                if streaming:
                    media.append(self._stream_one(condition, rng, opts, prompt, index=start))
                else:
                    outputs = generator.generate(count, condition=condition, rng=rng, **opts)
                    media.extend(decoder.decode(out) for out in outputs)
                    log.info("generated %d/%d", len(media), n)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = decoder.write(media, out_dir)
        for path in paths:
            self.hooks.genloom_sample_written(path=path, media_type=decoder.media_type, info={"seed": seed})
        return paths

    def _stream_one(
        self, condition: torch.Tensor | None, rng: torch.Generator, opts: dict[str, Any],
        prompt: str | None, index: int,
    ) -> Any:
        generator, decoder = self.pipeline.generator, self.pipeline.decoder
        piece_of = decoder.incremental()
        chunks = []
        self.echo.write(f"\n--- sample {index} ---\n{prompt or ''}")
        for chunk in generator.stream(1, condition=condition, rng=rng, **opts):
            chunks.append(chunk[0])
            self.echo.write(piece_of(chunk[0]))
            self.echo.flush()
        self.echo.write("\n")
        tokens = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long)
        return decoder.decode(tokens)
