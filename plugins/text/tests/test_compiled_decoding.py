"""compile=True: the decode step with static shapes, eager and under torch.compile."""

import pytest
import torch
import torch._dynamo
from test_model import BLOCK, documented_greedy, greedy, ids, lively


def test_the_static_decode_step_equals_full_recomputation_past_the_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The step's arithmetic, run eagerly: it reads a span of the cache with a mask built from
    # a position tensor, and is used for every token after a prefill, also after overflow.
    monkeypatch.setattr(torch, "compile", lambda function, **options: function)
    model = lively().double().eval()
    for prompt in (torch.tensor([10]), ids(5, 2 * BLOCK)):
        stepped = greedy(model, condition=prompt, max_new_tokens=2 * BLOCK, compile=True)
        assert stepped == documented_greedy(model, prompt, 2 * BLOCK)
        assert len(set(stepped)) > 3
    # A context of several attention spans (64 positions each), run past its end.
    long = lively(block_size=130).double().eval()
    assert greedy(long, max_new_tokens=140, compile=True) == greedy(long, max_new_tokens=140)
    rows = model.generate(3, condition=ids(6, 4), max_new_tokens=2 * BLOCK, temperature=0, compile=True)
    alone = greedy(model, condition=ids(6, 4), max_new_tokens=2 * BLOCK)
    assert [row.tolist() for row in rows] == [alone] * 3


def test_compiled_decoding_gives_the_recomputed_tokens_and_compiles_once() -> None:
    # Inductor for real (one compile, the slow part of this test). Positions 1..BLOCK and the
    # rebuilds after overflow must all reuse one graph: a recompile would raise.
    model = lively(n_layer=1).double().eval()
    assert model.block_size <= 64  # one attention span: spans past it may compile once more
    prompt = ids(7, 5)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        first = model.generate(2, condition=prompt, max_new_tokens=3 * BLOCK, temperature=0, compile=True)
        again = model.generate(2, condition=prompt, max_new_tokens=BLOCK, temperature=0, compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    expected = documented_greedy(model, prompt, 3 * BLOCK)
    assert [row.tolist() for row in first] == [expected] * 2
    assert [row.tolist() for row in again] == [expected[:BLOCK]] * 2
    torch._dynamo.reset()


def test_a_failed_compile_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(function, **options):  # noqa: ANN001, ANN003, ANN202
        def fail(*args):  # noqa: ANN002, ANN202
            raise torch._dynamo.exc.BackendCompilerFailed(function, RuntimeError("g++: not found"), None)
        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.raises(RuntimeError, match=r"g\+\+: not found.*C\+\+ compiler.*without compile=true"):
        lively().generate(1, max_new_tokens=3, compile=True)
    # Without a cache nothing is compiled: compile=True is ignored, as documented.
    assert len(lively().generate(1, max_new_tokens=3, compile=True, use_cache=False)[0]) == 3


def test_without_a_cpp_compiler_compile_true_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # Checked before anything is traced, by the trainer's own check (genloom.compiling).
    from genloom.compiling import CompileUnavailable
    from torch._inductor import cpp_builder, exc

    def no_compiler():  # noqa: ANN202
        raise exc.InvalidCxxCompiler

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(CompileUnavailable, match=r"^compile=true on the CPU needs a C\+\+ compiler.*"
                                                 r"apt-get install g\+\+ python3-dev.*without compile=true"):
        lively().generate(1, max_new_tokens=3, compile=True)


def test_a_slot_batch_takes_compile_and_stays_eager() -> None:
    # genloom serve passes a request's compile=true on to its slot batch, whose rows must stay
    # bitwise those of a lone eager stream: the option is accepted and changes nothing.
    model = lively()
    batch = model.open_slots(2)
    slot = batch.add(condition=ids(8, 3), max_new_tokens=6, temperature=0, compile=True)
    tokens = []
    while True:
        output = batch.step()[slot]
        tokens += output.tokens.tolist()
        if output.done:
            break
    assert tokens == greedy(model, condition=ids(8, 3), max_new_tokens=6)
