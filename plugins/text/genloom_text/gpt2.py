"""The genloom Transformer in Hugging Face's GPT-2 format, both ways: export and init_from.

Both models are pre-norm GPT-2: learned positions, fused q/k/v, a 4x MLP, LayerNorm eps
1e-5, an LM head tied to the token embedding, attention scaled by ``1/sqrt(head_dim)``.
So a genloom ``transformer`` is written as a ``GPT2LMHeadModel`` directory that
``transformers.AutoModelForCausalLM.from_pretrained`` loads with the same logits, and a
GPT-2 directory initialises a genloom ``transformer`` of the same sizes. What differs is
settled here, and what cannot be expressed is refused rather than written wrong:

* activation: genloom's ``activation=gelu`` is the exact (erf) GELU, GPT-2's ``"gelu"``;
  ``activation=gelu_tanh`` is the tanh approximation, GPT-2's own default (``"gelu_new"``,
  the same function as ``"gelu_pytorch_tanh"``, which export writes).
* biases: GPT-2 always has them. A genloom model built with ``bias=false`` is written with
  zero biases (the same function); a GPT-2 directory with non-zero biases needs
  ``generator.bias=true``.
* linear layers: GPT-2's ``Conv1D`` stores weights as ``(in, out)``, the transpose of
  ``nn.Linear``.
* a media prior (``media_vocab`` set) is not a language model GPT-2 can express: its
  prefix layout and code-restricted sampling would be lost. Refused.
* context: GPT-2 refuses more than ``n_positions`` tokens, where genloom slides its window
  (the last ``block_size - 1`` tokens). Within the context both give the same tokens.

Files are written with safetensors and plain JSON (``config.json``, ``generation_config.json``),
and the byte-level tokenizer with the ``tokenizers`` library; ``transformers`` itself is
needed only to load the result. Reading is safetensors only: a directory holding only a
pickled ``pytorch_model.bin`` is refused (unpickling runs code).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from genloom import checkpoint
from safetensors.torch import save_file
from torch import Tensor, nn

from genloom_text.bpe import BpeTokenizer
from genloom_text.tokenizer import ByteTokenizer, byte_symbols

if TYPE_CHECKING:
    from genloom_text.model import Transformer

log = logging.getLogger(__name__)

# genloom activation -> what config.json's activation_function says (export).
ACTIVATION_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
# config.json's activation_function -> genloom activation (init_from): the same functions.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's, which genloom uses
WEIGHTS = "model.safetensors"
SHARDED_INDEX = "model.safetensors.index.json"
PREFIX = "transformer."  # GPT2LMHeadModel's base model; GPT-2's own files leave it out
# Buffers older GPT-2 files carry (the causal mask): not weights.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def gpt2_names(n_layer: int) -> dict[str, tuple[str, bool]]:
    """genloom parameter name -> (GPT-2 tensor name without ``transformer.``, transposed?).

    Biases are listed whether or not the genloom model has them (``bias=false``).
    """
    names = {"tok_emb.weight": ("wte.weight", False), "pos_emb.weight": ("wpe.weight", False),
             "ln_f.weight": ("ln_f.weight", False), "ln_f.bias": ("ln_f.bias", False)}
    layers = {"ln_1": ("ln_1", False), "ln_2": ("ln_2", False), "attn.qkv": ("attn.c_attn", True),
              "attn.out_proj": ("attn.c_proj", True), "mlp.fc": ("mlp.c_fc", True),
              "mlp.out_proj": ("mlp.c_proj", True)}
    for i in range(n_layer):
        for ours, (theirs, conv1d) in layers.items():
            names[f"blocks.{i}.{ours}.weight"] = (f"h.{i}.{theirs}.weight", conv1d)
            names[f"blocks.{i}.{ours}.bias"] = (f"h.{i}.{theirs}.bias", False)
    return names


def gpt2_config(model: Transformer, activation: str | None = None) -> dict[str, Any]:
    """``config.json`` of a ``GPT2LMHeadModel`` shaped like ``model``.

    ``activation`` overrides config.json's ``activation_function`` (the benchmarks build
    HF's default ``gelu_new`` model too); by default it is ``model``'s own.
    """
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model.vocab_size,
        "n_positions": model.block_size,
        "n_embd": model.tok_emb.embedding_dim,
        "n_layer": len(model.blocks),
        "n_head": model.blocks[0].attn.n_head,
        "n_inner": None,  # 4 * n_embd, as genloom's MLP
        "activation_function": activation or ACTIVATION_NAMES[model.activation],
        "resid_pdrop": model.drop.p,
        "embd_pdrop": model.drop.p,
        "attn_pdrop": model.drop.p,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": None,  # genloom's text models have no special tokens
        "eos_token_id": None,
        "dtype": str(model.tok_emb.weight.dtype).removeprefix("torch."),
    }


def gpt2_like(model: Transformer, activation: str | None = None) -> nn.Module:
    """A randomly initialised ``transformers.GPT2LMHeadModel`` shaped like ``model`` (benchmarks)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(**gpt2_config(model, activation)))


def gpt2_state_dict(model: Transformer) -> dict[str, Tensor]:
    """``model``'s weights under GPT-2's names (with ``transformer.``), contiguous, on the CPU."""
    refuse_media_prior(model, "exported as GPT-2")
    ours = dict(model.named_parameters())
    weights = {}
    for name, (theirs, conv1d) in gpt2_names(len(model.blocks)).items():
        if name in ours:
            tensor = ours[name].detach()
            tensor = tensor.T if conv1d else tensor
        else:  # bias=false: GPT-2's bias of that layer is zero, the same function
            weight = ours[name.removesuffix(".bias") + ".weight"]  # (out, in) or a norm's (C,)
            tensor = weight.new_zeros(weight.shape[0])
        weights[PREFIX + theirs] = tensor.contiguous().cpu()
    return weights


def copy_to_gpt2(model: Transformer, hf_model: nn.Module) -> None:
    """Copy ``model``'s weights into a same-shaped ``GPT2LMHeadModel`` (benchmarks)."""
    with torch.no_grad():
        hf_model.load_state_dict(gpt2_state_dict(model), strict=False)  # lm_head is tied to wte


def export(model: Transformer, directory: Path, encoder: object | None) -> list[Path]:
    """Write ``model`` into ``directory`` as a GPT-2 model directory; return the files written.

    ``config.json``, ``model.safetensors`` and ``generation_config.json`` (greedy, starting
    from ``start_token`` without a prompt, no end-of-sequence token: genloom's text models
    run to their token budget); with the
    ``bytes`` or a fitted ``bpe`` encoder also its tokenizer (``tokenizer.json``,
    ``tokenizer_config.json``), whose ids are genloom's. Another encoder's vocabulary is
    not written: a warning says so.
    """
    directory = Path(directory)
    weights = gpt2_state_dict(model)
    save_file(weights, directory / WEIGHTS, metadata={"format": "pt"})
    # Without a prompt genloom starts from start_token, as HF's generate starts from bos_token_id
    # (the tokenizer adds no such token to prompts). Batched HF generation pads with
    # pad_token_id; genloom has no pad token, and id 0 is as good as any (masks hide it).
    generation = {"do_sample": False, "bos_token_id": model.start_token, "eos_token_id": None,
                  "pad_token_id": 0}
    files = [directory / WEIGHTS,
             _write_json(directory / "config.json", gpt2_config(model)),
             _write_json(directory / "generation_config.json", generation)]
    if isinstance(encoder, ByteTokenizer):
        files += write_tokenizer(directory, byte_tokenizer().to_str(), model_max_length=model.block_size)
    elif isinstance(encoder, BpeTokenizer):  # the tokenizers library's own file, as fitted
        files += write_tokenizer(directory, encoder.fitted_state(), model_max_length=model.block_size)
    else:
        log.warning("no tokenizer written: the pipeline's encoder (%s) is neither bytes nor bpe; "
                    "give the exported model its tokenizer with that tokenizer's own tools",
                    type(encoder).__name__)
    return files


def byte_tokenizer():  # noqa: ANN201 - tokenizers is imported lazily
    """A ``tokenizers.Tokenizer`` whose ids are a text's UTF-8 bytes, as genloom's ``bytes`` encoder gives.

    The ByteLevel pre-tokenizer (without the regex split and without a prefix space)
    spells each byte as one printable character, a BPE model without merges maps that
    character to the byte's value, and the ByteLevel decoder turns the characters back
    into bytes. No normaliser: nothing changes a byte. Bytes that are not valid UTF-8
    decode to U+FFFD, as genloom's ``ByteDecoder`` does.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {symbol: byte for byte, symbol in enumerate(byte_symbols())}
    if set(pre_tokenizers.ByteLevel.alphabet()) != set(vocab):
        raise RuntimeError("the tokenizers library's ByteLevel alphabet is not GPT-2's byte table")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def write_tokenizer(directory: Path, state: str, *, model_max_length: int) -> list[Path]:
    """``tokenizer.json`` (``state``, the tokenizers library's JSON) and the
    ``tokenizer_config.json`` that makes ``transformers.AutoTokenizer`` read it."""
    path = directory / "tokenizer.json"
    path.write_text(state, encoding="utf-8")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
              "clean_up_tokenization_spaces": False}
    return [path, _write_json(directory / "tokenizer_config.json", config)]


def refuse_media_prior(model: Transformer, what: str) -> None:
    if model.media is not None:
        raise ValueError(
            f"this transformer is a token prior over media codes ({model.media.describe()}), which "
            f"cannot be {what}: GPT-2 has no place for its prefix layout or its sampling among "
            "the codes alone. Only a language model (generator.media_vocab=null) converts"
        )


def load_gpt2(model: Transformer, directory: Path) -> str:
    """Initialise ``model`` from the GPT-2 directory ``directory``; return what was loaded, for the log.

    The sizes are ``model``'s (its config) and must match the directory's ``config.json``:
    each mismatch is named with the ``generator.*`` override that fixes it. ``block_size``
    may be smaller than the directory's ``n_positions``; the first ``block_size`` position
    embeddings are taken. Weights come from ``model.safetensors`` (or its sharded index).
    """
    refuse_media_prior(model, "initialised from GPT-2")
    directory = _model_directory(directory)
    config = _read_config(directory)
    _check_sizes(model, config, directory / "config.json")
    headers, weights = _read_weights(directory)
    where = ", ".join(str(h.path) for h in headers)
    ours = dict(model.named_parameters())
    expected = {PREFIX + theirs for theirs, _ in gpt2_names(len(model.blocks)).values()}
    unexpected = sorted(k for k in weights if k not in expected and not k.endswith(IGNORED_SUFFIXES)
                        and k != "lm_head.weight")
    if unexpected:
        raise ValueError(f"{where} holds tensors a GPT-2 language model does not have "
                         f"({', '.join(unexpected[:5])}): is this a GPT-2 directory?")
    head = weights.get("lm_head.weight")
    if head is not None and not torch.equal(head, weights[PREFIX + "wte.weight"]):
        raise ValueError(f"{where}: lm_head.weight differs from wte.weight, and genloom's transformer "
                         "ties its LM head to the token embedding; this model cannot be loaded faithfully")
    with torch.no_grad():
        for name, (theirs, conv1d) in gpt2_names(len(model.blocks)).items():
            key = PREFIX + theirs
            if key not in weights:
                raise ValueError(f"{where} has no tensor {theirs}: is this a complete GPT-2 directory?")
            tensor = weights[key].T if conv1d else weights[key]
            if name == "pos_emb.weight":
                tensor = tensor[: model.block_size]
            if name not in ours:  # bias=false: only a zero bias is the same function
                if bool(tensor.any()):
                    raise ValueError(f"{where}: {theirs} is not zero, and generator.bias=false has no "
                                     "biases; set generator.bias=true")
                continue
            if tensor.shape != ours[name].shape:
                raise ValueError(f"{where}: {theirs} has shape {tuple(weights[key].shape)}, which does not "
                                 f"fit the transformer's {name} {tuple(ours[name].shape)}")
            ours[name].copy_(tensor)
    bad = [name for name, p in ours.items() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(f"{where} holds NaN or infinite values (in {', '.join(bad[:5])}): "
                         "the file is damaged")
    return f"initialised the transformer from {directory} (GPT-2, {len(weights)} tensors)"


def _model_directory(directory: Path) -> Path:
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"generator.init_from={directory} is not a directory. genloom reads local model directories "
            "only and downloads nothing: download the model first (docs/pretrained.md, 'Getting a "
            "model directory first') and give its path"
        )
    return path


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"generator.init_from: {directory} has no config.json; is it a Hugging Face "
                         "model directory?") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not JSON: {err}") from None
    if not isinstance(config, dict) or config.get("model_type") != "gpt2":
        model_type = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(f"{path} describes model_type {model_type!r}; generator.init_from reads GPT-2 "
                         "directories (model_type 'gpt2'). Other architectures: generator=hf_causal_lm")
    return config


def _check_sizes(model: Transformer, config: dict[str, Any], path: Path) -> None:
    """Every way ``config`` differs from ``model``: the overrides that fix it, or why it cannot load."""
    n_embd = model.tok_emb.embedding_dim
    ours = {"vocab_size": model.vocab_size, "n_layer": len(model.blocks),
            "n_head": model.blocks[0].attn.n_head, "n_embd": n_embd}
    fixes = [f"generator.{key}={config.get(key)}" for key, value in ours.items() if config.get(key) != value]
    n_positions = config.get("n_positions", 1024)
    if not isinstance(n_positions, int) or n_positions < model.block_size:
        fixes.append(f"generator.block_size={n_positions} (or less)")
    activation = ACTIVATIONS.get(config.get("activation_function", "gelu_new"))
    if activation is None:
        raise ValueError(f"{path}: activation_function {config.get('activation_function')!r} has no genloom "
                         f"equivalent (genloom's transformer has {', '.join(ACTIVATIONS)})")
    if activation != model.activation:
        fixes.append(f"generator.activation={activation}")
    if fixes:
        raise ValueError(f"{path} does not fit the configured transformer; set {' '.join(fixes)}")
    unsupported = {
        "n_inner": (config.get("n_inner"), (None, 4 * n_embd)),
        "layer_norm_epsilon": (config.get("layer_norm_epsilon", LAYER_NORM_EPS), (LAYER_NORM_EPS,)),
        "scale_attn_weights": (config.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (config.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "add_cross_attention": (config.get("add_cross_attention", False), (False,)),
        "tie_word_embeddings": (config.get("tie_word_embeddings", True), (True,)),
    }
    for key, (value, accepted) in unsupported.items():
        if value not in accepted:
            raise ValueError(f"{path}: {key} is {value!r}, which genloom's transformer cannot express "
                             f"(it has {accepted[-1]!r}); this model cannot be loaded faithfully")


def _read_weights(directory: Path) -> tuple[list[checkpoint.WeightsHeader], dict[str, Tensor]]:
    """The directory's safetensors weights (one file or the shards of an index); never a pickle."""
    from safetensors.torch import load_file

    index = directory / SHARDED_INDEX
    if (directory / WEIGHTS).is_file():
        files = [directory / WEIGHTS]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{index} is not a safetensors index (JSON with a weight_map)") from None
        files = [directory / name for name in names]
        outside = [n for n in names if Path(n).name != n or not n.endswith(".safetensors")]
        if outside:
            raise ValueError(f"{index} names {outside[0]!r}, not a .safetensors file beside it")
    elif any((directory / name).exists() for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise ValueError(
            f"{directory} holds only pickled weights (pytorch_model.bin); genloom loads safetensors only, "
            "since unpickling runs code. Convert it where you trust it, e.g. "
            "AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
        )
    else:
        raise ValueError(f"{directory} has no {WEIGHTS}; generator.init_from reads safetensors weights")
    headers = [checkpoint.read_header(path) for path in files]  # refuses a damaged file before reading it
    weights = {}
    for path in files:
        for name, tensor in load_file(str(path)).items():
            # GPT-2's own files name the base model's tensors bare; save_pretrained adds the prefix.
            bare = name == "lm_head.weight" or name.startswith(PREFIX)
            weights[name if bare else PREFIX + name] = tensor
    return headers, weights


def _write_json(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return path
