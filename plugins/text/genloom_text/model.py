"""A decoder-only Transformer over token ids, with KV-cache sampling (in the manner of nanoGPT).

The whole model is in this file: pre-norm blocks of causal self-attention and a GELU MLP,
learned positional embeddings, and an LM head tied to the token embedding. Sampling
supports temperature, top-k, top-p, a stop sequence and streaming, with or without a
cache of past keys and values. It is GPT-2's architecture, so it exports to a Hugging Face
GPT-2 directory and starts from one (``genloom export``, ``init_from``: :mod:`genloom_text.gpt2`).

Continuous batching (``genloom serve``): :meth:`Transformer.open_slots` gives a
:class:`SlotBatch`, a running batch whose rows each have their own prompt, position, slot
of the KV cache, options and random generator; rows join and leave between steps. A row's
tokens equal those :meth:`Transformer.stream` gives for ``n=1`` with the same arguments,
whatever else shares the batch: its prompt is prefilled as ``stream`` does (alone, or
beside equally long prompts where that was checked to give the same bits, see
:meth:`SlotBatch._batch_is_exact`); in a batched step each linear layer runs as one
matrix product per row (``bmm`` over rows, each the ``(1, C)`` product a lone row
computes, rather than one ``(B, C)`` product whose rounding may change with ``B``),
attention is :func:`decode_attention` (below), and each row samples with its own generator
(greedy rows share one ``argmax``, which only compares).

Decoding attention: one new token attends over its cached positions through
:func:`decode_attention`, in every cached path (``stream``, ``generate`` and
:class:`SlotBatch`). It reads the cache in spans of ``ATTENTION_SPAN`` positions and masks
the positions past the row's own (:func:`span_bias`), so a row's arithmetic depends on its
own length alone, and rows whose lengths fall in the same span share one batched call whose
per-row results are bitwise those of a lone call, at any number of threads. (PyTorch's fused CPU attention
is not: with two threads, a batch of rows rounds differently from each row alone.)

As a token prior over another model's media codes (``media_vocab`` set; stage 2 of a
two-stage pipeline), the condition is a prefix of the same sequence and every path
(``generate``, ``stream``, the KV cache and :class:`SlotBatch`) draws exactly
``media_tokens`` codes, each among the ``media_vocab`` codes alone: the prompt is the
prefix and separator (:meth:`Transformer._prompt`), and :meth:`Transformer._sampling_logits`
keeps the codes' logits. See :class:`Transformer` for the layout. A caption may also come as
a sentence embedding (``caption_embedding_dim``): its learned projection gives the prefix's
vectors, which stand where the token embeddings of the prefix's placeholder ids would
(:meth:`Transformer._caption_vectors`), in the first pass over a sequence only (the prefill).

Compiled decoding (``compile=True`` in ``stream`` and ``generate``): after the prefill,
each token is decoded by :meth:`Transformer._decode_step` under ``torch.compile``
(inductor's C++ kernels on a CPU; on CUDA also CUDA graphs, ``mode="reduce-overhead"``).
No Python number in it changes from token to token, so it compiles once or twice per
batch size and process: the position is a tensor, each new key and value is written into
the preallocated cache at it (``index_copy_``), and attention reads the same span of the
cache as the eager step (a dynamic size, so one graph serves every span), its positions
past the row's masked by :func:`span_bias` from that tensor. The tokens are those of the
eager cache up to rounding (the greedy tests hold it to the uncached forward).

Context overflow: the model attends to at most ``block_size`` tokens. Whenever the context
would grow past that (a long prompt, or a long generation), it is cut to its last
``block_size - 1`` tokens and the cache is rebuilt from them. Cutting one token more than
needed leaves room for the next token, so the cache is rebuilt every other token rather
than on every token once generation runs past the context. ``use_cache=False`` applies
the same rule while recomputing everything, so both paths condition on the same tokens.
The cache cannot instead roll (drop its oldest position and keep the rest): positions are
learned absolute embeddings, so once the window moves every kept token sits at a new
position, and its keys and values, which depend on that position from the first layer on,
are not those cached. Only recomputing them gives the tokens recomputation gives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from genloom import compiling
from genloom.interfaces import SampleSpec, SlotOutput
from genloom_blocks.sampling import StopMatcher, check_rng, check_sampling_options, pad_rows, sample_token
from torch import Tensor, nn

from genloom_text.prefix import BYTE_IDS

log = logging.getLogger(__name__)

PREFIXES = ("none", "label", "caption")
GELUS = {"gelu": "none", "gelu_tanh": "tanh"}  # generator.activation -> nn.GELU(approximate=...)
ATTENTION_SPAN = 64  # decoding attention reads the cache in spans of this many positions
DEFAULT_NEW_TOKENS = 256  # max_new_tokens unless set; a media prior always draws its media_tokens


class Transformer(nn.Module):
    """A GPT-style language model; its keyword arguments are its whole config.

    Args:
        vocab_size: number of token ids (256 for the bytes encoder).
        block_size: the context: the most tokens the model attends to. A media prior may
            leave it None: what its last code is predicted from (prefix, separator and
            the first ``media_tokens - 1`` codes).
        n_layer: number of Transformer blocks.
        n_head: attention heads per block; must divide ``n_embd``.
        n_embd: width of the residual stream.
        dropout: dropout probability in training (embeddings, attention, residuals).
        bias: whether linear layers and LayerNorms carry a bias.
        start_token: the token generation starts from when there is no prompt
            (10, a newline, for byte-level text).
        sequence_key: the batch key :meth:`loss` reads the sequence from (``tokens`` for
            text; a two-stage pipeline's datasets keep their own key, ``image`` or ``mel``).
        media_vocab: ``K``, set to make this a token prior over another model's media codes
            (stage 2 of a two-stage pipeline; see below). None: a language model of text.
        media_tokens: ``L``, the codes in one example; needed with ``media_vocab``.
        prefix: what steers a media prior, as a prefix of its sequence: ``none``, ``label``
            (a class index) or ``caption`` (the ``prefix_bytes`` condition encoder's bytes).
        num_classes: the class labels a ``label`` prefix takes (``0 .. num_classes - 1``).
        caption_length: the bytes in a ``caption`` prefix (``condition_encoder.length``).
        caption_embedding_dim: 0 for a caption of bytes; else the width ``D`` of the sentence
            embedding a ``caption`` prefix is given instead (``condition_encoder=hf_sentence``:
            384 for all-MiniLM-L6-v2).
        caption_vectors: with ``caption_embedding_dim``, the prefix vectors ``k`` (a few) that
            a learned projection makes of the embedding.
        condition_dropout: the probability in training that an example's prefix is replaced
            by null tokens, so that the model also learns the unconditional distribution
            (what classifier-free ``guidance`` at sampling needs).
        activation: the MLP's GELU: ``gelu`` (exact, erf) or ``gelu_tanh`` (the tanh
            approximation GPT-2 was trained with).
        init_from: a local GPT-2 directory (Hugging Face format, safetensors) to start
            training from. The constructor only records it: ``genloom train`` loads it
            (:meth:`load_pretrained`) on a fresh start, never on resume, and checkpoints
            hold their own weights, so the directory is not needed afterwards.

    As a token prior (``media_vocab`` set), the vocabulary is laid out as ids ``[0, K)``, the
    media codes (what the frozen stage-1 encoder emits, no offset); then the prefix ids from
    ``K``: a label ``c`` is the one token ``K + c``, a caption its bytes ``K + byte`` padded
    to ``caption_length`` with ``K + 256``; then the separator, then the null token. The
    sequence is ``prefix + separator + codes``; the loss is the cross entropy of the codes
    alone (among the ``K`` codes), and sampling draws exactly ``L`` codes, each in ``[0, K)``.
    ``vocab_size`` null takes the size of this layout.

    A caption embedding ``(D,)`` takes no ids: its prefix is ``caption_vectors`` placeholder
    positions holding the null token, whose input vectors are replaced by the projection of
    the embedding, ``(k, n_embd)``. A prefix without its condition (condition dropout, the
    unconditional side of guidance, sampling without a prompt) keeps the null token's own
    embedding there, as a prefix of null tokens does.
    """

    def __init__(
        self,
        *,
        vocab_size: int | None = None,
        block_size: int | None = 128,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = False,
        start_token: int = 10,
        sequence_key: str = "tokens",
        media_vocab: int | None = None,
        media_tokens: int | None = None,
        prefix: str = "none",
        num_classes: int | None = None,
        caption_length: int | None = None,
        caption_embedding_dim: int = 0,
        caption_vectors: int | None = None,
        condition_dropout: float = 0.0,
        activation: str = "gelu",
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if activation not in GELUS:
            raise ValueError(f"generator.activation={activation!r} is not one of: {', '.join(GELUS)}")
        self.activation = activation
        self.init_from = init_from
        self.sequence_key = sequence_key
        self.media = _media_layout(media_vocab, media_tokens, prefix, num_classes, caption_length,
                                   condition_dropout, block_size, caption_embedding_dim, caption_vectors)
        if block_size is None:
            if self.media is None:
                raise ValueError("generator.block_size=null sizes a media prior's context to fit; "
                                 "a language model needs a number (128, 256, ...)")
            block_size = self.media.prefix_length + self.media.tokens
        if vocab_size is None:
            vocab_size = 256 if self.media is None else self.media.vocab_size
        elif self.media is not None and vocab_size < self.media.vocab_size:
            raise ValueError(
                f"generator.vocab_size ({vocab_size}) is too small for {self.media.describe()}; "
                f"set generator.vocab_size=null (sized to fit) or at least {self.media.vocab_size}"
            )
        if n_embd % n_head:
            raise ValueError(f"generator.n_embd ({n_embd}) must be a multiple of generator.n_head ({n_head})")
        if block_size < 2:
            raise ValueError(f"generator.block_size is {block_size}; it must be at least 2")
        if self.media is None and not 0 <= start_token < vocab_size:  # a media prior starts from its prefix
            raise ValueError(
                f"generator.start_token ({start_token}) must be a token id below "
                f"generator.vocab_size ({vocab_size})"
            )
        self.vocab_size = vocab_size
        self.block_size = block_size
        # The new token ids; a media prior's samples are exactly its L codes.
        length = None if self.media is None else self.media.tokens
        self.sample_spec = SampleSpec(shape=(length,), dtype=torch.long)
        # genloom.interfaces.ClassConditioned: genloom train checks it against the dataset's classes.
        self.num_condition_classes = self.media.num_classes if self.media is not None else None
        self.start_token = start_token
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias, activation) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        if self.media is not None and self.media.embedding_dim:
            # A caption embedding -> its k prefix vectors. _init_weights draws its weights
            # N(0, 0.02), as the token embeddings' rows: an L2-normalised embedding (|e| = 1)
            # then maps to entries of std 0.02, the scale of the token vectors they stand
            # beside (nn.Linear's default, U(+-1/sqrt(D)), would give ~0.03 with a bias of
            # the same size shared by every caption).
            width = self.media.prefix_length * n_embd
            self.caption_proj = nn.Linear(self.media.embedding_dim, width, bias=bias)  # (D,) -> (k * C,)

        # GPT-2 initialisation; the projections that write into the residual stream are
        # scaled down so that its variance does not grow with depth.
        self.apply(_init_weights)
        for name, param in self.named_parameters():
            if name.endswith("out_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx: Tensor, kv_cache: KVCache | None = None, prefix: Tensor | None = None) -> Tensor:
        """Next-token logits ``(B, T, vocab_size)`` for token ids ``idx`` ``(B, T)``.

        With ``kv_cache``, ``idx`` continues the tokens already cached: they are attended
        to without being recomputed, and the cache advances by ``T``. ``prefix``
        ``(B, P, n_embd)``, for a sequence that starts at position 0: the input vectors of
        its first ``P`` positions, in place of their token embeddings (a caption embedding's
        projection, :meth:`_caption_vectors`).
        """
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.pos
        if start + T > self.block_size:
            raise ValueError(
                f"{start + T} tokens do not fit the context of {self.block_size} "
                "(generator.block_size); pass at most that many"
            )
        positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self._embed(idx, positions, prefix)  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.pos += T
        # Weight tying: the head reuses the token embedding, which also keeps a single copy
        # of the matrix in the state dict (safetensors refuses tensors that share memory).
        return F.linear(self.ln_f(x), self.tok_emb.weight)  # (B, T, vocab_size)

    def _embed(self, idx: Tensor, positions: Tensor, prefix: Tensor | None) -> Tensor:
        """The input vectors ``(B, T, C)`` of ids ``idx`` ``(B, T)`` at ``positions`` (``(T,)`` or
        ``(B, T)``), the first ``P`` of them ``prefix`` ``(B, P, C)`` when given."""
        x = self.tok_emb(idx)  # (B, T, C)
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x[:, prefix.shape[1] :]], dim=1)
        return self.drop(x + self.pos_emb(positions))

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Next-token cross entropy on ``batch["tokens"]`` ``(B, T + 1)``.

        Returns ``loss``, the mean cross entropy in nats per token, and ``bits_per_byte``.
        With the bytes encoder a token is a byte, so bits per byte are the loss in bits.
        When the batch says how many bytes each example's targets cover (``batch["bytes"]``
        ``(B,)``, from a BPE), ``bits_per_byte`` is the batch's total bits over its total
        bytes, weighted by those bytes in evaluation (``bits_per_byte/weight``), and
        ``bits_per_token`` is the loss in bits: runs with different tokenizers compare.
        """
        if self.media is not None:
            return self._media_loss(batch)
        tokens = batch[self.sequence_key]  # (B, T + 1)
        logits = self(tokens[:, :-1])  # (B, T, vocab_size)
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        bits = loss.detach() / math.log(2)  # per token
        if "bytes" not in batch:
            return {"loss": loss, "bits_per_byte": bits}
        covered = batch["bytes"].sum().clamp(min=1).float()
        return {"loss": loss, "bits_per_byte": bits * tokens[:, 1:].numel() / covered,
                "bits_per_byte/weight": covered, "bits_per_token": bits}

    def _media_loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A media prior's loss: cross entropy of the codes after ``prefix + separator``.

        Prefix positions are not scored, and each code is scored among the ``K`` codes only
        (the distribution sampling draws from). ``bits_per_token`` is bits per media code.
        Condition dropout draws only in training, so evaluation scores are deterministic.
        """
        media = self.media
        codes = self._batch_codes(batch)  # (B, L)
        prefix = self._prefix_rows(batch.get("condition"), len(codes), codes.device)  # (B, P)
        vectors = self._caption_vectors(batch.get("condition"))  # (B, P, C) or None
        if self.training and media.condition_dropout > 0 and prefix.shape[1]:
            dropped = torch.rand(len(codes), device=codes.device) < media.condition_dropout  # (B,)
            prefix = prefix.masked_fill(dropped[:, None], media.null)
            if vectors is not None:  # a dropped embedding leaves its placeholders' null vectors
                vectors = torch.where(dropped[:, None, None], self.tok_emb(prefix).to(vectors.dtype), vectors)
        separator = codes.new_full((len(codes), 1), media.separator)
        sequence = torch.cat([prefix, separator, codes], dim=1)  # (B, P + 1 + L)
        logits = self(sequence[:, :-1], prefix=vectors)[:, prefix.shape[1] :, : media.vocab]  # (B, L, K)
        loss = F.cross_entropy(logits.flatten(0, 1), codes.flatten())
        return {"loss": loss, "bits_per_token": loss.detach() / math.log(2)}

    def _batch_codes(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The media codes ``(B, L)`` under ``sequence_key``, checked against the layout."""
        key, media = self.sequence_key, self.media
        if key not in batch:
            raise ValueError(
                f"the batch has no {key!r} (generator.sequence_key), only {', '.join(map(repr, batch))}; "
                "set generator.sequence_key to the key the dataset puts its media codes under"
            )
        codes = batch[key]
        if codes.dim() != 2 or codes.is_floating_point() or codes.shape[1] != media.tokens:
            raise ValueError(
                f"batch[{key!r}] must hold {media.tokens} int64 media codes per example "
                f"(generator.media_tokens), got shape {tuple(codes.shape)} and dtype {codes.dtype}; "
                "is the encoder the frozen stage-1 model whose codes this prior models?"
            )
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= media.vocab:
            raise ValueError(
                f"batch[{key!r}] holds code {low if low < 0 else high}, outside [0, {media.vocab}) "
                "(generator.media_vocab); set it to the stage-1 model's codebook size"
            )
        return codes.long()

    def _prefix_rows(self, condition: Tensor | None, n: int, device: torch.device) -> Tensor:
        """The prefix ids ``(n, P)`` of a batch's conditions (``(n,)`` labels, ``(n, P)`` captions),
        checked; for caption embeddings ``(n, D)``, their null placeholders."""
        media = self.media
        if media.prefix == "none":
            return torch.empty(n, 0, dtype=torch.long, device=device)
        if condition is None:
            setting = "dataset.condition=label" if media.prefix == "label" else "dataset.condition=caption"
            raise ValueError(
                f"generator.prefix={media.prefix} needs each example's condition in batch['condition']: "
                f"set {setting} (or generator.prefix=none)"
            )
        if media.embedding_dim:
            self._check_caption_embeddings(condition, n)
            return torch.full((n, media.prefix_length), media.null, dtype=torch.long, device=device)
        if condition.is_floating_point():  # a sentence embedding (condition_encoder=hf_sentence)?
            how = (
                f"for sentence embeddings set generator.caption_embedding_dim={condition.shape[-1]}, "
                "generator.caption_vectors=4 and generator.caption_length=null "
                "(pipeline=shapes_tokens_minilm)"
                if media.prefix == "caption" and condition.dim() == 2
                else "a sentence embedding steers generator.prefix=caption with "
                "generator.caption_embedding_dim"
            )
            raise ValueError(
                f"generator.prefix={media.prefix} reads token ids, but the condition holds float vectors "
                f"of shape {tuple(condition.shape)} (a sentence embedding?): {how}; or encode captions "
                "with condition_encoder=prefix_bytes"
            )
        if media.prefix == "label":
            if condition.shape != (n,):
                raise ValueError(
                    f"generator.prefix=label reads one class index per example, but the condition has "
                    f"shape {tuple(condition.shape)}; is the dataset's condition a caption? "
                    "(then use generator.prefix=caption)"
                )
            low, high = int(condition.min()), int(condition.max())
            if low < 0 or high >= media.num_classes:
                raise ValueError(
                    f"label {low if low < 0 else high} is out of range: generator.num_classes="
                    f"{media.num_classes} takes labels 0..{media.num_classes - 1}"
                )
            return (condition.long() + media.vocab)[:, None].to(device)
        if condition.dim() != 2 or condition.shape != (n, media.caption_length):
            raise ValueError(
                f"generator.prefix=caption reads {media.caption_length} caption ids per example "
                f"(generator.caption_length), but the condition has shape {tuple(condition.shape)}; "
                f"encode captions with condition_encoder=prefix_bytes length={media.caption_length}"
            )
        low, high = int(condition.min()), int(condition.max())
        if low < media.vocab or high >= media.vocab + BYTE_IDS:
            raise ValueError(
                f"the caption holds id {low if low < media.vocab else high}, outside the caption ids "
                f"[{media.vocab}, {media.vocab + BYTE_IDS}) of this model: encode captions with "
                f"condition_encoder=prefix_bytes offset={media.vocab} (generator.media_vocab)"
            )
        return condition.long().to(device)

    def _check_caption_embeddings(self, condition: Tensor, n: int) -> None:
        """That ``condition`` is ``n`` sentence embeddings of the width this prior projects."""
        width = self.media.embedding_dim
        if not condition.is_floating_point():
            raise ValueError(
                f"generator.caption_embedding_dim={width} reads each caption as a sentence embedding "
                f"of {width} float values, but the condition holds ids of shape {tuple(condition.shape)}: "
                "encode them with condition_encoder=hf_sentence, or set generator.caption_embedding_dim=0 "
                "and generator.caption_length for condition_encoder=prefix_bytes"
            )
        if condition.dim() != 2 or condition.shape[0] != n or condition.shape[1] != width:
            got = f"embeddings of {condition.shape[-1]} values" if condition.dim() == 2 else (
                f"a tensor of shape {tuple(condition.shape)}")
            raise ValueError(
                f"the condition holds {got}, but generator.caption_embedding_dim={width}: set "
                "generator.caption_embedding_dim to the condition encoder's width (384 for "
                "all-MiniLM-L6-v2), or condition_encoder.path to the model this prior was trained with"
            )

    def _caption_vectors(self, condition: Tensor | None) -> Tensor | None:
        """The prefix vectors ``(n, P, C)`` of caption embeddings ``(n, D)`` (checked by
        :meth:`_prefix_rows`); None for a prior whose prefix is token ids."""
        if self.media is None or not self.media.embedding_dim:
            return None
        weight = self.caption_proj.weight
        vectors = self.caption_proj(condition.to(device=weight.device, dtype=weight.dtype))  # (n, P * C)
        return vectors.view(len(condition), self.media.prefix_length, -1)

    def _prompt_vectors(self, condition: Tensor | None, device: torch.device) -> Tensor | None:
        """The vectors ``(P, C)`` of a prompt's prefix (:meth:`_prompt` checked ``condition``):
        its caption embedding's projection, or the null token's vectors without one; None for
        a prior whose prefix is token ids."""
        if self.media is None or not self.media.embedding_dim:
            return None
        with torch.no_grad():
            if condition is None:
                return self.tok_emb(self._null_prefix(device))  # (P, C)
            return self._caption_vectors(condition[None])[0]  # (P, C)

    def new_kv_cache(self) -> KVCache:
        """An empty cache for :meth:`forward`, sized to this model's layers and context."""
        return KVCache(n_layer=len(self.blocks), block_size=self.block_size)

    def stream(
        self,
        n: int,
        *,
        condition: Tensor | None = None,
        rng: torch.Generator | None = None,
        max_new_tokens: int = DEFAULT_NEW_TOKENS,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Tensor | None = None,
        use_cache: bool = True,
        guidance: float | None = None,
        compile: bool = False,
    ) -> Iterator[Tensor]:
        """Sample ``n`` continuations together, yielding ``(n, k)`` chunks of new tokens.

        Args:
            n: how many rows to sample.
            condition: a prompt of token ids ``(P,)`` shared by all rows. Without one (or
                with an empty one) generation starts from ``start_token``. A prompt longer
                than the context keeps its last ``block_size - 1`` tokens, with a warning.
                A media prior takes a class index (a 0-dim tensor, from ``label=``) or an
                encoded caption ``(caption_length,)``, by its ``prefix``; with
                ``condition_dropout`` in training it may also sample without one.
            rng: the random generator for sampling, on the model's device; the same seed
                gives the same samples.
            max_new_tokens: the most new tokens per row; a media prior always draws its
                ``media_tokens`` codes (leave this unset).
            temperature: divides the logits; 0 picks the most likely token (greedy).
            top_k: sample only among the ``top_k`` most likely tokens.
            top_p: sample only among the most likely tokens whose probabilities add up to
                ``top_p`` (nucleus sampling).
            stop: a token sequence ``(S,)``; a row ends when it produces it, and the stop
                sequence itself is not output.
            use_cache: reuse past keys and values; ``False`` recomputes the whole context
                for every token (the slow reference path, same tokens).
            guidance: classifier-free guidance for a conditioned media prior: the logits
                are ``uncond + guidance * (cond - uncond)``, the unconditional ones from the
                null prefix (trained by ``condition_dropout``); 1 is plain conditional
                sampling, more follows the condition more closely. It doubles the batch.
            compile: decode with the step compiled by ``torch.compile`` (see the module
                docstring): 1.4-2x the tokens/s at small sizes and short contexts, less
                where GEMMs or the cache's memory traffic dominate, after a one-off compile
                per batch size and process (5-10 s with inductor's on-disk cache warm,
                20-40 s cold, on 2 CPU cores); worth it for long generations or many
                calls. Needs a C++ compiler on a CPU. Ignored with ``use_cache=False``.

        A media prior's tokens are codes in ``[0, media_vocab)``, exactly ``media_tokens``
        per row; it takes no ``stop``.

        A row that has stopped is padded with -1. Tokens that might begin the stop
        sequence are held back until that is decided, so a chunk may be shorter for some
        rows (padded with -1) or not come at all on some steps. Concatenating the chunks
        and dropping the -1 gives exactly what :meth:`generate` returns. The iterator
        ends early when every row has stopped. Chunks are on the CPU. While it runs, the
        model is in eval mode; its training mode comes back when the iterator ends or is
        closed. Context overflow follows the rule in the module docstring.
        """
        device = self.tok_emb.weight.device
        max_new_tokens = self._new_tokens(max_new_tokens)
        check_sampling_options(n, max_new_tokens, temperature, top_k, top_p)
        check_rng(rng, device)
        prompt = self._prompt(condition, device)
        vectors = self._prompt_vectors(condition, device)
        stop_ids = self._stop_ids(stop)
        unconditional = self._unconditional_prompt(guidance, device)
        if vectors is not None:
            vectors = vectors.expand(n, -1, -1)  # (n, P, C)
            if unconditional is not None:  # the guidance rows' prefix: null vectors
                vectors = torch.cat([vectors, self._prompt_vectors(None, device).expand(n, -1, -1)])
        return self._stream(
            n, prompt, rng, max_new_tokens, temperature, top_k, top_p, stop_ids, use_cache,
            unconditional, guidance, vectors, compile,
        )

    def generate(
        self,
        n: int,
        *,
        condition: Tensor | None = None,
        rng: torch.Generator | None = None,
        max_new_tokens: int = DEFAULT_NEW_TOKENS,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Tensor | None = None,
        use_cache: bool = True,
        guidance: float | None = None,
        compile: bool = False,
    ) -> list[Tensor] | Tensor:
        """Sample ``n`` continuations; one 1-D tensor of new tokens per row (on the CPU).

        Rows differ in length when ``stop`` ends some of them early. A media prior returns
        its codes as one ``(n, media_tokens)`` tensor. The options are those of
        :meth:`stream`, which this drains.
        """
        chunks = list(
            self.stream(
                n,
                condition=condition,
                rng=rng,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                stop=stop,
                use_cache=use_cache,
                guidance=guidance,
                compile=compile,
            )
        )
        tokens = torch.cat(chunks, dim=1) if chunks else torch.empty(n, 0, dtype=torch.long)
        if self.media is not None:
            return tokens  # (n, L): every row has its L codes
        return [row[row >= 0] for row in tokens]

    def open_slots(self, capacity: int) -> SlotBatch:
        """A running batch of up to ``capacity`` independent rows (see :class:`SlotBatch`)."""
        return SlotBatch(self, capacity)

    # genloom.interfaces.Exporting: `genloom export format=hf`.
    export_formats = ("hf",)

    def export(
        self, directory: Path, *, format: str, encoder: object | None = None, **options: Any
    ) -> list[Path]:
        """Write this model as a Hugging Face GPT-2 directory (:func:`genloom_text.gpt2.export`)."""
        if format not in self.export_formats:
            raise ValueError(f"the transformer exports format=hf only, not format={format!r}")
        if options:
            raise ValueError(
                f"format=hf of the transformer takes no options; got {', '.join(sorted(options))}. "
                "(merge=true is for a LoRA generator: this model's weights are whole already)"
            )
        from genloom_text import gpt2

        return gpt2.export(self, directory, encoder)

    def load_pretrained(self) -> str | None:
        """genloom.interfaces.Pretrained: load ``init_from``'s GPT-2 weights (:mod:`genloom_text.gpt2`)."""
        if self.init_from is None:
            return None
        from genloom_text import gpt2

        return gpt2.load_gpt2(self, Path(self.init_from))

    @torch.inference_mode()
    def _stream(
        self,
        n: int,
        prompt: Tensor,
        rng: torch.Generator | None,
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        stop: list[int] | None,
        use_cache: bool,
        unconditional: Tensor | None = None,
        guidance: float | None = None,
        vectors: Tensor | None = None,
        compile: bool = False,
    ) -> Iterator[Tensor]:
        # ``vectors`` (rows, P, C): the prefix vectors of a caption embedding, in every pass
        # that starts at position 0. torch's decorator enters inference mode only while this
        # generator runs, so the caller's own grad mode is untouched between chunks.
        was_training = self.training
        self.eval()
        try:
            context = prompt.expand(n, -1)  # (n, P): what the next prediction conditions on
            if unconditional is not None:
                # Guidance: rows n.. are the same rows under the null prefix (as long as the prompt).
                context = torch.cat([context, unconditional.expand(n, -1)])  # (2n, P)
            cache = self.new_kv_cache() if use_cache else None
            decode = self._compiled_decode_step() if compile and use_cache else None
            fresh = context  # the part of the context not yet in the cache
            matchers = None if stop is None else [StopMatcher(stop) for _ in range(n)]
            for _ in range(max_new_tokens):
                prefilling = cache is None or cache.pos == 0
                if decode is not None and not prefilling:
                    logits = decode(fresh, cache)  # (n, V)
                else:
                    logits = self(fresh if cache is not None else context, cache,
                                  vectors if prefilling else None)[:, -1]  # (n, V)
                if unconditional is not None:
                    conditional, free = logits[:n], logits[n:]
                    logits = free + guidance * (conditional - free)
                token = sample_token(self._sampling_logits(logits), temperature, top_k, top_p, rng)  # (n,)
                if matchers is None:
                    yield token[:, None].cpu()
                else:
                    chunk = pad_rows([m.push(t) for m, t in zip(matchers, token.tolist(), strict=True)])
                    if chunk.shape[1]:
                        yield chunk
                    if all(m.stopped for m in matchers):
                        return
                fresh = token[:, None] if unconditional is None else token.repeat(2)[:, None]
                context = torch.cat([context, fresh], dim=1)
                if context.shape[1] > self.block_size:
                    context = context[:, 1 - self.block_size :]
                    if cache is not None:
                        cache.reset()
                    fresh = context
            if matchers is not None:
                # Held tokens that never completed the stop sequence are output after all.
                chunk = pad_rows([m.flush() for m in matchers])
                if chunk.shape[1]:
                    yield chunk
        finally:
            self.train(was_training)

    def _decode_step(self, idx: Tensor, position: Tensor, keys: list[Tensor], values: list[Tensor]) -> Tensor:
        """Next-token logits ``(B, V)`` for one token per row, ``idx`` ``(B, 1)`` at ``position`` ``(1,)``.

        ``keys`` and ``values`` are per layer the cache's first ``S`` positions ``(B, H, S, D)``
        (views: the new token's are written into the cache at ``position``), ``S`` being the
        attention span. :meth:`forward`'s arithmetic with no Python number that changes
        from token to token, so that ``torch.compile`` traces it once: the position is a
        tensor, and the mask past it comes from that tensor.
        """
        x = self._embed(idx, position, None)  # (B, 1, C)
        B, _, C = x.shape
        n_head = self.blocks[0].attn.n_head if len(self.blocks) else 1
        span = keys[0].shape[2] if keys else 0
        bias = span_bias((position + 1).expand(B), span, n_head, x.dtype)  # (B * H, 1, S)
        for block, cached_keys, cached_values in zip(self.blocks, keys, values, strict=True):
            attn = block.attn
            heads = (B, 1, n_head, C // n_head)
            q, k, v = (t.view(heads).transpose(1, 2) for t in attn.qkv(block.ln_1(x)).split(C, dim=2))
            cached_keys.index_copy_(2, position, k)  # (B, H, S, D)
            cached_values.index_copy_(2, position, v)
            y = decode_attention(q, cached_keys, cached_values, bias).transpose(1, 2).reshape(B, 1, C)
            x = x + attn.out_proj(y)
            x = x + block.mlp(block.ln_2(x))
        return F.linear(self.ln_f(x), self.tok_emb.weight)[:, -1]  # (B, V)

    def _compiled_decode_step(self) -> Callable[[Tensor, KVCache], Tensor]:
        """``step(idx, cache)``: :meth:`_decode_step` under ``torch.compile`` for tokens ``idx``
        ``(B, 1)`` after the cache's positions, which it advances; next-token logits ``(B, V)``.

        Inductor, with CUDA graphs on CUDA. Dynamo keeps what it compiled on the method's
        code, so every call to this in a process shares it: a batch size compiles twice at
        most (``TORCH_LOGS=recompiles`` shows it), the span read being a dynamic size.
        """
        on_cuda = self.tok_emb.weight.device.type == "cuda"
        compiling.use_cache_dir()  # the trainer's kernel cache: a warm one compiles in seconds
        if self.tok_emb.weight.device.type == "cpu":
            compiling.check_toolchain("compile=true")
        mode = "reduce-overhead" if on_cuda else None  # reduce-overhead: CUDA graphs
        compiled = torch.compile(self._decode_step, dynamic=False, mode=mode)
        marked_span = None

        def step(idx: Tensor, cache: KVCache) -> Tensor:
            nonlocal marked_span
            position = torch.tensor([cache.pos], device=idx.device)  # (1,)
            if on_cuda:  # CUDA graphs replay into the cache in place: its addresses must stay put
                for tensor in (*cache.keys, *cache.values):
                    torch._dynamo.mark_static_address(tensor)
            # The span read, as the eager step reads it: one graph for every span length.
            span = attention_span(cache.pos + 1, self.block_size)
            keys, values = ([t[:, :, :span] for t in kv] for kv in (cache.keys, cache.values))
            # Marked when the span changes, which is when Dynamo may trace again; a span it has
            # seen matches the graph traced for it unmarked. (Marking all 8 slices at every
            # token cost 2-8% of a small model's batch-1 step.)
            if span != marked_span:
                for tensor in (*keys, *values):
                    torch._dynamo.mark_dynamic(tensor, 2)
                marked_span = span
            try:
                logits = compiled(idx, position, keys, values)
            except torch._dynamo.exc.BackendCompilerFailed as err:
                raise RuntimeError(
                    f"compile=true could not compile the decode step ({type(err.inner_exception).__name__}: "
                    f"{err.inner_exception}); on a CPU inductor needs a C++ compiler (g++ or clang) on "
                    "the PATH. Sample without compile=true instead"
                ) from None
            cache.pos += 1
            return logits

        return step

    def _sampling_logits(self, logits: Tensor) -> Tensor:
        """The logits ``(n, V)`` a token is drawn from: a media prior's first ``K`` only."""
        return logits if self.media is None else logits[:, : self.media.vocab]

    def _new_tokens(self, max_new_tokens: int) -> int:
        """How many tokens a row draws: ``max_new_tokens``, or a media prior's ``L``."""
        if self.media is None:
            return max_new_tokens
        if max_new_tokens not in (DEFAULT_NEW_TOKENS, self.media.tokens):
            raise ValueError(
                f"max_new_tokens={max_new_tokens}, but every sample of this media prior is "
                f"{self.media.tokens} codes (generator.media_tokens); leave max_new_tokens unset"
            )
        return self.media.tokens

    def _media_prompt(self, condition: Tensor | None, device: torch.device) -> Tensor:
        """A media prior's prompt ``(P + 1,)``: the condition's prefix, then the separator."""
        media = self.media
        if condition is not None and media.prefix == "none":
            raise ValueError(
                "this media prior takes no condition (generator.prefix=none): sample it without "
                "label= or prompt="
            )
        if condition is None:
            if media.prefix != "none" and media.condition_dropout == 0:
                how = f"label=N (0..{media.num_classes - 1})" if media.prefix == "label" else 'prompt="..."'
                raise ValueError(
                    f"this media prior is steered by a {media.prefix} (generator.prefix={media.prefix}): "
                    f"sample it with {how}; it was not trained to sample without one "
                    "(generator.condition_dropout=0)"
                )
            prefix = self._null_prefix(device)
        elif media.prefix == "label" and condition.dim() != 0:
            raise ValueError(
                f"this media prior is steered by a class label: sample it with label=N "
                f"(0..{media.num_classes - 1}), not prompt="
            )
        elif media.prefix == "caption" and condition.dim() != 1:
            raise ValueError(
                'this media prior is steered by a caption: sample it with prompt="...", not label='
            )
        else:
            prefix = self._prefix_rows(condition[None], 1, device)[0]  # (P,)
        return self._with_separator(prefix)

    def _null_prefix(self, device: torch.device) -> Tensor:
        """The prefix ``(P,)`` that stands for no condition: null tokens (what dropout trains)."""
        return torch.full((self.media.prefix_length,), self.media.null, dtype=torch.long, device=device)

    def _with_separator(self, prefix: Tensor) -> Tensor:
        return torch.cat([prefix, prefix.new_full((1,), self.media.separator)])  # (P + 1,)

    def _unconditional_prompt(self, guidance: float | None, device: torch.device) -> Tensor | None:
        """The null prompt guidance contrasts with (as long as the conditioned one), or None."""
        if guidance is None:
            return None
        media = self.media
        if media is None or media.prefix == "none":
            raise ValueError(
                f"guidance={guidance} needs a conditioned media prior (generator.prefix=label or caption)"
            )
        if media.condition_dropout == 0:
            log.warning(
                "guidance=%s, but this model was trained without condition dropout "
                "(generator.condition_dropout=0): its unconditional predictions are untrained",
                guidance,
            )
        return self._with_separator(self._null_prefix(device))

    def _prompt(self, condition: Tensor | None, device: torch.device) -> Tensor:
        """The prompt as token ids ``(P,)`` on ``device``, cropped to fit the context."""
        if self.media is not None:
            return self._media_prompt(condition, device)
        if condition is None or condition.numel() == 0:
            return torch.tensor([self.start_token], device=device)
        if condition.dim() == 0:
            raise ValueError(
                "this Transformer is conditioned by a prompt of text (prompt=\"...\"), not by a "
                "class label: sample it without label="
            )
        if condition.dim() != 1 or condition.is_floating_point():
            raise ValueError(
                f"condition must be a 1-D tensor of token ids, got shape "
                f"{tuple(condition.shape)} and dtype {condition.dtype}"
            )
        self._check_ids(condition, "condition")
        if len(condition) > self.block_size:
            keep = self.block_size - 1
            log.warning(
                "the prompt holds %d tokens, more than the context of %d "
                "(generator.block_size); only its last %d are used",
                len(condition),
                self.block_size,
                keep,
            )
            condition = condition[-keep:]
        return condition.to(device=device, dtype=torch.long)

    def _stop_ids(self, stop: Tensor | None) -> list[int] | None:
        if stop is None:
            return None
        if self.media is not None:
            raise ValueError(
                f"a media prior draws exactly {self.media.tokens} codes (generator.media_tokens) and "
                "takes no stop sequence; leave stop unset"
            )
        if stop.dim() != 1 or stop.numel() == 0 or stop.is_floating_point():
            raise ValueError(
                "stop must be a non-empty 1-D tensor of token ids, got shape "
                f"{tuple(stop.shape)} and dtype {stop.dtype}"
            )
        self._check_ids(stop, "stop")
        return stop.tolist()

    def _check_ids(self, ids: Tensor, what: str) -> None:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"{what} holds token id {bad}, outside this model's vocabulary of "
                f"{self.vocab_size}; was it encoded with the encoder the model was trained with?"
            )


@dataclass(frozen=True)
class MediaLayout:
    """The vocabulary of a token prior over media codes (see :class:`Transformer`)."""

    vocab: int  # K: the media codes are ids [0, K)
    tokens: int  # L: the codes in one example
    prefix: str  # none, label or caption
    num_classes: int | None
    caption_length: int | None
    condition_dropout: float
    embedding_dim: int = 0  # D: a caption is a sentence embedding of D values (0: bytes)
    caption_vectors: int | None = None  # k: the prefix vectors projected from it

    @property
    def prefix_ids(self) -> int:
        """How many ids the condition takes, from ``K`` on (an embedding takes none)."""
        caption_ids = 0 if self.embedding_dim else BYTE_IDS
        return {"none": 0, "label": self.num_classes, "caption": caption_ids}[self.prefix]

    @property
    def prefix_length(self) -> int:
        """How many positions of the sequence the condition takes (before the separator)."""
        caption = self.caption_vectors if self.embedding_dim else self.caption_length
        return {"none": 0, "label": 1, "caption": caption}[self.prefix]

    @property
    def separator(self) -> int:
        return self.vocab + self.prefix_ids

    @property
    def null(self) -> int:
        """The token that fills the prefix of an example without its condition."""
        return self.separator + 1

    @property
    def vocab_size(self) -> int:
        return self.null + 1

    def describe(self) -> str:
        caption = "" if self.embedding_dim else f" + {BYTE_IDS} caption ids"
        ids = {"none": "", "label": f" + {self.num_classes} labels", "caption": caption}
        return f"media_vocab {self.vocab}{ids[self.prefix]} + separator + null = {self.vocab_size} ids"


def _media_layout(
    vocab: int | None,
    tokens: int | None,
    prefix: str,
    num_classes: int | None,
    caption_length: int | None,
    condition_dropout: float,
    block_size: int | None,
    embedding_dim: int = 0,
    caption_vectors: int | None = None,
) -> MediaLayout | None:
    """The media layout these options give (None for text), or a ``ValueError`` naming what to set."""
    if vocab is None:
        given = [
            f"generator.{key}={value}"
            for key, value, default in (
                ("media_tokens", tokens, None),
                ("prefix", prefix, "none"),
                ("num_classes", num_classes, None),
                ("caption_length", caption_length, None),
                ("caption_embedding_dim", embedding_dim, 0),
                ("caption_vectors", caption_vectors, None),
                ("condition_dropout", condition_dropout, 0.0),
            )
            if value != default
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} only apply to a token prior over media codes: set "
                "generator.media_vocab to the stage-1 model's codebook size (or leave them unset)"
            )
        return None
    if prefix not in PREFIXES:
        raise ValueError(f"generator.prefix must be one of {', '.join(PREFIXES)}; got {prefix!r}")
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 0:
        raise ValueError(
            "generator.caption_embedding_dim must be 0 (a caption of bytes, condition_encoder=prefix_bytes) "
            "or the width of the condition encoder's sentence embedding (384 for all-MiniLM-L6-v2), "
            f"got {embedding_dim!r}"
        )
    if embedding_dim and prefix != "caption":
        raise ValueError(
            f"generator.caption_embedding_dim is for generator.prefix=caption, but the prefix is {prefix}"
        )
    # A caption's positions: its bytes (caption_length), or an embedding's vectors (caption_vectors).
    caption_key = "caption_vectors" if embedding_dim else "caption_length"
    needed = [("media_vocab", vocab), ("media_tokens", tokens)]
    needed += [("num_classes", num_classes)] if prefix == "label" else []
    caption_positions = caption_vectors if embedding_dim else caption_length
    needed += [(caption_key, caption_positions)] if prefix == "caption" else []
    for key, value in needed:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"generator.{key} must be a positive integer with generator.media_vocab"
                f"{f' and generator.prefix={prefix}' if key in ('num_classes', caption_key) else ''}"
                f"{' and generator.caption_embedding_dim' if key == 'caption_vectors' else ''}; "
                f"got {value!r}"
            )
    for key, value, wanted in (
        ("num_classes", num_classes, "label"),
        ("caption_length", caption_length, "caption"),
        ("caption_vectors", caption_vectors, "caption"),
    ):
        if value is not None and prefix != wanted:
            raise ValueError(f"generator.{key} is for generator.prefix={wanted}, but the prefix is {prefix}")
    if prefix == "caption" and embedding_dim and caption_length is not None:
        raise ValueError(
            f"generator.caption_length is the bytes of a caption, but generator.caption_embedding_dim="
            f"{embedding_dim} makes the caption a sentence embedding of generator.caption_vectors vectors: "
            "set generator.caption_length=null"
        )
    if prefix == "caption" and not embedding_dim and caption_vectors is not None:
        raise ValueError(
            "generator.caption_vectors is for a caption given as a sentence embedding: set "
            "generator.caption_embedding_dim to its width (384 for all-MiniLM-L6-v2), or caption_vectors=null"
        )
    if not 0 <= condition_dropout < 1 or (prefix == "none" and condition_dropout):
        raise ValueError(
            f"generator.condition_dropout={condition_dropout} must be in [0, 1), and 0 without a prefix"
        )
    layout = MediaLayout(vocab, tokens, prefix, num_classes, caption_length, float(condition_dropout),
                         embedding_dim, caption_vectors)
    # The last code is predicted from prefix + separator + the first L - 1 codes.
    if block_size is not None and layout.prefix_length + tokens > block_size:
        raise ValueError(
            f"generator.block_size ({block_size}) is too short for {layout.prefix_length} prefix tokens, "
            f"a separator and {tokens} codes: set it to at least {layout.prefix_length + tokens}"
        )
    return layout


@dataclass
class _Row:
    """One row of a :class:`SlotBatch`: its context, progress and sampling options."""

    context: list[int]  # what the next prediction conditions on
    fresh: Tensor  # (k,) the context to prefill into the row's cache slot (when pos is 0)
    pos: int  # positions of the row's slot that hold keys and values
    rng: torch.Generator | None
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    matcher: StopMatcher | None
    produced: int = 0
    vectors: Tensor | None = None  # (P, C): a caption embedding's prefix vectors, for the prefill


class SlotBatch:
    """Continuous batching: up to ``capacity`` rows decoded together, each in its own cache slot.

    Implements :class:`genloom.interfaces.SlotDecoder`. Each row keeps its own context,
    position and slot of a ``(capacity, H, block_size, D)`` cache per layer. A step first
    prefills the rows that have no cached positions yet (a new prompt, or a context rebuilt
    after overflow, by the rule in the module docstring; equally long ones together where
    that is exact), then decodes every other row's last token in one batched pass, then
    samples: greedy rows with one ``argmax``, every other row with its own options and
    generator. The per-row arithmetic is that of :meth:`Transformer.stream` with
    ``n=1`` (see the module docstring), so a row's tokens do not depend on its neighbours.
    """

    def __init__(self, model: Transformer, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"a slot batch needs a capacity of at least 1 row, got {capacity!r}")
        self.model = model
        self.capacity = capacity
        weight = model.tok_emb.weight
        n_head = model.blocks[0].attn.n_head if len(model.blocks) else 1
        shape = (capacity, n_head, model.block_size, weight.shape[1] // n_head)
        self.keys = [weight.new_zeros(shape) for _ in model.blocks]
        self.values = [weight.new_zeros(shape) for _ in model.blocks]
        self.rows: dict[int, _Row] = {}
        self._exact: dict[tuple[int, int], bool] = {}  # (rows, length) -> batched prefill is exact

    def add(
        self,
        *,
        condition: Tensor | None = None,
        rng: torch.Generator | None = None,
        max_new_tokens: int = DEFAULT_NEW_TOKENS,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Tensor | None = None,
        use_cache: bool = True,
        guidance: float | None = None,
        compile: bool = False,
    ) -> int:
        """Start a row with the options of :meth:`Transformer.stream`; return its slot.

        ``use_cache`` and ``compile`` are accepted for symmetry with ``stream`` and make no
        difference: a slot batch always caches and decodes eagerly (each row's arithmetic
        must be that of a lone eager row), and the tokens are the same either way. ``guidance`` is
        not supported here (a guided row would need a second, unconditional slot).
        """
        if guidance is not None:
            raise ValueError(
                f"guidance={guidance} is not supported by continuous batching (genloom serve); "
                "sample with genloom sample instead"
            )
        device = self.model.tok_emb.weight.device
        max_new_tokens = self.model._new_tokens(max_new_tokens)
        check_sampling_options(1, max_new_tokens, temperature, top_k, top_p)
        check_rng(rng, device)
        prompt = self.model._prompt(condition, device)
        vectors = self.model._prompt_vectors(condition, device)
        stop_ids = self.model._stop_ids(stop)
        slot = next((s for s in range(self.capacity) if s not in self.rows), None)
        if slot is None:
            raise RuntimeError(f"all {self.capacity} slots are in use; wait for a row to finish")
        self.rows[slot] = _Row(
            context=prompt.tolist(), fresh=prompt, pos=0, rng=rng, max_new_tokens=max_new_tokens,
            temperature=temperature, top_k=top_k, top_p=top_p,
            matcher=None if stop_ids is None else StopMatcher(stop_ids), vectors=vectors,
        )
        return slot

    def free(self, slot: int) -> None:
        """Drop an unfinished row; its slot takes a new row from the next :meth:`add`."""
        self.rows.pop(slot, None)

    @torch.inference_mode()
    def step(self) -> dict[int, SlotOutput]:
        """Advance every row by one token; return each row's output, keyed by slot."""
        model = self.model
        was_training = model.training
        if was_training:  # walking the modules costs a step's worth of time on small models
            model.eval()
        try:
            out: dict[int, SlotOutput] = {}
            for slot in [s for s, row in self.rows.items() if row.max_new_tokens == 0]:
                del self.rows[slot]
                out[slot] = SlotOutput(torch.empty(0, dtype=torch.long), finish="length")
            decoding = [slot for slot, row in self.rows.items() if row.pos > 0]
            logits = self._prefill([slot for slot, row in self.rows.items() if row.pos == 0])
            if decoding:
                device = model.tok_emb.weight.device
                idx = torch.tensor([[self.rows[s].context[-1]] for s in decoding], device=device)  # (B, 1)
                logits.update(zip(decoding, self._forward(decoding, idx).unbind(0), strict=True))
            out.update(self._advance(logits))
            return out
        finally:
            if was_training:
                model.train()

    def _prefill(self, slots: list[int]) -> dict[int, Tensor]:
        """Each new row's next-token logits ``(V,)`` after caching its whole context.

        Rows whose contexts are equally long are prefilled in one pass where that pass is
        bitwise the same as prefilling each alone (see :meth:`_batch_is_exact`); otherwise,
        and for a row with no equally long neighbour, each row is prefilled alone.
        """
        by_length: dict[int, list[int]] = {}
        for slot in slots:
            by_length.setdefault(len(self.rows[slot].fresh), []).append(slot)
        logits: dict[int, Tensor] = {}
        for length, group in by_length.items():
            if len(group) > 1 and self._batch_is_exact(len(group), length):
                idx = torch.stack([self.rows[s].fresh for s in group])  # (B, T)
                logits.update(zip(group, self._forward(group, idx).unbind(0), strict=True))
            else:
                logits.update((slot, self._prefill_alone(slot)) for slot in group)
        return logits

    def _prefill_alone(self, slot: int) -> Tensor:
        """The row's next-token logits ``(V,)`` after caching its context, as ``stream`` does."""
        row = self.rows[slot]
        cache = KVCache(n_layer=len(self.keys), block_size=self.model.block_size)
        cache.keys = [k[slot : slot + 1] for k in self.keys]  # views: writes land in the slot
        cache.values = [v[slot : slot + 1] for v in self.values]
        prefix = None if row.vectors is None else row.vectors[None]
        logits = self.model(row.fresh[None], cache, prefix)[0, -1]  # (V,)
        row.pos = cache.pos
        return logits

    def _batch_is_exact(self, rows: int, length: int) -> bool:
        """Whether prefilling ``rows`` contexts of ``length`` tokens in one pass is exact here.

        A batched product may use another kernel than a lone one, for some shapes only (on
        x86 CPUs, MKL's ``bmm`` of several ``(T, C)`` rows rounds differently from a lone
        ``(T, C)`` product for T from 5 to 11). So the first time a shape comes up, this
        compares, on random inputs, every linear layer's and the attention's batched result
        with the lone ones, and remembers the answer.
        """
        key = (rows, length)
        if key not in self._exact:
            self._exact[key] = self._compare_batched_with_alone(rows, length)
        return self._exact[key]

    def _compare_batched_with_alone(self, rows: int, length: int) -> bool:
        model = self.model
        weight = model.tok_emb.weight
        generator = torch.Generator(device=weight.device).manual_seed(0)

        def noise(*shape: int) -> Tensor:
            return torch.randn(shape, generator=generator, device=weight.device, dtype=weight.dtype)

        layers = [(weight, None)]
        if len(model.blocks):
            block = model.blocks[0]  # every block has the same shapes
            layers += [(m.weight, m.bias) for m in (block.attn.qkv, block.attn.out_proj, block.mlp.fc,
                                                    block.mlp.out_proj)]
        for w, b in layers:
            x = noise(rows, length, w.shape[1])
            alone = torch.cat([F.linear(x[i : i + 1], w, b) for i in range(rows)])
            if not torch.equal(_rows_linear(x, w, b), alone):
                return False
        if len(model.blocks):
            heads, width = self.keys[0].shape[1], self.keys[0].shape[3]
            q, k, v = (noise(rows, heads, length, width) for _ in range(3))
            mask = torch.ones(length, length, dtype=torch.bool, device=weight.device).tril()
            alone = torch.cat([F.scaled_dot_product_attention(q[i : i + 1], k[i : i + 1], v[i : i + 1],
                                                              attn_mask=mask) for i in range(rows)])
            if not torch.equal(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), alone):
                return False
        return True

    def _forward(self, slots: list[int], idx: Tensor) -> Tensor:
        """Next-token logits ``(B, V)`` after each row's ``T`` fresh tokens ``idx`` ``(B, T)``.

        Each row's tokens continue its own cached positions (``T`` is 1 when decoding; a
        batched prefill starts every row at 0). The arithmetic of each row is that of
        :meth:`Transformer.forward` on that row alone: linear layers as one product per
        row; when decoding, :func:`decode_attention` per group of rows with the same span;
        a batched prefill's attention with ``forward``'s mask.
        """
        model = self.model
        rows = [self.rows[s] for s in slots]
        device = idx.device
        T = idx.shape[1]
        starts = torch.tensor([row.pos for row in rows], device=device)  # (B,)
        positions = starts[:, None] + torch.arange(T, device=device)  # (B, T)
        # A batched prefill starts every row at 0: caption embeddings' vectors go in then.
        prefilling = T > 1 and rows[0].vectors is not None
        prefix = torch.stack([row.vectors for row in rows]) if prefilling else None  # (B, P, C)
        x = model._embed(idx, positions, prefix)  # (B, T, C)
        B, _, C = x.shape
        slot_index = torch.tensor(slots, device=device)
        # Per group: the rows' indices in the batch, their slots of the cache (a slice when
        # they are neighbours, so attention reads the cache in place instead of copying it),
        # how many positions attention reads and its mask. Decoding rows group by their
        # attention span; a batched prefill's rows all start at 0, as a lone prefill does.
        by_span: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            end = attention_span(row.pos + 1, model.block_size) if T == 1 else row.pos + T
            by_span.setdefault(end, []).append(i)
        n_head = model.blocks[0].attn.n_head if len(model.blocks) else 1
        groups = []
        for end, members in by_span.items():
            at = torch.tensor(members, device=device)
            kept_slots = [slots[i] for i in members]
            contiguous = kept_slots == list(range(kept_slots[0], kept_slots[0] + len(kept_slots)))
            kept = slice(kept_slots[0], kept_slots[-1] + 1) if contiguous else slot_index[at]
            if T == 1:
                mask = span_bias(starts[at] + 1, end, n_head, x.dtype)
            else:
                mask = torch.ones(T, end, dtype=torch.bool, device=device).tril(end - T)
            groups.append((at, kept, end, mask))
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            heads = (B, T, attn.n_head, C // attn.n_head)
            qkv = _rows_linear(block.ln_1(x), attn.qkv.weight, attn.qkv.bias)
            q, k, v = (t.view(heads).transpose(1, 2) for t in qkv.split(C, dim=2))  # (B, H, T, D)
            keys, values = self.keys[layer], self.values[layer]
            keys[slot_index[:, None], :, positions] = k.transpose(1, 2)  # each row at its own positions
            values[slot_index[:, None], :, positions] = v.transpose(1, 2)
            y = torch.empty_like(q)  # (B, H, T, D)
            for at, kept, end, mask in groups:
                k_seen, v_seen = keys[kept, :, :end], values[kept, :, :end]
                if T == 1:
                    y[at] = decode_attention(q[at], k_seen, v_seen, mask)
                else:
                    y[at] = F.scaled_dot_product_attention(q[at], k_seen, v_seen, attn_mask=mask)
            y = y.transpose(1, 2).reshape(B, T, C)
            x = x + _rows_linear(y, attn.out_proj.weight, attn.out_proj.bias)
            mlp = block.mlp
            hidden = mlp.gelu(_rows_linear(block.ln_2(x), mlp.fc.weight, mlp.fc.bias))
            x = x + _rows_linear(hidden, mlp.out_proj.weight, mlp.out_proj.bias)
        for row in rows:
            row.pos += T
        logits = _rows_linear(model.ln_f(x), model.tok_emb.weight, None)  # (B, T, V)
        return logits[:, -1]

    def _advance(self, logits: dict[int, Tensor]) -> dict[int, SlotOutput]:
        """Sample each row's next token from its ``logits`` ``(V,)``, as ``stream`` does for one row.

        Greedy rows take one ``argmax`` together (exact: it only compares); every other row
        samples alone with its own options and generator. One copy to the host for all.
        """
        greedy = [s for s in logits if self.rows[s].temperature == 0]
        sampling = [s for s in logits if self.rows[s].temperature != 0]
        chosen = []
        if greedy:
            rows = torch.stack([logits[s] for s in greedy])
            chosen.append(self.model._sampling_logits(rows).argmax(dim=-1))
        for slot in sampling:
            row = self.rows[slot]
            chosen.append(sample_token(self.model._sampling_logits(logits[slot][None]), row.temperature,
                                       row.top_k, row.top_p, row.rng))
        tokens = torch.cat(chosen).tolist() if chosen else []
        return {slot: self._push(slot, token) for slot, token in zip(greedy + sampling, tokens, strict=True)}

    def _push(self, slot: int, token: int) -> SlotOutput:
        """Append the row's new ``token``; what the row outputs and whether it finished."""
        row = self.rows[slot]
        row.produced += 1
        finish = None
        if row.matcher is None:
            emitted = [token]
        else:
            emitted = row.matcher.push(token)
            finish = "stop" if row.matcher.stopped else None
        row.context.append(token)
        if len(row.context) > self.model.block_size:
            del row.context[: len(row.context) - (self.model.block_size - 1)]
            row.fresh = torch.tensor(row.context, device=self.model.tok_emb.weight.device)
            row.pos = 0
        if finish is None and row.produced == row.max_new_tokens:
            finish = "length"
            if row.matcher is not None:
                emitted += row.matcher.flush()
        if finish is not None:
            del self.rows[slot]
        return SlotOutput(torch.tensor(emitted, dtype=torch.long), finish=finish)


def _rows_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` of ``x`` ``(B, T, C_in)`` as B separate ``(T, C_in)`` products ``(B, T, C_out)``.

    For ``T = 1`` each row is computed exactly as a lone row is, so its result cannot depend
    on B; for longer rows :meth:`SlotBatch._batch_is_exact` checks that it is so.
    """
    B = x.shape[0]
    weight_t = weight.t().expand(B, *weight.t().shape)  # (B, C_in, C_out), no copy
    if bias is None:
        return torch.bmm(x, weight_t)
    return torch.baddbmm(bias.expand(B, 1, -1), x, weight_t)


def attention_span(length: int, block_size: int) -> int:
    """How many cached positions :func:`decode_attention` reads for a row of ``length`` positions."""
    return min(block_size, -(-length // ATTENTION_SPAN) * ATTENTION_SPAN)


def span_bias(lengths: Tensor, span: int, heads: int, dtype: torch.dtype) -> Tensor:
    """``(B * heads, 1, span)``: 0 at each row's first ``lengths`` positions (those it sees), else -inf."""
    hidden = torch.arange(span, device=lengths.device) >= lengths[:, None]  # (B, S)
    bias = torch.zeros(hidden.shape, dtype=dtype, device=lengths.device).masked_fill_(hidden, float("-inf"))
    return bias.repeat_interleave(heads, dim=0)[:, None]


def decode_attention(q: Tensor, keys: Tensor, values: Tensor, bias: Tensor) -> Tensor:
    """One new token's attention ``(B, H, 1, D)`` over the positions of its cache span that it sees.

    ``q`` is ``(B, H, 1, D)``, ``keys`` and ``values`` ``(B, H, S, D)`` (the first ``S``
    positions of each row's cache; those past a row's length hold zeros or stale keys, which
    ``bias`` from :func:`span_bias` removes exactly: their weights are 0). Each row's result
    comes from its own matrix products and a softmax along its own positions, so it is
    bitwise the same whatever rows share the batch and however many threads run it.
    """
    B, H, _, D = q.shape
    S = keys.shape[2]
    scores = torch.baddbmm(bias, q.reshape(B * H, 1, D), keys.reshape(B * H, S, D).transpose(1, 2),
                           alpha=D**-0.5)  # (B * H, 1, S)
    return torch.bmm(scores.softmax(dim=-1), values.reshape(B * H, S, D)).view(B, H, 1, D)


class KVCache:
    """Keys and values of the positions seen so far, per layer, for incremental decoding.

    Each layer's keys and values are allocated once at ``(B, H, block_size, head_dim)``
    when first written (taking batch size, dtype and device from them), so decoding
    writes into place instead of growing tensors. One cache serves one batch.
    """

    def __init__(self, *, n_layer: int, block_size: int) -> None:
        self.block_size = block_size
        self.keys: list[Tensor | None] = [None] * n_layer
        self.values: list[Tensor | None] = [None] * n_layer
        self.pos = 0  # positions that hold keys and values; the next token goes here
        self._bias: tuple[tuple, Tensor] | None = None  # the next position's decode_bias, by its key

    def decode_bias(self, batch: int, heads: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """:func:`span_bias` for one new token at ``pos`` in each of ``batch`` rows (built once per step)."""
        key = (self.pos, batch, heads, dtype, device)
        if self._bias is None or self._bias[0] != key:
            length = self.pos + 1
            lengths = torch.full((batch,), length, device=device)
            self._bias = key, span_bias(lengths, attention_span(length, self.block_size), heads, dtype)
        return self._bias[1]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``layer``'s keys and values ``(B, H, T, D)`` for the next ``T`` positions.

        Returns the keys and values of every position so far, ``(B, H, pos + T, D)``.
        :meth:`Transformer.forward` advances ``pos`` once all layers have written.
        """
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or values is None:
            B, H, _, D = k.shape
            # Zeros, not empty memory: decode attention reads (and masks) a span past ``pos``.
            keys = self.keys[layer] = k.new_zeros(B, H, self.block_size, D)
            values = self.values[layer] = v.new_zeros(B, H, self.block_size, D)
        end = self.pos + k.shape[2]
        keys[:, :, self.pos : end] = k
        values[:, :, self.pos : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def reset(self) -> None:
        """Forget every position (the memory is kept for reuse)."""
        self.pos = 0


class Block(nn.Module):
    """Pre-norm Transformer block: attention then MLP, each added to the residual stream."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, activation: str) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias, activation)

    def forward(self, x: Tensor, kv_cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # one matmul for q, k and v
        self.out_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, kv_cache: KVCache | None, layer: int) -> Tensor:
        B, T, C = x.shape
        # Split and transpose are views, so heads cost no copy; splitting along the last
        # dim (rather than permuting a 5-D view) also keeps the backward pass copy-free.
        heads = (B, T, self.n_head, C // self.n_head)
        q, k, v = (t.view(heads).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        if kv_cache is None:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif T == 1:  # one new token sees every cached position
            bias = kv_cache.decode_bias(B, self.n_head, q.dtype, q.device)
            span = bias.shape[-1]
            kv_cache.update(layer, k, v)
            keys, values = kv_cache.keys[layer][:, :, :span], kv_cache.values[layer][:, :, :span]
            y = decode_attention(q, keys, values, bias)
        else:
            start = kv_cache.pos
            k, v = kv_cache.update(layer, k, v)  # (B, H, start + T, D)
            # Several new tokens see the cache and the new tokens up to their own (is_causal
            # would align the mask wrongly).
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.out_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool, activation: str) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU(approximate=GELUS[activation])
        self.out_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.out_proj(self.gelu(self.fc(x))))  # (B, T, C)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
