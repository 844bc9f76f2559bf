"""``trainer.strategy=fsdp``: parameters, gradients and optimizer state sharded across ranks.

Built on PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``). Each block of a
``nn.ModuleList`` (the layers of a Transformer, the stages of a VAE) becomes its own
shard group, gathered just before it runs and freed after; the rest of the model (embeddings,
heads, tied weights) forms the root group. The generator stays the same object: its
parameters become sharded ``DTensor``s and its ``loss`` and ``generate`` work as before.

Checkpoints are gathered into the format a single process writes: full weights in one
safetensors file and the optimizer state keyed by parameter index. So ``genloom sample``
loads an FSDP checkpoint in one process, and an FSDP run resumes from any checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Generator methods the runtime calls in place of forward: each must gather the root's shards.
ENTRY_METHODS = ("loss", "generate", "reconstruct")


def shard(generator: nn.Module) -> nn.Module:
    """Shard ``generator`` in place: each ``ModuleList`` entry, then the root."""
    for module in list(generator.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                if any(p.requires_grad for p in block.parameters()):
                    fully_shard(block)
    fully_shard(generator)
    for method in ENTRY_METHODS:
        if callable(getattr(generator, method, None)):
            register_fsdp_forward_method(generator, method)
    return generator


def gradient_sync(generator: nn.Module, enabled: bool) -> None:
    """FSDP's ``no_sync``: skip the reduce-scatter on all but the last micro-batch."""
    generator.set_requires_gradient_sync(enabled)


def full_weights(generator: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on rank 0 (an empty dict elsewhere); every rank must call it.

    Tied parameters (an LM head sharing the embedding) appear once, under their first
    name in sorted order, as ``safetensors.torch.save_model`` would write them.
    """
    state = get_model_state_dict(generator, options=GATHERED)
    return {name: state[name].contiguous() for name in _unique_names(generator) if name in state}


def full_optimizer_state(generator: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The unsharded optimizer state on rank 0, keyed like ``optimizer.state_dict()``."""
    state = get_optimizer_state_dict(generator, optimizer, options=GATHERED)
    if not state:
        return {}
    index = {fqn: i for i, fqn in enumerate(fqn for g in state["param_groups"] for fqn in g["params"])}
    return {
        "state": {index[fqn]: values for fqn, values in state["state"].items()},
        "param_groups": [{**g, "params": [index[fqn] for fqn in g["params"]]} for g in state["param_groups"]],
    }


def load_full(generator: nn.Module, optimizer: torch.optim.Optimizer | None,
              weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any] | None) -> None:
    """Load a single-process checkpoint's weights (and optimizer state) into a sharded model."""
    set_model_state_dict(generator, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    if optimizer is None or optimizer_state is None:
        return
    fqns = _param_fqns(generator, optimizer)
    state = {
        "state": {fqns[i]: values for i, values in optimizer_state["state"].items()},
        "param_groups": [{**g, "params": [fqns[i] for i in g["params"]]}
                         for g in optimizer_state["param_groups"]],
    }
    set_optimizer_state_dict(generator, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _unique_names(generator: nn.Module) -> list[str]:
    groups: dict[int, list[str]] = {}
    for name, tensor in [*generator.named_parameters(remove_duplicate=False),
                         *generator.named_buffers(remove_duplicate=False)]:
        groups.setdefault(id(tensor), []).append(name)
    return sorted(min(names) for names in groups.values())


def _param_fqns(generator: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's index order."""
    name_of = {id(p): name for name, p in generator.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
