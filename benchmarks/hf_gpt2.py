"""Hugging Face's GPT-2 shaped like a genloom Transformer, for the text benchmarks.

Both models are pre-norm GPT-2: learned positions, fused q/k/v, a 4x MLP, LayerNorm eps
1e-5, an LM head tied to the token embedding. Two differences remain, and are settled here:

* GPT-2 always has biases; genloom has them with ``bias=True``, which the benchmarks use.
* GPT-2's default activation is ``gelu_new`` (the tanh approximation, computed in Python
  from seven elementwise ops); genloom's MLP uses ``nn.GELU()`` (exact, erf). ``activation``
  picks HF's; ``"gelu"`` is the same function as genloom's and is what weight-sharing
  comparisons (sampling) must use.

GPT-2's linear layers are ``Conv1D`` modules that store weights as ``(in, out)``, the
transpose of ``nn.Linear``; :func:`copy_weights` transposes them.
"""

from __future__ import annotations

import torch
from torch import nn


def gpt2_config(
    *, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int, activation: str = "gelu_new"
):  # noqa: ANN201 - transformers is imported lazily
    """A ``GPT2Config`` of the given shape, without dropout, attending through SDPA."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=block_size,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        activation_function=activation,
        attn_implementation="sdpa",
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=True,
    )


def gpt2_like(genloom_model: nn.Module, activation: str = "gelu_new") -> nn.Module:
    """A randomly initialised ``GPT2LMHeadModel`` with ``genloom_model``'s shape."""
    from transformers import GPT2LMHeadModel

    block = genloom_model.blocks[0]
    return GPT2LMHeadModel(
        gpt2_config(
            vocab_size=genloom_model.vocab_size,
            block_size=genloom_model.block_size,
            n_layer=len(genloom_model.blocks),
            n_head=block.attn.n_head,
            n_embd=genloom_model.tok_emb.embedding_dim,
            activation=activation,
        )
    )


@torch.no_grad()
def copy_weights(genloom_model: nn.Module, hf_model: nn.Module) -> None:
    """Copy a genloom ``Transformer(bias=True)``'s weights into a same-shaped ``GPT2LMHeadModel``."""
    if genloom_model.ln_f.bias is None:
        raise ValueError("GPT-2 has biases: build the genloom Transformer with bias=True")
    hf = hf_model.transformer
    hf.wte.weight.copy_(genloom_model.tok_emb.weight)  # also the tied LM head
    hf.wpe.weight.copy_(genloom_model.pos_emb.weight)
    for ours, theirs in zip(genloom_model.blocks, hf.h, strict=True):
        pairs = [
            (ours.ln_1, theirs.ln_1, False),
            (ours.ln_2, theirs.ln_2, False),
            (ours.attn.qkv, theirs.attn.c_attn, True),
            (ours.attn.out_proj, theirs.attn.c_proj, True),
            (ours.mlp.fc, theirs.mlp.c_fc, True),
            (ours.mlp.out_proj, theirs.mlp.c_proj, True),
        ]
        for source, target, conv1d in pairs:
            target.weight.copy_(source.weight.T if conv1d else source.weight)
            target.bias.copy_(source.bias)
    hf.ln_f.weight.copy_(genloom_model.ln_f.weight)
    hf.ln_f.bias.copy_(genloom_model.ln_f.bias)
