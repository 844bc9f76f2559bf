"""GPU benchmark: GPT-2-small-sized training MFU and decode speed, genloom against Hugging Face.

Made for one NVIDIA H200 (dense bf16 peak 989 TFLOP/s), in one call of a few minutes:

1. Training. genloom's Transformer at GPT-2 small's shape (12 layers, 12 heads, 768
   wide, context 1024, GPT-2's vocabulary padded to 50304) on random tokens, with bf16
   autocast, ``torch.compile``, fused AdamW and SDPA (flash) attention: the step genloom's
   Trainer takes with ``trainer.precision=bf16 trainer.compile=true``. Model FLOPs
   utilisation counts, per token, ``6 * N`` for the matmuls of forward and backward
   (``N``: parameters less the position table, the tied head counted once) plus
   ``12 * n_layer * n_embd * T`` for attention scores and their use (the PaLM appendix B
   formula, as nanoGPT's ``estimate_mfu``), against 989e12 FLOP/s. If transformers is
   installed, ``GPT2LMHeadModel`` of the same shape is trained the same way beside it.
2. Decoding. Greedy continuation of a 16-token prompt by 256 tokens at batch 1 and 64:
   genloom's ``Transformer.generate`` (KV cache; eager, and with ``compile=True``: the
   decode step compiled and CUDA-graphed), against HF ``generate`` eager
   (dynamic cache) and with a static cache and ``torch.compile``, when transformers is
   installed.

    python benchmarks/gpu.py            # on a CUDA machine
    python benchmarks/gpu.py --tiny     # tiny model, few steps, on any device (smoke test)

Needs only torch and genloom's text plugin; when they are not installed, the repository's
``core/`` and ``plugins/text/`` are put on the path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from genloom_text.model import Transformer
except ImportError:
    _repo = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_repo / "core"), str(_repo / "plugins" / "text")]
    from genloom_text.model import Transformer

H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    batch_size: int
    train_steps: int
    new_tokens: int
    decode_batches: tuple[int, ...]


GPT2_SMALL = Shape(
    12, 12, 768, 1024, 50304, batch_size=16, train_steps=30, new_tokens=256, decode_batches=(1, 64)
)
TINY = Shape(2, 2, 64, 64, 256, batch_size=4, train_steps=3, new_tokens=8, decode_batches=(1, 4))


def flops_per_token(model: Transformer, shape: Shape) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 12 * L * C * T for attention."""
    n = sum(p.numel() for p in model.parameters()) - model.pos_emb.weight.numel()
    return 6 * n + 12 * shape.n_layer * shape.n_embd * shape.block_size


def train_rate(
    model: torch.nn.Module, shape: Shape, device: torch.device, *, hf: bool, compile: bool
) -> float:
    """Tokens/s of bf16-autocast, compiled, fused-AdamW training on random tokens."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=6e-4,
        betas=(0.9, 0.95),
        fused=device.type in ("cuda", "cpu"),
    )

    def loss_of(tokens: torch.Tensor) -> torch.Tensor:
        logits = model(tokens[:, :-1]).logits if hf else model(tokens[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())

    step_loss = torch.compile(loss_of) if compile else loss_of
    precision = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    tokens = torch.randint(shape.vocab_size, (shape.batch_size, shape.block_size + 1), device=device)
    warmup = max(1, shape.train_steps // 5)
    for step in range(warmup + shape.train_steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        with precision:
            loss = step_loss(tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return shape.train_steps * shape.batch_size * shape.block_size / (time.perf_counter() - start)


def decode_rates(
    model: Transformer, shape: Shape, device: torch.device, hf_model, reps: int, compile: bool  # noqa: ANN001
) -> dict:
    """New tokens/s of greedy decoding at each batch size, per contender."""
    prompt = torch.randint(shape.vocab_size, (16,), device=device)

    def genloom(batch: int, compiled: bool = False) -> torch.Tensor:
        rows = model.generate(batch, condition=prompt, temperature=0.0, max_new_tokens=shape.new_tokens,
                              compile=compiled)
        return torch.stack(rows)

    contenders = {"genloom": genloom}
    if compile:  # the decode step compiled, CUDA-graphed on CUDA (generate's compile=True)
        contenders["genloom compiled"] = lambda b: genloom(b, compiled=True)
    if hf_model is not None:

        def hf(batch: int, static: bool = False) -> torch.Tensor:
            ids = prompt.expand(batch, -1)
            # A static cache makes generate compile the model's forward on CUDA (transformers >= 4.46).
            options = {"cache_implementation": "static"} if static else {}
            return hf_model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                use_cache=True,
                max_new_tokens=shape.new_tokens,
                min_new_tokens=shape.new_tokens,
                pad_token_id=0,
                **options,
            )

        contenders["HF eager"] = hf
        if device.type == "cuda":
            contenders["HF static+compile"] = lambda b: hf(b, static=True)
    rates: dict[tuple[str, int], float] = {}
    with torch.inference_mode():
        for batch in shape.decode_batches:
            for run in contenders.values():
                run(batch)  # warm-up: compilation, cache allocation
            seconds: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(reps):
                for name, run in contenders.items():
                    synchronize(device)
                    start = time.perf_counter()
                    run(batch)
                    synchronize(device)
                    seconds[name].append(time.perf_counter() - start)
            for name, times in seconds.items():
                rates[(name, batch)] = batch * shape.new_tokens / statistics.median(times)
    return rates


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hf_twin(model: Transformer, shape: Shape):  # noqa: ANN201
    """A same-shaped ``GPT2LMHeadModel`` with exact GELU and SDPA, or None without transformers."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    config = GPT2Config(
        vocab_size=shape.vocab_size,
        n_positions=shape.block_size,
        n_embd=shape.n_embd,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu",
        attn_implementation="sdpa",
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return GPT2LMHeadModel(config)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model and few steps, on whatever device is here"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print(
            "gpu benchmark: no CUDA device here; run it on a GPU machine, or pass --tiny for a CPU smoke run"
        )
        return
    device = torch.device("cuda" if cuda else "cpu")
    shape = TINY if args.tiny else GPT2_SMALL
    reps = 1 if args.tiny else args.reps
    compile = not args.no_compile and device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(0)
    model = Transformer(
        vocab_size=shape.vocab_size,
        block_size=shape.block_size,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        n_embd=shape.n_embd,
        bias=False,
    ).to(device)
    hf_model = hf_twin(model, shape)
    hf_model = None if hf_model is None else hf_model.to(device)
    per_token = flops_per_token(model, shape)
    train = {"genloom": train_rate(model, shape, device, hf=False, compile=compile)}
    if hf_model is not None:
        train["HF GPT-2"] = train_rate(hf_model, shape, device, hf=True, compile=compile)
    hf_eval = hf_model.eval() if hf_model is not None else None
    decode = decode_rates(model, shape, device, hf_eval, reps, compile)

    name = torch.cuda.get_device_name(device) if cuda else "CPU (smoke run: figures mean nothing)"
    print(
        f"\ngpu benchmark, {time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}, "
        f"{shape.n_layer}L/{shape.n_head}H/{shape.n_embd} T={shape.block_size} V={shape.vocab_size}, "
        f"compile={compile}"
    )
    print(f"training, batch {shape.batch_size} x {shape.block_size}, {per_token / 1e6:.0f} MFLOP/token")
    for who, rate in train.items():
        print(
            f"  {who:<10} {rate:>12,.0f} tokens/s   "
            f"MFU {rate * per_token / H200_BF16_PEAK:6.1%} of 989 TFLOP/s"
        )
    if hf_model is None:
        print("  (transformers is not installed: no HF comparison; pip install 'transformers>=4.44')")
    print(f"decoding, greedy, {shape.new_tokens} new tokens (tokens/s, all rows)")
    names = sorted({n for n, _ in decode}, key=list(dict.fromkeys(n for n, _ in decode)).index)
    print(f"  {'batch':>5}  " + "  ".join(f"{n:>18}" for n in names))
    for batch in shape.decode_batches:
        print(f"  {batch:>5}  " + "  ".join(f"{decode[(n, batch)]:>18,.0f}" for n in names))
    print("aims: MFU >= 45%; decode >= 1,000 tokens/s at batch 1 and >= 20,000 at batch 64")


if __name__ == "__main__":
    main()
