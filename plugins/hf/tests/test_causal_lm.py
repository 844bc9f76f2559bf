"""hf_causal_lm: loading (and refusing), sampling with the KV cache, stop, slots, checkpoints."""

import json
import logging
import shutil

import pytest
import torch
from genloom import checkpoint
from genloom_hf.causal_lm import HFCausalLM
from genloom_hf.random_model import write_random_model
from genloom_hf.tokenizer import HFTokenizer
from omegaconf import OmegaConf
from safetensors.torch import load_file

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def models(gpt2_dir, llama_dir) -> dict[str, HFCausalLM]:
    """One loaded model per family, weights redrawn larger so that greedy output varies."""
    loaded = {}
    for family, directory in (("gpt2", gpt2_dir), ("llama", llama_dir)):
        model = HFCausalLM(path=str(directory), block_size=16)
        torch.manual_seed(1)
        with torch.no_grad():
            for param in model.model.parameters():
                param.normal_(0.0, 0.2)
        loaded[family] = model
    return loaded


@pytest.fixture(params=["gpt2", "llama"])
def family(request) -> str:
    return request.param


def prompt_ids(models, family) -> torch.Tensor:
    return HFTokenizer(path=models[family].path).encode(PROMPT)


def test_greedy_tokens_with_the_kv_cache_equal_transformers_generate(models, family) -> None:
    model, prompt = models[family], prompt_ids(models, family)
    ours = model.generate(1, condition=prompt, temperature=0, max_new_tokens=24, stop_at_eos=False)[0]
    model.eval()
    with torch.no_grad():
        theirs = model.model.generate(
            prompt[None], do_sample=False, max_new_tokens=24, eos_token_id=None, pad_token_id=0
        )[0, len(prompt) :]
    assert ours.tolist() == theirs.tolist()
    assert len(set(ours.tolist())) > 2  # a real continuation, not one token repeated
    no_cache = model.generate(
        2, condition=prompt, temperature=0, max_new_tokens=24, stop_at_eos=False, use_cache=False
    )
    assert all(row.tolist() == ours.tolist() for row in no_cache)


def test_the_context_overflows_by_the_text_transformers_rule(models) -> None:
    model = models["llama"]  # a context of 128 positions
    long = torch.arange(3, 200) % model.vocab_size
    cached = model.generate(1, condition=long, temperature=0, max_new_tokens=5, stop_at_eos=False)[0]
    recomputed = model.generate(
        1, condition=long, temperature=0, max_new_tokens=5, stop_at_eos=False, use_cache=False
    )[0]
    assert cached.tolist() == recomputed.tolist() and len(cached) == 5


def test_seeded_sampling_is_reproducible_and_streams_what_generate_returns(models) -> None:
    model, prompt = models["llama"], prompt_ids(models, "llama")  # GPT-2: the contract's checks
    options = dict(condition=prompt, max_new_tokens=12, temperature=0.9, top_k=50, top_p=0.95)
    first = model.generate(3, rng=torch.Generator().manual_seed(7), **options)
    again = model.generate(3, rng=torch.Generator().manual_seed(7), **options)
    other = model.generate(3, rng=torch.Generator().manual_seed(8), **options)
    assert [r.tolist() for r in first] == [r.tolist() for r in again]
    assert [r.tolist() for r in first] != [r.tolist() for r in other]
    chunks = list(model.stream(3, rng=torch.Generator().manual_seed(7), **options))
    streamed = torch.cat(chunks, dim=1)
    assert [row[row >= 0].tolist() for row in streamed] == [r.tolist() for r in first]


def test_a_stop_sequence_ends_the_row_and_is_not_output(models) -> None:
    model, prompt = models["llama"], prompt_ids(models, "llama")  # GPT-2: the contract's checks
    greedy = model.generate(1, condition=prompt, temperature=0, max_new_tokens=20, stop_at_eos=False)[
        0
    ].tolist()
    at = next(i for i in range(3, 18) if greedy[i : i + 2] not in [greedy[j : j + 2] for j in range(i)])
    stop = torch.tensor(greedy[at : at + 2])
    cut = model.generate(2, condition=prompt, temperature=0, max_new_tokens=20, stop=stop, stop_at_eos=False)
    assert [r.tolist() for r in cut] == [greedy[:at]] * 2
    # A Llama tokenizer encodes the stop text with <s> first; the row still stops at the text.
    with_bos = torch.tensor([model.start_token, *greedy[at : at + 2]])
    cut = model.generate(
        1, condition=prompt, temperature=0, max_new_tokens=20, stop=with_bos, stop_at_eos=False
    )
    assert cut[0].tolist() == greedy[:at]


def test_the_end_of_sequence_token_ends_a_row_unless_asked_not_to(models) -> None:
    model = models["gpt2"]
    prompt = prompt_ids(models, "gpt2")
    greedy = model.generate(1, condition=prompt, temperature=0, max_new_tokens=12, stop_at_eos=False)[
        0
    ].tolist()
    eos_ids = model.eos_ids
    model.eos_ids = frozenset({greedy[4]})  # as if the model's eos were the fifth token it writes
    try:
        ended = model.generate(1, condition=prompt, temperature=0, max_new_tokens=12)[0].tolist()
    finally:
        model.eos_ids = eos_ids
    assert ended == greedy[: greedy.index(greedy[4])]


def test_slot_rows_equal_stream_for_one_row_whatever_shares_the_batch(models) -> None:
    model, prompt = models["llama"], prompt_ids(models, "llama")  # GPT-2: the contract's checks
    options = dict(max_new_tokens=10, temperature=0.8, top_k=40)
    alone = model.generate(1, condition=prompt, rng=torch.Generator().manual_seed(3), **options)[0]
    slots = model.open_slots(2)
    mine = slots.add(condition=prompt, rng=torch.Generator().manual_seed(3), **options)
    got, finish = [], None
    for step in range(12):
        if step == 2:  # a neighbour joins mid-way with its own prompt and seed
            slots.add(condition=prompt[:3], rng=torch.Generator().manual_seed(9), **options)
        out = slots.step()
        if mine in out:
            got += out[mine].tokens.tolist()
            finish = out[mine].finish or finish
    assert got == alone.tolist() and finish == "length"
    with pytest.raises(RuntimeError, match="slots are in use"):
        full = model.open_slots(1)
        full.add(condition=prompt)
        full.add(condition=prompt)


def test_a_checkpoint_round_trips_the_tied_head_and_records_the_base(gpt2_dir, tmp_path, caplog) -> None:
    trained = HFCausalLM(path=str(gpt2_dir), block_size=16)
    with torch.no_grad():
        trained.model.transformer.wte.weight.add_(0.5)
    config = OmegaConf.create({"generator": {"name": "hf_causal_lm", "path": str(gpt2_dir)}})
    saved = checkpoint.save(tmp_path / "checkpoints", step=1, model=trained, config=config, plugins={})
    weights = load_file(saved / "model.safetensors")
    assert sum(name in weights for name in ("model.lm_head.weight", "model.transformer.wte.weight")) == 1
    fresh = HFCausalLM(path=str(gpt2_dir), block_size=16)
    checkpoint.load_weights(fresh, saved)
    assert fresh.model.lm_head.weight is fresh.model.transformer.wte.weight
    assert torch.equal(fresh.model.lm_head.weight, trained.model.lm_head.weight)
    assert bytes(weights["base_sha256"].tolist()) == bytes(fresh.base_sha256.tolist())

    other_base = write_random_model(tmp_path / "other", family="gpt2", seed=5)
    moved = HFCausalLM(path=str(other_base), block_size=16)
    with caplog.at_level(logging.WARNING):
        checkpoint.load_weights(moved, saved)
    assert "trained from a base model whose weights had SHA-256" in caplog.text
    assert torch.equal(moved.model.lm_head.weight, trained.model.lm_head.weight)


# -- refusals ---------------------------------------------------------------------------------


def test_a_hub_id_says_how_to_download_it_first(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="genloom never downloads") as caught:
        HFCausalLM(path="meta-llama/Llama-3.2-1B")
    assert "hf download meta-llama/Llama-3.2-1B --local-dir models/Llama-3.2-1B" in str(caught.value)
    assert "give that directory: generator.path=models/Llama-3.2-1B" in str(caught.value)
    with pytest.raises(ValueError, match="does not exist; .* put that directory back at this path"):
        HFCausalLM(path=str(tmp_path / "moved-away"))


def test_a_directory_with_only_pickled_weights_is_refused(gpt2_dir, tmp_path) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(gpt2_dir / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match=r"only as pytorch_model.bin, a pickle .* safetensors only"):
        HFCausalLM(path=str(pickled))
    (pickled / "config.json").unlink()
    with pytest.raises(ValueError, match="holds no config.json"):
        HFCausalLM(path=str(pickled))


def test_a_tokenizer_from_another_model_is_refused(gpt2_dir, tmp_path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(gpt2_dir, mixed)
    bigger = write_random_model(tmp_path / "bigger", family="gpt2", vocab_size=512)
    shutil.copy(bigger / "tokenizer.json", mixed)
    with pytest.raises(ValueError, match="tokenizer.json has 512 token ids but the model's vocabulary"):
        HFCausalLM(path=str(mixed), block_size=16)

    shutil.copy(gpt2_dir / "tokenizer.json", mixed)
    settings = json.loads((mixed / "tokenizer_config.json").read_text())
    (mixed / "tokenizer_config.json").write_text(json.dumps({**settings, "eos_token": "the"}))
    with pytest.raises(ValueError, match="the tokenizer's eos token 'the' is id .* eos_token_id=0"):
        HFCausalLM(path=str(mixed), block_size=16)


def test_ids_outside_the_vocabulary_are_refused_naming_the_tokenizer_to_use(models) -> None:
    model = models["gpt2"]
    with pytest.raises(ValueError, match="token id 999, outside the vocabulary .*encoder=hf_tokenizer"):
        model.generate(1, condition=torch.tensor([1, 999]), max_new_tokens=2)
    with pytest.raises(ValueError, match="token id 384"):
        model.loss({"tokens": torch.full((2, 5), 384)})
    with pytest.raises(ValueError, match="block_size=512 must be from 2 to the model's context of 128"):
        HFCausalLM(path=model.path, block_size=512)
