"""A local Hugging Face causal language model as a genloom generator (``hf_causal_lm``).

Any ``transformers`` causal LM saved in a directory (``config.json`` + safetensors: GPT-2,
Llama, Mistral, Qwen...) is trained by the shared Trainer on the text datasets' ``tokens``
windows and sampled with the model's own KV cache (``transformers``' ``DynamicCache``),
with the text transformer's options and their meaning (``genloom_blocks.sampling``).

The checkpoint holds the whole state dict (the shared Trainer saves it as safetensors; a
tied LM head is stored once) plus the buffer ``base_sha256``, the fingerprint of the base
directory's weights. The config holds the directory's path, so a checkpoint rebuilds the
architecture from it and then loads its own weights over it; loading warns when the base
directory no longer holds the weights it was trained from.

LoRA (``generator.lora.r=8``): ``peft`` adds low-rank adapters to the target layers and
freezes everything else, so the Trainer (which optimises the parameters that require
gradients) trains the adapters only. The model is then a
:class:`genloom.interfaces.PartialCheckpoint`: its checkpoints hold the adapters and
``base_sha256`` only, megabytes rather than the model, and every load rebuilds the base from
the directory and refuses one whose weights changed since (the adapters were trained against
those weights and no others). ``genloom export format=hf`` writes a peft adapter directory,
or with ``merge=true`` the merged model.

Continuous batching (``genloom serve``): :meth:`HFCausalLM.open_slots` gives an
:class:`HFSlotBatch`, whose rows join and leave at every step, each with its own prompt,
options, generator and ``DynamicCache``. Each step runs one forward pass per row rather than
one over all rows: rows of different lengths in one HF forward pass need padding and
attention masks, whose kernels round differently from a lone row, and the slot contract is
that a row's tokens equal :meth:`HFCausalLM.stream`'s for ``n=1`` whatever shares the batch.
So requests never wait for one another to finish, but the rows' arithmetic is not fused.

Context overflow: the model attends to at most ``context`` tokens (its config's
``max_position_embeddings`` or ``n_positions``). When the context would grow past that, it
is cut to its last ``context - 1`` tokens and the cache is rebuilt from them, as the text
transformer does.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from genloom.checkpoint import CheckpointError
from genloom.interfaces import SampleSpec, SlotOutput
from genloom_blocks.sampling import StopMatcher, check_rng, check_sampling_options, pad_rows, sample_token
from torch import Tensor, nn

from genloom_hf.directory import model_directory, read_json, weights_sha256

log = logging.getLogger(__name__)

DEFAULT_NEW_TOKENS = 256  # max_new_tokens unless set, as the text transformer's
SPECIAL_TOKENS = ("bos", "eos", "pad")
# What an export copies beside the weights: the tokenizer and its chat templates.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "additional_chat_templates",
)
# Layer types peft's LoRA adapts; target_modules may name only layers of these types.
LORA_LAYERS = ("Linear", "Conv1D", "Embedding", "Conv1d", "Conv2d")


@dataclass(frozen=True)
class LoraSettings:
    """``generator.lora``: low-rank adapters through ``peft``; ``r: null`` trains the whole model.

    Args:
        r: the adapters' rank; null for full fine-tuning.
        alpha: the adapters' scale is ``alpha / r``.
        target_modules: names of the layers to adapt (a name matches a layer whose dotted
            path ends with it: ``c_attn``, ``q_proj``); null takes peft's default for the
            architecture (GPT-2: ``c_attn``; Llama: ``q_proj``, ``v_proj``).
        dropout: dropout on the adapters' input while training.
    """

    r: int | None = None
    alpha: float = 16.0
    target_modules: tuple[str, ...] | None = None
    dropout: float = 0.0

    @classmethod
    def parse(cls, value: Mapping[str, Any] | None) -> LoraSettings:
        """The settings from the ``generator.lora`` mapping, every value checked."""
        value = dict(value or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"generator.lora has no key {', '.join(unknown)}; its keys: {', '.join(known)}")
        r, alpha, dropout = value.get("r"), value.get("alpha", cls.alpha), value.get("dropout", cls.dropout)
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ValueError(f"generator.lora.r={r!r} must be a whole number of at least 1 (null: no LoRA)")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
            raise ValueError(f"generator.lora.alpha={alpha!r} must be a number above 0")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"generator.lora.dropout={dropout!r} must be a number from 0 up to (not) 1")
        targets = value.get("target_modules")
        if isinstance(targets, str):
            targets = [targets]
        listed = isinstance(targets, list | tuple) and all(isinstance(t, str) and t for t in targets)
        if targets is not None and (not listed or not targets):
            raise ValueError(
                f"generator.lora.target_modules={targets!r} must be a list of layer names "
                "(generator.lora.target_modules=[c_attn,c_proj]) or null for peft's default"
            )
        return cls(r, float(alpha), None if targets is None else tuple(targets), float(dropout))


class HFCausalLM(nn.Module):
    """A local HF causal LM; its keyword arguments are its whole config.

    Args:
        path: a local model directory (``config.json`` and ``*.safetensors``); never a hub id.
        block_size: the training window in tokens (the text datasets cut windows of this
            length); at most the model's context.
        start_token: where generation starts without a prompt; null takes the model's
            ``bos_token_id`` (GPT-2's ``<|endoftext|>``).
        sequence_key: the batch key :meth:`loss` reads token ids from.
        lora: ``r``, ``alpha``, ``target_modules``, ``dropout`` (:class:`LoraSettings`);
            ``r: null`` (the default) fine-tunes every weight.

    When the directory also holds a ``tokenizer.json``, it must agree with the model: no
    token id past the model's vocabulary, and the same ids for the special tokens
    (``bos``, ``eos``, ``pad``) that both name; sampling then draws only ids the tokenizer
    has (an embedding padded past the tokenizer's vocabulary never yields an undecodable id).
    """

    def __init__(
        self,
        *,
        path: str,
        block_size: int = 128,
        start_token: int | None = None,
        sequence_key: str = "tokens",
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.lora = LoraSettings.parse(lora)
        from transformers import AutoConfig, AutoModelForCausalLM
        from transformers.utils import logging as transformers_logging

        # transformers draws a bar for every load; genloom's output has one progress bar, its own.
        transformers_logging.disable_progress_bar()
        directory = model_directory(path, key="generator.path")
        config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(
                directory,
                config=config,
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=False,
                dtype=torch.float32,
            )
        except ValueError as err:  # an architecture transformers has no causal LM class for
            raise ValueError(
                f"generator.path={path!r}: config.json's model_type {config.model_type!r} is not a causal "
                f"language model this transformers version loads ({err})"
            ) from None
        self.path = str(path)
        self.sequence_key = sequence_key
        self.vocab_size = int(config.vocab_size)
        self.context = _context_of(config)
        if not 2 <= block_size <= self.context:
            raise ValueError(
                f"generator.block_size={block_size} must be from 2 to the model's context of {self.context} "
                "tokens (config.json)"
            )
        self.block_size = block_size
        self.eos_ids = _eos_ids(self.model)
        self.sampled_vocab = _check_tokenizer_agrees(directory, self.model, self.vocab_size, path)
        self.start_token = config.bos_token_id if start_token is None else start_token
        if self.start_token is not None and not 0 <= self.start_token < self.vocab_size:
            raise ValueError(
                f"generator.start_token ({self.start_token}) must be a token id below the model's "
                f"vocabulary of {self.vocab_size}"
            )
        self.sample_spec = SampleSpec(shape=(None,), dtype=torch.long)
        # Which base weights this model started from: saved with the state dict, checked on load.
        sha = torch.frombuffer(bytearray(weights_sha256(directory)), dtype=torch.uint8)
        self.register_buffer("base_sha256", sha.clone())
        self._adapter_keys: frozenset[str] | None = None
        if self.lora.r is not None:
            self.model = _add_adapters(self.model, self.lora, path)
            trained = [name for name, p in self.named_parameters() if p.requires_grad]
            self._adapter_keys = frozenset([*trained, "base_sha256"])
        self.register_load_state_dict_pre_hook(_check_base)
        self._batch_checked = False

    def checkpoint_keys(self) -> frozenset[str] | None:
        """With LoRA, the adapters and ``base_sha256``: the base weights come from ``path``.

        (:class:`genloom.interfaces.PartialCheckpoint`.) Without LoRA, the whole state dict.
        """
        return self._adapter_keys

    def loss(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Next-token cross entropy on ``batch["tokens"]`` ``(B, T + 1)``.

        Returns ``loss`` in nats per token and ``bits_per_token``; when the batch says how many
        bytes each example's targets cover (``batch["bytes"]`` ``(B,)``, which the text datasets
        add for ``hf_tokenizer``), also ``bits_per_byte``, the batch's total bits over its total
        bytes, weighted by those bytes in evaluation (``bits_per_byte/weight``), as the text
        transformer reports it: runs with different tokenizers compare.
        """
        tokens = batch[self.sequence_key]  # (B, T + 1)
        if tokens.device.type == "cpu" or not self._batch_checked:
            # An id past the embedding is a clear error here, a device-side assert on a GPU; there
            # the check costs a host sync, so only the first batch pays it (one encoder makes all).
            self._check_ids(tokens, f"batch[{self.sequence_key!r}]")
            self._batch_checked = True
        logits = self.model(input_ids=tokens[:, :-1], use_cache=False).logits  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        bits = loss.detach() / math.log(2)  # per token
        if "bytes" not in batch:
            return {"loss": loss, "bits_per_token": bits}
        covered = batch["bytes"].sum().clamp(min=1).float()
        return {
            "loss": loss,
            "bits_per_token": bits,
            "bits_per_byte": bits * tokens[:, 1:].numel() / covered,
            "bits_per_byte/weight": covered,
        }

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
        stop_at_eos: bool = True,
        use_cache: bool = True,
    ) -> Iterator[Tensor]:
        """Sample ``n`` continuations of one prompt together, yielding ``(n, k)`` chunks of new tokens.

        Args:
            n: how many rows to sample.
            condition: a prompt of token ids ``(P,)`` shared by all rows; without one
                generation starts from ``start_token``. A prompt longer than the context
                keeps its last ``context - 1`` tokens, with a warning.
            rng: the random generator for sampling, on the model's device.
            max_new_tokens: the most new tokens per row.
            temperature: divides the logits; 0 picks the most likely token (greedy).
            top_k: sample only among the ``top_k`` most likely tokens.
            top_p: sample only among the most likely tokens whose probabilities add up to
                ``top_p`` (nucleus sampling).
            stop: a token sequence ``(S,)``; a row ends when it produces it, and the stop
                sequence itself is not output. A leading ``bos`` token (which a Llama
                tokenizer adds to the encoded stop text) is dropped.
            stop_at_eos: end a row at the model's end-of-sequence token (not output), as
                ``transformers``' ``generate`` does.
            use_cache: reuse past keys and values; ``False`` recomputes the whole context
                for every token (the slow reference path, same tokens).

        As with the text transformer: a stopped row is padded with -1, tokens that may begin
        the stop sequence are held back until that is decided, chunks are on the CPU and
        their concatenation without the -1 is what :meth:`generate` returns.
        """
        device = self.base_sha256.device
        check_sampling_options(n, max_new_tokens, temperature, top_k, top_p)
        check_rng(rng, device)
        prompt = self._prompt(condition, device)
        stop_ids = self._stop_ids(stop)
        eos = self.eos_ids if stop_at_eos else frozenset()
        return self._stream(
            n, prompt, rng, max_new_tokens, temperature, top_k, top_p, stop_ids, eos, use_cache
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
        stop_at_eos: bool = True,
        use_cache: bool = True,
    ) -> list[Tensor]:
        """Sample ``n`` continuations; one 1-D tensor of new tokens per row (on the CPU).

        The options are those of :meth:`stream`, which this drains.
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
                stop_at_eos=stop_at_eos,
                use_cache=use_cache,
            )
        )
        tokens = torch.cat(chunks, dim=1) if chunks else torch.empty(n, 0, dtype=torch.long)
        return [row[row >= 0] for row in tokens]

    def open_slots(self, capacity: int) -> HFSlotBatch:
        """A running batch of up to ``capacity`` independent rows (see :class:`HFSlotBatch`)."""
        return HFSlotBatch(self, capacity)

    # genloom.interfaces.Exporting: `genloom export format=hf`.
    export_formats = ("hf",)

    def export(
        self, directory: Path, *, format: str, encoder: object | None = None, **options: Any
    ) -> list[Path]:
        """Write the fine-tuned model as a Hugging Face directory ``transformers`` loads.

        ``save_pretrained`` writes ``config.json``, ``generation_config.json`` and the weights as
        safetensors; the tokenizer's files (``tokenizer.json``, its config and chat templates)
        are copied from the encoder's directory, else from the base model's. A LoRA model
        writes a peft adapter directory (``adapter_config.json``, ``adapter_model.safetensors``,
        naming the base directory), or with ``merge=true`` the base with the adapters merged
        into its weights: a whole model, loaded by ``AutoModelForCausalLM.from_pretrained``.
        """
        if format not in self.export_formats:
            raise ValueError(f"hf_causal_lm exports format=hf only, not format={format!r}")
        merge = options.pop("merge", False)
        if options:
            raise ValueError(
                f"format=hf of hf_causal_lm takes only merge=true|false; got {', '.join(sorted(options))}"
            )
        if not isinstance(merge, bool):
            raise ValueError(f"merge={merge!r} must be true or false")
        if merge and self.lora.r is None:
            raise ValueError(
                "merge=true is for a LoRA generator (generator.lora.r set); this model's weights are "
                "whole already: export it without merge"
            )
        directory = Path(directory)
        if merge:
            # On a copy: merging folds the adapters into the base weights and removes them.
            merged = copy.deepcopy(self.model)
            _untie_adapted_head(merged)
            merged.merge_and_unload().save_pretrained(directory)
        else:
            self.model.save_pretrained(directory)
        source = Path(getattr(encoder, "path", None) or self.path)
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, directory / name)
            elif (source / name).is_dir():
                shutil.copytree(source / name, directory / name)
        return sorted(path for path in directory.rglob("*") if path.is_file())

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
        eos: frozenset[int],
        use_cache: bool,
    ) -> Iterator[Tensor]:
        # torch's decorator enters inference mode only while this generator runs.
        was_training = self.training
        self.eval()
        try:
            context = _Context(self, prompt.expand(n, -1), use_cache)
            matchers = None if stop is None else [StopMatcher(stop) for _ in range(n)]
            ended = [False] * n
            for _ in range(max_new_tokens):
                token = sample_token(context.next_logits(), temperature, top_k, top_p, rng)  # (n,)
                pieces = [self._push(i, t, matchers, ended, eos) for i, t in enumerate(token.tolist())]
                if any(pieces):
                    yield pad_rows(pieces)
                if all(ended):
                    return
                context.append(token)
            if matchers is not None:
                # Held tokens that never completed the stop sequence are output after all.
                chunk = pad_rows([[] if done else m.flush() for m, done in zip(matchers, ended, strict=True)])
                if chunk.shape[1]:
                    yield chunk
        finally:
            self.train(was_training)

    @staticmethod
    def _push(
        row: int, token: int, matchers: list[StopMatcher] | None, ended: list[bool], eos: frozenset[int]
    ) -> list[int]:
        """Row ``row``'s new ``token``: the tokens it now outputs; marks the row ended at a stop."""
        if ended[row]:
            return []
        if token in eos:
            ended[row] = True
            return [] if matchers is None else matchers[row].flush()
        if matchers is None:
            return [token]
        emitted = matchers[row].push(token)
        ended[row] = matchers[row].stopped
        return emitted

    def _prompt(self, condition: Tensor | None, device: torch.device) -> Tensor:
        """The prompt as token ids ``(P,)`` on ``device``, cropped to fit the context."""
        if condition is None or condition.numel() == 0:
            if self.start_token is None:
                raise ValueError(
                    f"the model in {self.path} has no bos_token_id (config.json) to start from: give a "
                    'prompt (prompt="...") or set generator.start_token'
                )
            return torch.tensor([self.start_token], device=device)
        if condition.dim() != 1 or condition.is_floating_point():
            raise ValueError(
                'this language model is conditioned by a prompt of text (prompt="..."), a 1-D tensor '
                f"of token ids; got shape {tuple(condition.shape)} and dtype {condition.dtype}"
            )
        self._check_ids(condition, "the prompt")
        if len(condition) >= self.context:
            keep = self.context - 1
            log.warning(
                "the prompt holds %d tokens, more than the context of %d; only its last %d are used",
                len(condition),
                self.context,
                keep,
            )
            condition = condition[-keep:]
        return condition.to(device=device, dtype=torch.long)

    def _stop_ids(self, stop: Tensor | None) -> list[int] | None:
        if stop is None:
            return None
        if stop.dim() != 1 or stop.numel() == 0 or stop.is_floating_point():
            raise ValueError(
                "stop must be a non-empty 1-D tensor of token ids, got shape "
                f"{tuple(stop.shape)} and dtype {stop.dtype}"
            )
        self._check_ids(stop, "stop")
        ids = stop.tolist()
        bos = self.model.config.bos_token_id
        if len(ids) > 1 and ids[0] == bos and bos not in self.eos_ids:
            # A Llama tokenizer puts <s> before every text it encodes, the stop text's too;
            # generated text never holds it, so the stop sequence is what follows it.
            ids = ids[1:]
        return ids

    def _check_ids(self, ids: Tensor, what: str) -> None:
        if ids.numel() == 0:
            return
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(
                f"{what} holds token id {low if low < 0 else high}, outside the vocabulary of the model in "
                f"{self.path} ({self.vocab_size} ids); encode text with that model's own tokenizer "
                f"(encoder=hf_tokenizer encoder.path={self.path})"
            )


class _Context:
    """What ``n`` rows condition on ``(n, T)``, and the model's KV cache of it.

    :meth:`next_logits` runs the tokens not cached yet; :meth:`append` adds each row's new
    token, cutting the context to its last ``context - 1`` tokens (and starting a new
    cache) when it would outgrow the model's context.
    """

    def __init__(self, model: HFCausalLM, tokens: Tensor, use_cache: bool) -> None:
        self.model = model
        self.tokens = tokens  # (n, T)
        self.use_cache = use_cache
        self.cache = self._new_cache()
        self.fresh = tokens  # (n, k): the part of the context not yet in the cache

    def _new_cache(self) -> object | None:
        from transformers import DynamicCache

        return DynamicCache() if self.use_cache else None

    def next_logits(self) -> Tensor:
        """Each row's next-token logits ``(n, V)``, over the ids the model may sample."""
        # logits_to_keep=1: only the last position's logits, not (n, T, V) for a whole prompt.
        if self.cache is None:
            logits = self.model.model(input_ids=self.tokens, use_cache=False, logits_to_keep=1).logits
        else:
            logits = self.model.model(
                input_ids=self.fresh, cache=self.cache, use_cache=True, logits_to_keep=1
            ).logits
        return logits[:, -1, : self.model.sampled_vocab].float()

    def append(self, token: Tensor) -> None:
        """Add each row's new ``token`` ``(n,)``."""
        self.fresh = token[:, None]
        self.tokens = torch.cat([self.tokens, self.fresh], dim=1)
        limit = self.model.context
        if self.tokens.shape[1] > limit:
            self.tokens = self.tokens[:, 1 - limit :]
            self.cache = self._new_cache()
            self.fresh = self.tokens


@dataclass
class _Row:
    """One row of an :class:`HFSlotBatch`: its context, options and progress."""

    context: _Context
    rng: torch.Generator | None
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    matchers: list[StopMatcher] | None
    eos: frozenset[int]
    produced: int = 0


class HFSlotBatch:
    """Continuous batching of an :class:`HFCausalLM`: rows join and leave at every step.

    Implements :class:`genloom.interfaces.SlotDecoder`. Each row keeps its own context and
    ``DynamicCache`` and is advanced by its own forward pass (see the module docstring), so
    its tokens are exactly those :meth:`HFCausalLM.stream` gives for ``n=1``.
    """

    def __init__(self, model: HFCausalLM, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"a slot batch needs a capacity of at least 1 row, got {capacity!r}")
        self.model = model
        self.capacity = capacity
        self.rows: dict[int, _Row] = {}

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
        stop_at_eos: bool = True,
        use_cache: bool = True,
    ) -> int:
        """Start a row with the options of :meth:`HFCausalLM.stream`; return its slot."""
        model = self.model
        device = model.base_sha256.device
        check_sampling_options(1, max_new_tokens, temperature, top_k, top_p)
        check_rng(rng, device)
        prompt = model._prompt(condition, device)
        stop_ids = model._stop_ids(stop)
        slot = next((s for s in range(self.capacity) if s not in self.rows), None)
        if slot is None:
            raise RuntimeError(f"all {self.capacity} slots are in use; wait for a row to finish")
        self.rows[slot] = _Row(
            context=_Context(model, prompt[None], use_cache),
            rng=rng,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            matchers=None if stop_ids is None else [StopMatcher(stop_ids)],
            eos=model.eos_ids if stop_at_eos else frozenset(),
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
        if was_training:  # walking the modules costs as much as a step of a small model
            model.eval()
        try:
            return {slot: self._advance(slot) for slot in list(self.rows)}
        finally:
            if was_training:
                model.train()

    def _advance(self, slot: int) -> SlotOutput:
        row = self.rows[slot]
        if row.produced == row.max_new_tokens:  # max_new_tokens=0
            del self.rows[slot]
            return SlotOutput(torch.empty(0, dtype=torch.long), finish="length")
        token = sample_token(
            row.context.next_logits(), row.temperature, row.top_k, row.top_p, row.rng
        )  # (1,)
        ended = [False]
        emitted = HFCausalLM._push(0, int(token), row.matchers, ended, row.eos)
        row.produced += 1
        finish: Literal["stop", "length"] | None = "stop" if ended[0] else None
        if finish is None and row.produced == row.max_new_tokens:
            finish = "length"
            if row.matchers is not None:
                emitted += row.matchers[0].flush()
        if finish is None:
            row.context.append(token)
        else:
            del self.rows[slot]
        return SlotOutput(torch.tensor(emitted, dtype=torch.long), finish=finish)


def _context_of(config: object) -> int:
    """The most positions the model attends to, from its config."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 1:
            return value
    raise ValueError(
        f"config.json of model_type {getattr(config, 'model_type', '?')!r} gives no context length "
        "(max_position_embeddings or n_positions)"
    )


def _eos_ids(model: nn.Module) -> frozenset[int]:
    """The end-of-sequence ids ``generate`` would stop at (generation config, else model config)."""
    generation = getattr(model, "generation_config", None)
    value = getattr(generation, "eos_token_id", None)
    if value is None:
        value = model.config.eos_token_id
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, int) else value)


def _check_tokenizer_agrees(directory: Path, model: nn.Module, vocab_size: int, path: str) -> int:
    """Check the directory's ``tokenizer.json`` (if any) against the model; how many ids to sample from."""
    from tokenizers import Tokenizer

    file = directory / "tokenizer.json"
    if not file.is_file():
        return vocab_size
    tokenizer = Tokenizer.from_file(str(file))
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise ValueError(
            f"generator.path={path!r}: tokenizer.json has {size} token ids but the model's vocabulary "
            f"(config.json vocab_size) has {vocab_size}; the tokenizer belongs to another model"
        )
    settings = read_json(directory / "tokenizer_config.json")
    for name in SPECIAL_TOKENS:
        token = settings.get(f"{name}_token")
        if isinstance(token, dict):  # the older AddedToken form
            token = token.get("content")
        model_id = getattr(model.config, f"{name}_token_id", None)
        if not isinstance(token, str) or not isinstance(model_id, int):
            continue
        tokenizer_id = tokenizer.token_to_id(token)
        if tokenizer_id != model_id:
            raise ValueError(
                f"generator.path={path!r}: the tokenizer's {name} token {token!r} is id {tokenizer_id}, but "
                f"config.json says {name}_token_id={model_id}; the tokenizer and the model do not belong "
                "together"
            )
    return size


def _add_adapters(model: nn.Module, lora: LoraSettings, path: str) -> nn.Module:
    """``model`` with peft's LoRA adapters on the target layers, everything else frozen."""
    from peft import LoraConfig, get_peft_model

    adaptable = sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
         if name and type(module).__name__ in LORA_LAYERS}
    )
    names = {name for name, _ in model.named_modules()}
    for target in lora.target_modules or ():
        if not any(name == target or name.endswith("." + target) for name in names):
            raise ValueError(
                f"generator.lora.target_modules names {target!r}, but no layer of the model in {path} is "
                f"called that; the layers LoRA can adapt there: {', '.join(adaptable)}"
            )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) if lora.target_modules else None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # no default targets for this architecture, or a layer LoRA cannot adapt
        raise ValueError(
            f"generator.lora: peft cannot add adapters to the model in {path} ({err}); name the layers with "
            f"generator.lora.target_modules=[...]; the layers LoRA can adapt there: {', '.join(adaptable)}"
        ) from None


def _untie_adapted_head(model: nn.Module) -> None:
    """Give an adapted LM head its own weight when it shares the input embedding's (GPT-2).

    Merging adds the head's adapters to its weight; were that weight still the embedding's,
    the embedding would change too and the merged model would compute something else.
    """
    base = model.get_base_model()
    head, embedding = base.get_output_embeddings(), base.get_input_embeddings()
    layer = getattr(head, "base_layer", None)  # peft's LoRA layer wraps the original one
    if layer is None or layer.weight is not getattr(embedding, "weight", None):
        return
    layer.weight = nn.Parameter(layer.weight.detach().clone())
    base.config.tie_word_embeddings = False


def _check_base(module: HFCausalLM, state_dict: Mapping[str, Tensor], prefix: str, *args: object) -> None:
    """Refuse LoRA adapters trained on other base weights than the directory's; warn for a whole model."""
    saved = state_dict.get(prefix + "base_sha256")
    if saved is None or torch.equal(saved.cpu(), module.base_sha256.cpu()):
        return
    if module.lora.r is not None:
        raise CheckpointError(
            f"these LoRA adapters were trained on the base model in {module.path} when its weights had "
            f"SHA-256 {bytes(saved.cpu().tolist()).hex()}, but its weights now have SHA-256 "
            f"{bytes(module.base_sha256.cpu().tolist()).hex()}; the adapters only make sense over the "
            f"weights they were trained on: put those weights back in {module.path}"
        )
    log.warning(
            "these weights were trained from a base model whose weights had SHA-256 %s, but %s now holds "
            "weights with SHA-256 %s; the checkpoint's own weights are used, the architecture comes from %s",
            bytes(saved.cpu().tolist()).hex(),
            module.path,
            bytes(module.base_sha256.cpu().tolist()).hex(),
            module.path,
        )
