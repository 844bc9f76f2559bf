"""Continuous batching: a row's tokens do not depend on the rows decoded beside it."""

import pytest
import torch
from genloom.interfaces import BatchedDecoding, SlotDecoder
from genloom_text.model import Transformer
from test_model import ids, lively, rng


def drain(batch: SlotDecoder, slots: list[int]) -> dict[int, list[int]]:
    """Step until the given rows finish; their tokens by slot."""
    tokens: dict[int, list[int]] = {s: [] for s in slots}
    pending = set(slots)
    while pending:
        for slot, output in batch.step().items():
            if slot in tokens:
                tokens[slot] += output.tokens.tolist()
                if output.done:
                    pending.discard(slot)
    return tokens


def alone(model: Transformer, prompt: torch.Tensor, seed: int, **options: object) -> list[int]:
    return model.generate(1, condition=prompt, rng=rng(seed), **options)[0].tolist()


ROW_OPTIONS = [
    {"temperature": 0},
    {"temperature": 1.0},
    {"temperature": 0.8, "top_k": 5},
    {"temperature": 1.2, "top_p": 0.9},
    {"temperature": 1.0, "max_new_tokens": 3},
]


@pytest.mark.parametrize("bias", [False, True])
def test_each_row_equals_its_lone_stream_beside_thirty_others(bias: bool) -> None:
    model = lively(bias=bias)
    assert isinstance(model, BatchedDecoding)
    batch = model.open_slots(31)
    assert isinstance(batch, SlotDecoder)
    requests = []
    for i in range(31):
        prompt = ids(100 + i, 1 + i % 14)  # up to 14 of 16: some rows overflow the context
        options = {"max_new_tokens": 8, **ROW_OPTIONS[i % len(ROW_OPTIONS)]}
        requests.append((prompt, i, options))
    # Rows join at different steps (the first half now, the rest three steps later), and a
    # slot freed by a finished row takes a newcomer.
    owner: dict[int, int] = {}  # slot -> request
    got: dict[int, list[int]] = {seed: [] for _, seed, _ in requests}
    waiting = list(requests)
    steps = 0
    while waiting or owner:
        if steps == 0 or steps >= 3:
            while waiting and len(owner) < batch.capacity and (steps or len(owner) < 15):
                prompt, seed, options = waiting.pop(0)
                owner[batch.add(condition=prompt, rng=rng(seed), **options)] = seed
        for slot, output in batch.step().items():
            got[owner[slot]] += output.tokens.tolist()
            if output.done:
                del owner[slot]
        steps += 1
    for prompt, seed, options in requests:
        assert got[seed] == alone(model, prompt, seed, **options), (seed, options)


def test_greedy_rows_with_stop_sequences_match_generate_and_rows_leave_early() -> None:
    model = lively()
    prompt = ids(7, 5)
    free_run = alone(model, prompt, 0, temperature=0, max_new_tokens=40)
    stop = torch.tensor(free_run[10:12])
    expected = alone(model, prompt, 0, temperature=0, max_new_tokens=40, stop=stop)
    batch = model.open_slots(4)
    stopping = batch.add(condition=prompt, rng=rng(0), temperature=0, max_new_tokens=40, stop=stop)
    running = batch.add(condition=ids(8, 3), rng=rng(1), max_new_tokens=40)
    finishes = {}
    got: list[int] = []
    while stopping not in finishes:
        outputs = batch.step()
        got += outputs[stopping].tokens.tolist()
        finishes.update({s: o.finish for s, o in outputs.items() if o.done})
    assert got == expected and len(expected) < len(free_run)
    assert finishes[stopping] == "stop"
    assert set(batch.rows) == {running}


def test_a_freed_slot_is_reused_and_the_newcomer_is_unaffected() -> None:
    model = lively()
    batch = model.open_slots(2)
    first = batch.add(condition=ids(1, 4), rng=rng(1), max_new_tokens=50)
    other = batch.add(condition=ids(2, 4), rng=rng(2), max_new_tokens=10)
    for _ in range(5):
        batch.step()
    with pytest.raises(RuntimeError, match="all 2 slots are in use"):
        batch.add(condition=ids(3, 4), rng=rng(3))
    batch.free(first)
    newcomer = batch.add(condition=ids(3, 4), rng=rng(3), max_new_tokens=10)
    assert newcomer == first
    got = drain(batch, [newcomer, other])
    assert got[newcomer] == alone(model, ids(3, 4), 3, max_new_tokens=10)


def test_zero_new_tokens_finish_at_once_and_bad_options_are_clear() -> None:
    model = lively()
    batch = model.open_slots(2)
    slot = batch.add(condition=ids(1, 3), rng=rng(0), max_new_tokens=0)
    output = batch.step()[slot]
    assert output.finish == "length" and output.tokens.numel() == 0 and not batch.rows
    with pytest.raises(ValueError, match="temperature=-1 must be 0"):
        batch.add(condition=ids(1, 3), temperature=-1)
    with pytest.raises(ValueError, match="capacity of at least 1"):
        model.open_slots(0)


def newcomers_together(model: Transformer) -> list[tuple[torch.Tensor, int, dict, list[int]]]:
    """Rows with equally long prompts that join at one step (beside a running row); their tokens."""
    batch = model.open_slots(16)
    running = batch.add(condition=ids(99, 5), rng=rng(99), max_new_tokens=30)
    batch.step()
    requests = []
    for i in range(12):
        prompt = ids(200 + i, (3, 7, 12)[i % 3])  # four rows of each length
        requests.append((prompt, i, {"max_new_tokens": 6, **ROW_OPTIONS[i % 4]}))
    slots = [batch.add(condition=p, rng=rng(seed), **options) for p, seed, options in requests]
    got = drain(batch, [*slots, running])
    return [(p, seed, options, got[slot]) for (p, seed, options), slot in zip(requests, slots, strict=True)]


def test_newcomers_prefilled_together_equal_their_lone_streams() -> None:
    model = lively(bias=True)
    for prompt, seed, options, tokens in newcomers_together(model):
        assert tokens == alone(model, prompt, seed, **options), (len(prompt), options)


def test_a_batched_prefill_that_would_round_differently_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import genloom_text.model as text_model

    exact_rows_linear = text_model._rows_linear

    def rounding_differently(x: torch.Tensor, weight: torch.Tensor, bias: object) -> torch.Tensor:
        y = exact_rows_linear(x, weight, bias)  # batched prefills, if used, would see the error
        return y + 0.5 if x.shape[0] > 1 and x.shape[1] > 1 else y

    monkeypatch.setattr(text_model, "_rows_linear", rounding_differently)
    model = lively()
    batch = model.open_slots(4)
    assert not batch._batch_is_exact(3, 7)
    for prompt, seed, options, tokens in newcomers_together(model):
        assert tokens == alone(model, prompt, seed, **options), (len(prompt), options)


def logits_by_step(batch, slots: list[int]) -> dict[int, list[torch.Tensor]]:
    """Step until the given rows finish; the next-token logits each row sampled from, by slot."""
    seen: dict[int, list[torch.Tensor]] = {s: [] for s in slots}
    advance = batch._advance

    def recording(logits: dict[int, torch.Tensor]):  # noqa: ANN202 - wraps SlotBatch._advance
        for slot, row in logits.items():
            if slot in seen:
                seen[slot].append(row.clone())
        return advance(logits)

    batch._advance = recording
    drain(batch, slots)
    return seen


@pytest.mark.parametrize("threads", [1, 2])
def test_a_rows_logits_are_bitwise_the_same_alone_and_beside_rows_of_other_lengths(threads: int) -> None:
    # Tokens hide rounding (they flip only at near-ties); the logits show it. Intra-op threads
    # change how some kernels split their work, so the rows must not depend on them either.
    model = Transformer(vocab_size=256, n_layer=2, n_head=4, n_embd=64, block_size=48, bias=True).eval()
    prompts = [ids(300 + i, 2 + 9 * (i // 3)) for i in range(12)]  # 2 .. 29 tokens, three rows each
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batch = model.open_slots(12)
        slots = [batch.add(condition=p, temperature=0, max_new_tokens=45) for p in prompts]
        together = logits_by_step(batch, slots)  # rows of 20+ tokens pass the context of 48: rebuilt
        for prompt, slot in zip(prompts, slots, strict=True):
            lone = model.open_slots(1)
            slot_alone = lone.add(condition=prompt, temperature=0, max_new_tokens=45)
            by_itself = logits_by_step(lone, [slot_alone])[slot_alone]
            assert len(by_itself) == len(together[slot]) == 45
            for step, (a, b) in enumerate(zip(by_itself, together[slot], strict=True)):
                assert torch.equal(a, b), (len(prompt), step, (a - b).abs().max().item())
    finally:
        torch.set_num_threads(before)
