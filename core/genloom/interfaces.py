"""The four component kinds a pipeline is made of, and what the runtime may ask of each.

A pipeline reads ``dataset -> encoder -> generator -> decoder``:

* an :class:`Encoder` turns media (a string, an image, a waveform) into a tensor;
* a :class:`Dataset` serves training and validation examples, already encoded;
* a :class:`Generator` is an ``nn.Module`` that models those tensors: it scores a batch
  (the training loss) and draws new tensors;
* a :class:`Decoder` turns generated tensors back into media and writes them to files.

A pipeline may add a *condition encoder* (an :class:`Encoder` too) that turns a caption
or other prompt into the tensor a conditional generator is steered by. Datasets put the
encoded condition of each example under the batch key ``"condition"``; at sampling time
the same encoder encodes the user's prompt.

These are structural interfaces (``typing.Protocol``): a plugin implements the methods,
it inherits nothing. Optional capabilities: :class:`StreamingGenerator` and
:class:`StreamingDecoder` let the sampler show output while it is being generated;
:class:`BatchedDecoding` lets ``genloom serve`` decode many independent requests in one
running batch (continuous batching);
:class:`Reconstructing` and :class:`ComparisonDecoder` let ``genloom eval`` show
originals beside their reconstructions; :class:`ConditionClasses` and
:class:`ClassConditioned` let ``genloom train`` check, before the first step, that a
generator steered by class indices takes as many classes as the dataset has;
:class:`BoundedDecoder` declares the values a decoder reads, which the contract kit checks
samples against; :class:`Tokenizing` marks a stage-1 autoencoder whose discrete codes another
pipeline's token model can generate, and :class:`CodeUsage` lets evaluation report how much of
its codebook a whole split uses; :class:`Exporting` lets ``genloom export`` write a generator
in another tool's format, :class:`Pretrained` lets ``genloom train`` start a generator from
weights made elsewhere, :class:`PartialCheckpoint` lets a generator's checkpoints hold only
what it trains (adapters over pretrained weights it rebuilds itself), and
:class:`ChatEncoder` lets ``genloom serve`` offer chat completions for a model whose encoder
has a chat template; :class:`Fitting` marks an encoder that learns from the training split
before training (a trained BPE), :class:`FittingMedia` a dataset that can hand it that
split's media, and :class:`FittedDecoder` a decoder that reads what it learnt;
:class:`TokenBytes` lets a dataset count the bytes of source media each token stands for,
so that bits per byte stay per byte whatever the tokenizer; :class:`Fingerprinted` lets a
dataset keep an encoder's ids on disk for later runs.
The runtime never looks at which modality a component serves; what differs lives behind
these methods.

Batches are ``dict[str, Tensor]`` whose tensors share their first (batch) dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

Batch = Mapping[str, "Tensor"]
Split = Literal["train", "val"]

KINDS = ("encoder", "decoder", "generator", "dataset")


@runtime_checkable
class Encoder(Protocol):
    """Media -> tensor (token ids, pixels, mel frames...)."""

    def encode(self, media: Any) -> Tensor:
        """Encode one item of media. Raise ``ValueError`` naming the item when it is unusable."""
        ...


@runtime_checkable
class Decoder(Protocol):
    """Tensor -> media, and media -> files."""

    media_type: str
    """What :meth:`decode` returns: ``"text"`` (str), ``"image"`` (PIL.Image), ``"audio"``..."""

    def decode(self, tensor: Tensor) -> Any:
        """Decode one generated example (no batch dimension) into media."""
        ...

    def write(self, media: Sequence[Any], directory: Path) -> list[Path]:
        """Write each item into ``directory`` (plus any gallery); return the paths written.

        The paths start with one file per item, in the order of ``media``; gallery files
        (a contact sheet of them all...) follow. ``genloom serve`` answers with these files.
        """
        ...


@dataclass(frozen=True)
class SampleSpec:
    """What one generated example looks like, declared by its generator.

    ``shape`` leaves out the batch dimension; ``None`` marks a dimension whose size varies
    between examples or calls (the length of a text that may stop early).
    """

    shape: tuple[int | None, ...]
    dtype: torch.dtype

    def describe(self) -> str:
        dims = ", ".join("*" if d is None else str(d) for d in self.shape)
        return f"({dims}) {str(self.dtype).removeprefix('torch.')}"

    def matches(self, tensor: Tensor) -> bool:
        """Whether one example (no batch dimension) has this shape and dtype."""
        return (
            tensor.dtype == self.dtype
            and tensor.dim() == len(self.shape)
            and all(d is None or d == s for d, s in zip(self.shape, tensor.shape, strict=True))
        )


@runtime_checkable
class Generator(Protocol):
    """A trainable model of a distribution over encoded tensors; also an ``nn.Module``."""

    sample_spec: SampleSpec
    """The shape (without batch) and dtype of each example :meth:`generate` returns."""

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Score a batch.

        Returns scalars: ``"loss"`` is minimised by the trainer; any other entries
        (bits per byte, PSNR...) are averaged over the validation split and logged.

        Evaluation weights each batch's scalars by its number of examples, so each must be
        the mean over the batch of a per-example value (a mean over tokens is one when the
        examples are equally long). A ratio of two totals (bits over bytes, when examples
        cover different numbers of bytes) instead returns its denominator for the batch as
        ``"<name>/weight"``: evaluation then weights ``<name>`` by it, so that the split's
        value is its total numerator over its total denominator, at any batch size. Weight
        entries are not reported themselves. In eval mode the scores of one example must not depend
        on the others in its batch, nor change between calls: draw any noise per example
        from a fixed seed. Then ``genloom eval`` reports the same numbers at any batch size.
        """
        ...

    def generate(
        self, n: int, *, condition: Tensor | None = None, rng: torch.Generator | None = None
    ) -> Tensor | Sequence[Tensor]:
        """Draw ``n`` examples, optionally under a condition.

        ``rng`` is a generator on the model's device (the sampler makes it with
        ``torch.Generator(device=...)``): draw with ``torch.randn(..., generator=rng,
        device=rng.device)`` and keep what ``multinomial`` or ``bernoulli`` reads on that
        device too; a draw on the CPU with a CUDA rng fails.

        Returns a tensor ``(n, *sample_spec.shape)``, or a list of ``n`` tensors when
        examples differ in length (text that stopped early); each of ``sample_spec.dtype``.

        Generators may accept further keyword-only sampling options (``temperature``,
        ``top_k``...); the sampler passes those a user sets and rejects the rest.
        """
        ...


@runtime_checkable
class StreamingGenerator(Protocol):
    """A generator that can yield its output piece by piece (for example token by token)."""

    def stream(
        self, n: int, *, condition: Tensor | None = None, rng: torch.Generator | None = None
    ) -> Iterator[Tensor]:
        """Yield successive ``(n, k)`` chunks of the output; closing the iterator stops early."""
        ...


@dataclass(frozen=True)
class SlotOutput:
    """What one row of a :class:`SlotDecoder` produced in one :meth:`SlotDecoder.step`."""

    tokens: Tensor
    """The row's new output ``(k,)`` on the CPU; ``k`` may be 0 (tokens held back while a
    stop sequence is undecided) or more than 1 (held tokens released)."""

    finish: Literal["stop", "length"] | None = None
    """Why the row finished: ``"stop"`` (its stop sequence), ``"length"`` (its token budget);
    None while it runs. A finished row's slot is free for another row."""

    @property
    def done(self) -> bool:
        return self.finish is not None


@runtime_checkable
class SlotDecoder(Protocol):
    """A running batch of up to ``capacity`` independent rows, decoded one step at a time.

    Rows join with :meth:`add` and leave when they finish or are :meth:`free`-d, at any
    step, so new requests never wait for the batch to drain (continuous batching). Each row
    has its own condition, sampling options and random generator. Batch invariance is the
    contract: a row's output depends only on its condition, options and generator, never on
    which other rows shared the batch, and equals what :meth:`StreamingGenerator.stream`
    gives for ``n=1`` with the same arguments.
    """

    capacity: int
    """The most rows decoded together."""

    def add(self, *, condition: Tensor | None, rng: torch.Generator | None, **options: Any) -> int:
        """Start a row; return its slot. ``options`` are the generator's keyword-only sampling
        options (as :meth:`Generator.generate` takes them). Raise ``ValueError`` for a bad
        option or condition, and ``RuntimeError`` when every slot is taken."""
        ...

    def step(self) -> dict[int, SlotOutput]:
        """Advance every active row by one decoding step; return each row's output by slot."""
        ...

    def free(self, slot: int) -> None:
        """Drop a row that has not finished (its client went away); its slot becomes free."""
        ...


@runtime_checkable
class BatchedDecoding(Protocol):
    """A generator that decodes independent rows in one running batch (see :class:`SlotDecoder`)."""

    def open_slots(self, capacity: int) -> SlotDecoder:
        """An empty running batch of ``capacity`` slots on the generator's device."""
        ...


@runtime_checkable
class Tokenizing(Protocol):
    """A generator whose examples have a discrete code: a stage-1 (vector-quantised) autoencoder.

    Its tokenizing half turns an example ``(B, *sample_spec.shape)`` into ``token_count`` code
    indices in ``[0, codebook_size)`` and its detokenizing half turns them back, so a frozen copy
    of it can serve as another pipeline's encoder and the front of its decoder (the
    ``from_checkpoint`` components): a token model (stage 2) then generates media by
    generating codes. Both halves are deterministic and batch-independent in eval mode.
    """

    codebook_size: int
    """How many distinct codes there are; every code lies in ``[0, codebook_size)``."""

    token_count: int
    """How many codes one example is, in a fixed (raster) order."""

    def tokenize(self, examples: Tensor) -> Tensor:
        """``(B, *sample_spec.shape)`` floats -> ``(B, token_count)`` int64 codes."""
        ...

    def detokenize(self, codes: Tensor) -> Tensor:
        """``(B, token_count)`` int64 codes -> ``(B, *sample_spec.shape)``, what the decoder reads."""
        ...


@runtime_checkable
class CodeUsage(Protocol):
    """A tokenizing generator that counts the codes of a batch (optional).

    How much of a codebook is used is a property of a whole split, not a mean over its
    examples (the perplexity of the split's codes is not the mean of its batches'), so it
    cannot be a :meth:`Generator.loss` metric. Evaluation sums these counts over every
    scored batch instead and reports ``code_perplexity`` (``exp`` of the entropy of the
    split's code frequencies: from 1, one code for everything, up to ``codebook_size``,
    every code equally often) and ``dead_codes`` (codes the split never uses); both are
    the same at any batch size.
    """

    def code_counts(self, batch: Batch) -> Tensor:
        """``(codebook_size,)`` int64: how often each code occurs in the codes of the batch's examples."""
        ...


@runtime_checkable
class StreamingDecoder(Protocol):
    """A decoder that can turn a stream of chunks into printable pieces."""

    def incremental(self) -> Callable[[Tensor], str]:
        """Return a function that takes the next chunk of one example and returns new text."""
        ...


@runtime_checkable
class Reconstructing(Protocol):
    """A generator that can encode and decode real examples (an autoencoder)."""

    def reconstruct(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Return ``(originals, reconstructions)``, each ``(B, ...)`` in the decoder's space."""
        ...


@runtime_checkable
class ComparisonDecoder(Protocol):
    """A decoder that can lay originals beside their reconstructions."""

    def write_comparison(self, originals: Tensor, reconstructions: Tensor, directory: Path) -> list[Path]:
        """Write a side-by-side comparison of two ``(B, ...)`` batches; return the paths."""
        ...


@runtime_checkable
class BoundedDecoder(Protocol):
    """A decoder that declares the range of values it reads faithfully.

    Values outside it would be clamped or dropped (a pixel at -0.5 becomes black), so the
    contract kit's ``value_range`` rule checks that the generator's samples lie inside:
    a generator that works in [-1, 1] must map its output to [0, 1] before a decoder that
    reads [0, 1]. Declare it as a class attribute, ``input_range = (0.0, 1.0)``.
    """

    input_range: tuple[float, float]
    """``(low, high)``, both included: every value :meth:`Decoder.decode` reads lies in it."""


@runtime_checkable
class Exporting(Protocol):
    """A generator that can write itself in another tool's format (``genloom export``)."""

    export_formats: tuple[str, ...]
    """The formats :meth:`export` writes, for example ``("hf",)``."""

    def export(
        self, directory: Path, *, format: str, encoder: Encoder | None = None, **options: Any
    ) -> list[Path]:
        """Write this model into the empty ``directory`` in ``format``; return the files written.

        ``encoder`` is the pipeline's, so a tokenizer file can go beside the weights.
        ``options`` are the format's own (``merge=True``...): raise ``ValueError`` naming an
        unknown one, the options taken, and what to do.
        """
        ...


@runtime_checkable
class Pretrained(Protocol):
    """A generator that can start training from weights made outside genloom.

    Its own config names them (the text plugin's ``generator.init_from=DIR``), and its
    constructor only records the name: the run's checkpoints hold weights of their own, so
    they rebuild, sample and serve after the pretrained files are gone. ``genloom train``
    calls :meth:`load_pretrained` once, on a fresh start, before the first step; never when
    it resumes (the checkpoint's weights win), and no other command calls it.
    """

    def load_pretrained(self) -> str | None:
        """Load the weights the config names into this model; return a line for the log saying
        what was loaded, or None when the config names none.

        Raise ``ValueError`` for weights that do not fit, naming the file, the mismatched key
        and the setting that fixes it.
        """
        ...


@runtime_checkable
class PartialCheckpoint(Protocol):
    """A generator whose checkpoints hold only part of its state dict.

    Its constructor rebuilds the rest from files its config names (LoRA adapters over a
    local pretrained model: the base weights come from the model's directory), so a
    checkpoint is the size of what trains, not of the whole model. Saving writes only the
    keys :meth:`checkpoint_keys` names; loading (sample, eval, serve, resume) checks that the
    file holds exactly those, names and shapes, and leaves the rest as the constructor made
    it. The generator itself must keep, among those keys, a fingerprint of what the rest was
    built from, and refuse to load over a rest that has changed since (a load-state-dict
    pre-hook raising :class:`genloom.checkpoint.CheckpointError` that names the file and the
    fingerprints): its adapters were trained against those weights and no others.
    """

    def checkpoint_keys(self) -> frozenset[str] | None:
        """The state dict keys a checkpoint holds; None for all of them (a whole checkpoint)."""
        ...


@runtime_checkable
class ChatEncoder(Protocol):
    """An encoder with a chat template: ``genloom serve`` offers ``/v1/chat/completions``.

    Messages are OpenAI's: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
    """

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> Tensor:
        """Render ``messages`` through the template with the assistant's turn opened, encode it:
        the prompt's token ids ``(T,)``. Raise ``ValueError`` for a message the template refuses."""
        ...


@runtime_checkable
class Fitting(Protocol):
    """An encoder that learns from the training split before training (a trained BPE).

    ``genloom train`` fits it once, before the splits are encoded, on what the dataset's
    :meth:`FittingMedia.fitting_media` gives, and stores :meth:`fitted_state` in every
    checkpoint (``tokenizer.json``); sample, eval, serve and resume restore it from there
    with :meth:`load_fitted` and never fit again. Fitting is deterministic: the same media
    and options give the same state. The state is JSON text, read back without running code.
    """

    vocab_size: int
    """How many ids :meth:`Encoder.encode` may return once fitted (``[0, vocab_size)``):
    ``genloom train`` refuses a generator whose own ``vocab_size`` is smaller."""

    def fit(self, media: Iterable[Any]) -> None:
        """Learn from the training split's media. Raise ``ValueError`` when it is unusable."""
        ...

    def fitted_state(self) -> str:
        """What :meth:`fit` learnt, as JSON text (a JSON object)."""
        ...

    def load_fitted(self, state: str) -> None:
        """Restore a :meth:`fitted_state`; raise ``ValueError`` saying what is wrong with it."""
        ...


@runtime_checkable
class FittedDecoder(Protocol):
    """A decoder that needs its pipeline's :class:`Fitting` encoder's state (a BPE's vocabulary)."""

    def load_fitted(self, state: str) -> None:
        """Take the encoder's :meth:`Fitting.fitted_state`; raise ``ValueError`` when it is unusable."""
        ...


@runtime_checkable
class FittingMedia(Protocol):
    """A dataset that can hand a :class:`Fitting` encoder the media of its training split."""

    def fitting_media(self) -> Iterator[Any]:
        """The training split's media, items as :meth:`Encoder.encode` takes them.

        Nothing of the validation split: :meth:`Dataset.split` must keep what it validates on
        out of this, for a fitting encoder too.
        """
        ...


@runtime_checkable
class Fingerprintable(Protocol):
    """An encoder that can name what its output is a function of, besides its input (optional).

    Two encoders with the same fingerprint must encode every input alike; any change that
    alters an output (another resolution, other mel bands) must change it. A lazy folder
    then keeps each file's encoded tensor on disk (``dataset.cache_decoded``,
    :class:`genloom.cache.DecodedCache`).
    """

    def fingerprint(self) -> str:
        """A short text identifying the mapping from media to tensors (its settings, a file's sha256)."""
        ...


@runtime_checkable
class Fingerprinted(Fingerprintable, Protocol):
    """An encoder that can name what its ids are a function of (optional).

    A dataset may then encode its media once and keep the ids on disk for later runs (the
    text datasets' token cache), keyed by the media's content and :meth:`fingerprint`: two
    encoders with the same fingerprint must give the same ids for every input, and any change
    that alters an id (another vocabulary, a refitted BPE) must change it.
    """

    vocab_size: int
    """Ids are in ``[0, vocab_size)``: how wide a stored id must be."""

    def fingerprint(self) -> str:
        """A short text, such as a sha256 of the tokenizer's file, identifying the id mapping."""
        ...


@runtime_checkable
class TokenBytes(Protocol):
    """An encoder whose ids each stand for a fixed number of bytes of the source media.

    A dataset whose windows cover varying numbers of bytes (a BPE's tokens) puts each
    example's byte count under ``example["bytes"]``, so that a generator reports bits per
    byte as total bits over total bytes (``"<name>/weight"`` in :meth:`Generator.loss`).
    """

    def token_bytes(self) -> Tensor:
        """``(vocab_size,)`` int64: how many bytes each id decodes to (0 for special tokens)."""
        ...


@runtime_checkable
class Dataset(Protocol):
    """A source of encoded examples with a deterministic train/validation split."""

    unit: str
    """What throughput counts, for example ``"tok"`` or ``"img"``."""

    units_per_example: int
    """How many units one example holds (a window of 256 tokens holds 256)."""

    def split(
        self, name: Split, encoder: Encoder, condition_encoder: Encoder | None = None
    ) -> torch.utils.data.Dataset:
        """Return the split as a map-style dataset of ``dict[str, Tensor]`` examples.

        ``condition_encoder`` is the pipeline's, or None; a dataset whose examples carry
        captions encodes them with it into ``example["condition"]``.
        """
        ...


@runtime_checkable
class ConditionClasses(Protocol):
    """A dataset that knows the classes its ``example["condition"]`` indexes (optional)."""

    condition_classes: Mapping[str, int] | None
    """``{class name: number of examples}`` in label order (condition ``i`` is the i-th
    class); None when the condition is not a class index (a caption, or no condition)."""


@runtime_checkable
class ClassConditioned(Protocol):
    """A generator that can be steered by a class index (optional)."""

    num_condition_classes: int | None
    """How many classes its condition takes (indices ``0 .. n - 1``); None when this
    generator is not steered by a class index (a caption, or no condition)."""


def kind_protocol(kind: str) -> type:
    """The protocol an object of ``kind`` must satisfy."""
    return {
        "encoder": Encoder,
        "decoder": Decoder,
        "generator": Generator,
        "dataset": Dataset,
    }[kind]
