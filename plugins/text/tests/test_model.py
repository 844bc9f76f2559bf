"""The Transformer: its loss, and sampling with cache, filters, stop sequences and overflow."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from genloom.interfaces import Generator, StreamingGenerator
from genloom_blocks.sampling import StopMatcher
from genloom_text.model import Transformer
from genloom_text.tokenizer import ByteTokenizer

BLOCK = 16


def tiny(**options: object) -> Transformer:
    torch.manual_seed(0)
    return Transformer(**{"block_size": BLOCK, "n_layer": 2, "n_head": 2, "n_embd": 32, **options})


def lively(**options: object) -> Transformer:
    """A tiny model with large random weights, whose greedy output varies with the context.

    A freshly initialised model predicts almost uniformly and greedy decoding repeats one
    token, which would let cache or stop bugs go unseen.
    """
    model = tiny(**options)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model


def ids(seed: int, length: int) -> torch.Tensor:
    return torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(seed))


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def greedy(model: Transformer, **options: object) -> list[int]:
    return model.generate(1, temperature=0, **options)[0].tolist()


def first_index(sequence: list[int], sub: list[int]) -> int:
    return next(i for i in range(len(sequence)) if sequence[i : i + len(sub)] == sub)


def test_transformer_satisfies_the_core_protocols() -> None:
    model = tiny()
    assert isinstance(model, Generator) and isinstance(model, StreamingGenerator)


def test_loss_is_next_token_cross_entropy_in_nats_and_bits() -> None:
    model = tiny()
    tokens = ids(1, 4 * (BLOCK + 1)).view(4, BLOCK + 1)
    out = model.loss({"tokens": tokens})
    logits = model(tokens[:, :-1])
    assert logits.shape == (4, BLOCK, 256)
    expected = F.cross_entropy(logits.reshape(-1, 256), tokens[:, 1:].reshape(-1))
    assert out["loss"].shape == () and torch.allclose(out["loss"], expected)
    assert torch.allclose(out["bits_per_byte"], out["loss"] / math.log(2))
    # An untrained model predicts nearly uniformly: about ln 256 nats per byte.
    assert abs(out["loss"].item() - math.log(256)) < 0.1
    out["loss"].backward()
    assert model.tok_emb.weight.grad is not None


def test_a_tiny_model_learns_a_repeated_string() -> None:
    model = tiny()
    stream = ByteTokenizer().encode("genloom learns bytes. " * 8)
    batch = {"tokens": stream.unfold(0, BLOCK + 1, 4)}  # (N, BLOCK + 1) overlapping windows
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3  # from ln 256 = 5.5
    prompt = ByteTokenizer().encode("genloom learns")
    continuation = greedy(model, condition=prompt, max_new_tokens=14)
    assert bytes(continuation) == b" bytes. genloo"


def test_forward_with_a_cache_in_pieces_equals_one_full_pass() -> None:
    model = tiny().eval()
    tokens = ids(2, 3 * BLOCK).view(3, BLOCK)
    cache = model.new_kv_cache()
    pieces = [model(tokens[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, BLOCK)]]
    assert torch.allclose(torch.cat(pieces, dim=1), model(tokens), atol=1e-5)
    with pytest.raises(ValueError, match="generator.block_size"):
        model(tokens[:, :1], cache)  # the cache is full


def documented_greedy(model: Transformer, prompt: torch.Tensor, steps: int) -> list[int]:
    """Greedy decoding by the documented overflow rule, one full forward pass per token."""
    context = prompt.tolist()
    if len(context) > BLOCK:
        context = context[-(BLOCK - 1) :]
    out = []
    for _ in range(steps):
        with torch.no_grad():
            token = int(model(torch.tensor([context]))[0, -1].argmax())
        out.append(token)
        context.append(token)
        if len(context) > BLOCK:
            context = context[-(BLOCK - 1) :]
    return out


def test_greedy_decoding_with_cache_equals_full_recomputation_past_the_context() -> None:
    # float64 keeps the two paths' rounding differences far below any gap between logits.
    model = lively().double().eval()
    for prompt in (torch.tensor([10]), ids(3, 5), ids(4, BLOCK), ids(5, 2 * BLOCK)):
        cached = greedy(model, condition=prompt, max_new_tokens=3 * BLOCK)
        recomputed = greedy(model, condition=prompt, max_new_tokens=3 * BLOCK, use_cache=False)
        assert cached == recomputed == documented_greedy(model, prompt, 3 * BLOCK)
        assert len(set(cached)) > 3  # varied output, so that a wrong context would show


def test_a_prompt_longer_than_the_context_keeps_its_last_block_size_minus_one_tokens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = lively()
    prompt = ids(6, 40)
    with caplog.at_level(logging.WARNING, logger="genloom_text.model"):
        cropped = greedy(model, condition=prompt, max_new_tokens=10)
    assert "40 tokens" in caplog.text and f"last {BLOCK - 1}" in caplog.text
    assert cropped == greedy(model, condition=prompt[-(BLOCK - 1) :], max_new_tokens=10)


def test_without_a_prompt_generation_starts_from_the_start_token() -> None:
    model = lively(start_token=65)
    expected = greedy(model, condition=torch.tensor([65]), max_new_tokens=8)
    assert greedy(model, max_new_tokens=8) == expected
    assert greedy(model, condition=torch.tensor([], dtype=torch.long), max_new_tokens=8) == expected


def test_seeded_sampling_is_reproducible() -> None:
    model = tiny()
    first = model.generate(3, rng=rng(7), max_new_tokens=20)
    again = model.generate(3, rng=rng(7), max_new_tokens=20)
    other = model.generate(3, rng=rng(8), max_new_tokens=20)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert not torch.equal(first[0], first[1])  # rows are independent samples


def test_top_k_one_and_a_tiny_top_p_are_greedy() -> None:
    model = lively()
    prompt = ids(9, 6)
    expected = greedy(model, condition=prompt, max_new_tokens=20)
    top_k = model.generate(2, condition=prompt, rng=rng(0), max_new_tokens=20, top_k=1)
    top_p = model.generate(2, condition=prompt, rng=rng(0), max_new_tokens=20, top_p=1e-6)
    # A top_p below float32's range (found by schemathesis: 5e-324) compares as 0: still greedy.
    tiniest = model.generate(2, condition=prompt, rng=rng(0), max_new_tokens=20, top_p=5e-324)
    assert [row.tolist() for row in top_k + top_p + tiniest] == [expected] * 6


def test_a_stop_sequence_ends_the_row_and_is_not_output() -> None:
    model = lively()
    full = greedy(model, max_new_tokens=40)
    for start in (0, 7, 20):
        stop = full[start : start + 2]
        out = greedy(model, max_new_tokens=40, stop=torch.tensor(stop))
        assert out == full[: first_index(full, stop)]
    # Tokens held back as a possible start of the stop sequence come out when it never completes.
    absent = [full[-1], next(t for t in range(256) if t not in full)]
    assert greedy(model, max_new_tokens=40, stop=torch.tensor(absent)) == full


def test_stop_matching_handles_overlapping_prefixes() -> None:
    matcher = StopMatcher([1, 1, 2])
    assert [matcher.push(t) for t in (1, 1, 1, 2)] == [[], [], [1], []]
    assert matcher.stopped and matcher.push(5) == []
    matcher = StopMatcher([1, 1, 2])
    assert [matcher.push(t) for t in (1, 1, 3)] == [[], [], [1, 1, 3]]
    assert not matcher.stopped and matcher.flush() == []


def test_stream_chunks_concatenate_to_what_generate_returns() -> None:
    model = lively()
    options = {"max_new_tokens": 30, "top_k": 4}
    rows = [row.tolist() for row in model.generate(3, rng=rng(1), **options)]
    stop = rows[0][5:7]
    generated = model.generate(3, rng=rng(1), stop=torch.tensor(stop), **options)
    assert [row.tolist() for row in generated] == [row[: first_index(row + stop, stop)] for row in rows]
    chunks = list(model.stream(3, rng=rng(1), stop=torch.tensor(stop), **options))
    assert all(chunk.dim() == 2 and chunk.shape[0] == 3 for chunk in chunks)
    streamed = torch.cat(chunks, dim=1)
    assert [row[row >= 0].tolist() for row in streamed] == [row.tolist() for row in generated]


def test_streaming_ends_once_every_row_has_stopped() -> None:
    model = lively()
    full = greedy(model, max_new_tokens=40)
    stop = full[3:4]
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    assert greedy(model, max_new_tokens=40, stop=torch.tensor(stop)) == full[: full.index(stop[0])]
    assert len(calls) == full.index(stop[0]) + 1  # one forward pass per token, none after


def test_sampling_restores_training_mode_and_leaves_autograd_alone() -> None:
    model = tiny().train()
    stream = model.stream(2, rng=rng(0), max_new_tokens=5)
    next(stream)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    stream.close()
    assert model.training
    model.generate(1, max_new_tokens=3)
    assert model.training


def test_zero_new_tokens_gives_one_empty_row_per_sample() -> None:
    assert [len(row) for row in tiny().generate(2, max_new_tokens=0)] == [0, 0]


def test_invalid_sampling_options_are_clear_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="temperature=-1"):
        model.generate(1, temperature=-1)
    with pytest.raises(ValueError, match=r"top_p=0 must be in \(0, 1\]"):
        model.generate(1, top_p=0)
    with pytest.raises(ValueError, match="top_k=0"):
        model.generate(1, top_k=0)
    with pytest.raises(ValueError, match="1-D tensor of token ids"):
        model.generate(1, condition=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r'prompt of text \(prompt="..."\), not by a class label'):
        model.generate(1, condition=torch.tensor(3))  # what label=3 hands it
    with pytest.raises(ValueError, match="token id 300"):
        model.generate(1, condition=torch.tensor([1, 300]))
    with pytest.raises(ValueError, match="non-empty"):
        model.generate(1, stop=torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of generator.n_head"):
        Transformer(n_embd=30, n_head=4)
