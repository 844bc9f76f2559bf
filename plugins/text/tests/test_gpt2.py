"""The transformer out of genloom and in: `genloom export format=hf` and `generator.init_from`.

What is exported is loaded back with transformers, as a user's tools would load it: same
logits (fp32, <= 1e-5), same greedy tokens, and text through HF's own pipeline.
"""

import json
import shutil

import pytest
import torch
from genloom import cli, plugins, sampler
from genloom_text import gpt2
from genloom_text.model import Transformer
from genloom_text.tokenizer import ByteDecoder, ByteTokenizer
from hydra.core.global_hydra import GlobalHydra

transformers = pytest.importorskip("transformers")

PROMPTS = ["The with statement ", "naïve café — 東京 🙂 ", "def f(x):\n\treturn x\n"]
SIZES = {"vocab_size": 256, "block_size": 48, "n_layer": 2, "n_head": 2, "n_embd": 32}


def decided(model: Transformer) -> Transformer:
    """Weights large enough that greedy choices are not near-ties (random init is near-uniform)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def ours() -> Transformer:
    return decided(Transformer(**SIZES, bias=True))


@pytest.fixture(scope="module")
def exported(ours, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    files = ours.export(directory, format="hf", encoder=ByteTokenizer())
    assert {p.name for p in files} == {p.name for p in directory.iterdir()}
    return directory


def hf_logits(directory, ids: torch.Tensor) -> torch.Tensor:
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    with torch.inference_mode():
        return hf(ids).logits


def hf_greedy(directory, ids: torch.Tensor, new_tokens: int) -> list[int]:
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def test_export_gives_the_same_logits_and_greedy_tokens(ours, exported):
    ids = ByteTokenizer().encode(PROMPTS[1])[None]  # (1, T): non-ASCII bytes too
    with torch.inference_mode():
        expected = ours(ids)
    assert (hf_logits(exported, ids) - expected).abs().max() <= 1e-5
    greedy = ours.generate(1, condition=ids[0], max_new_tokens=12, temperature=0.0)[0]
    assert hf_greedy(exported, ids, 12) == greedy.tolist()
    # Without a prompt both start from start_token (a newline).
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    with torch.inference_mode():
        unprompted = hf.generate(max_new_tokens=8, min_new_tokens=8)[0]
    assert unprompted.tolist() == [10, *ours.generate(1, max_new_tokens=8, temperature=0.0)[0].tolist()]


def test_exported_tokenizer_has_genloom_ids_and_hf_pipeline_round_trips_text(ours, exported):
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    encoder, decoder = ByteTokenizer(), ByteDecoder()
    for prompt in PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        assert ids == encoder.encode(prompt).tolist()
        assert tokenizer.decode(ids) == prompt
    generate = transformers.pipeline("text-generation", model=str(exported), device="cpu")
    prompt = PROMPTS[0]
    [answer] = generate(prompt, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    continuation = ours.generate(1, condition=encoder.encode(prompt), max_new_tokens=10, temperature=0.0)[0]
    assert answer["generated_text"] == prompt + decoder.decode(continuation)


def test_a_fitted_bpe_is_exported_as_its_own_tokenizer(tmp_path):
    from genloom_text.bpe import BpeTokenizer

    encoder = BpeTokenizer(vocab_size=300)
    encoder.fit(PROMPTS * 20)
    assert encoder.vocab_size > 256  # merges were learnt
    Transformer(**{**SIZES, "vocab_size": encoder.vocab_size}).export(tmp_path, format="hf", encoder=encoder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for prompt in [*PROMPTS, "unseen: ß∑ 🙂🙂"]:
        ids = tokenizer(prompt)["input_ids"]
        assert ids == encoder.encode(prompt).tolist()
        assert tokenizer.decode(ids) == prompt


def test_tanh_gelu_exports_as_gpt2s_own_activation(tmp_path):
    model = decided(Transformer(**SIZES, activation="gelu_tanh"))  # and bias=false: zero biases
    model.export(tmp_path, format="hf", encoder=ByteTokenizer())
    assert json.loads((tmp_path / "config.json").read_text())["activation_function"] == "gelu_pytorch_tanh"
    ids = torch.tensor([list(b"A tanh GELU")])
    with torch.inference_mode():
        assert (hf_logits(tmp_path, ids) - model(ids)).abs().max() <= 1e-5


def test_init_from_an_export_round_trips_the_weights(ours, exported):
    model = Transformer(**SIZES, bias=True, init_from=str(exported))
    assert "GPT-2" in model.load_pretrained()
    for (name, mine), theirs in zip(model.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name
    assert Transformer(**SIZES).load_pretrained() is None  # no init_from: nothing loaded


def test_init_from_reads_gpt2s_own_files_and_a_shorter_context(tmp_path):
    """GPT-2's published files name tensors without `transformer.` and carry attention-mask buffers."""
    hf = gpt2.gpt2_like(Transformer(**SIZES, bias=True), activation="gelu_new")
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in hf.state_dict().items()
             if k != "lm_head.weight"}
    state["h.0.attn.bias"] = torch.ones(1, 1, 4, 4)
    from safetensors.torch import save_file

    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(hf.config.to_dict()))
    sizes = {**SIZES, "block_size": 16}
    model = Transformer(**sizes, bias=True, activation="gelu_tanh", init_from=str(tmp_path))
    model.load_pretrained()
    assert torch.equal(model.pos_emb.weight, state["wpe.weight"][:16])
    assert torch.equal(model.blocks[1].attn.qkv.weight, state["h.1.attn.c_attn.weight"].T)
    ids = torch.tensor([list(b"short context")])
    with torch.inference_mode():
        assert (hf.eval()(ids).logits - model.eval()(ids)).abs().max() <= 1e-5


def test_init_from_reads_sharded_safetensors_and_refuses_a_shard_outside(ours, exported, tmp_path):
    from safetensors.torch import load_file, save_file

    weights = load_file(exported / "model.safetensors")
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, tmp_path / shard, metadata={"format": "pt"})
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(exported / "config.json", tmp_path / "config.json")
    model = Transformer(**SIZES, bias=True, init_from=str(tmp_path))
    model.load_pretrained()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ours.state_dict().values(),
                                                 strict=True))
    index["weight_map"][names[0]] = "../elsewhere.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "not a .safetensors file beside it" in refusal(tmp_path)


def refusal(directory, **overrides) -> str:
    options = {**SIZES, "bias": True, **overrides}
    with pytest.raises(ValueError) as err:
        Transformer(**options, init_from=str(directory)).load_pretrained()
    return str(err.value)


def test_init_from_names_every_mismatched_size_and_its_override(exported):
    said = refusal(exported, n_layer=3, n_embd=64, block_size=64)
    assert str(exported / "config.json") in said
    assert "generator.n_layer=2 generator.n_embd=32 generator.block_size=48 (or less)" in said
    assert refusal(exported, activation="gelu_tanh").endswith("set generator.activation=gelu")


def test_init_from_refuses_what_the_transformer_cannot_express(exported, tmp_path):
    said = refusal(exported, bias=False)  # the exported biases are random, not zero
    assert "is not zero" in said and "set generator.bias=true" in said
    config = json.loads((exported / "config.json").read_text())
    for key, value in [("scale_attn_by_inverse_layer_idx", True), ("activation_function", "relu"),
                       ("model_type", "llama")]:
        shutil.copytree(exported, tmp_path / key)
        (tmp_path / key / "config.json").write_text(json.dumps({**config, key: value}))
        assert key in refusal(tmp_path / key) or value in refusal(tmp_path / key)
    with pytest.raises(ValueError, match="token prior over media codes"):
        Transformer(media_vocab=8, media_tokens=4, init_from=str(exported)).load_pretrained()


def test_init_from_refuses_a_pickle_only_directory_and_a_hub_id(exported, tmp_path):
    shutil.copy(exported / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    assert "safetensors only, since unpickling runs code" in refusal(tmp_path)
    assert "is not a directory" in refusal("openai-community/gpt2")


def test_export_refuses_options_formats_and_media_priors(ours, tmp_path):
    with pytest.raises(ValueError, match="takes no options; got merge"):
        ours.export(tmp_path, format="hf", merge=True)
    with pytest.raises(ValueError, match="format=hf only"):
        ours.export(tmp_path, format="gguf")
    prior = Transformer(media_vocab=8, media_tokens=4, n_layer=1, n_head=2, n_embd=16)
    with pytest.raises(ValueError, match="token prior over media codes"):
        prior.export(tmp_path, format="hf")
    assert not any(tmp_path.iterdir())


# -- through the command line -------------------------------------------------------------


@pytest.fixture(scope="module")
def text_only():
    import genloom_text.plugin
    from genloom.plugins import PluginSource, load_plugins

    source = PluginSource(name="text", load=lambda: genloom_text.plugin, module="genloom_text.plugin")
    plugins.set_active(load_plugins([source], strict=True, disabled=()))
    yield
    plugins.set_active(None)
    GlobalHydra.instance().clear()


def train(run, *extra) -> int:
    return cli.main(["train", "pipeline=text_debug", "trainer=debug", "trainer.progress=false",
                     "trainer.max_steps=2", "trainer.eval_every=2", f"hydra.run.dir={run}", *extra])


@pytest.fixture(scope="module")
def trained(text_only, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert train(run) == 0
    return run


def said(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_genloom_export_writes_a_directory_transformers_loads(trained, tmp_path, capsys):
    out = tmp_path / "hf"
    assert cli.main(["export", f"checkpoint={trained}", "format=hf", f"out={out}"]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no staging directory left behind
    model = sampler.load(trained, plugins.active(), "cpu").pipeline.generator  # bias=false: zero biases
    ids = torch.tensor([list(b"The ")])
    with torch.inference_mode():
        assert (hf_logits(out, ids) - model(ids)).abs().max() <= 1e-5


def test_genloom_export_refuses_and_leaves_files_alone(trained, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    base = ["export", f"checkpoint={trained}", "format=hf"]
    assert cli.main([*base, f"out={out}"]) == 1
    assert "already holds 1 entries (notes.txt); genloom export never overwrites" in said(capsys)
    assert (out / "notes.txt").read_text() == "keep me"
    assert cli.main([*base, f"out={tmp_path / 'new'}", "merge=true"]) == 1
    assert "takes no options; got merge" in said(capsys)
    assert cli.main(["export", f"checkpoint={trained}", "format=gguf", f"out={tmp_path / 'new'}"]) == 1
    assert "cannot export format='gguf'; it writes: hf" in said(capsys)
    missing = tmp_path / "none"
    assert cli.main(["export", f"checkpoint={missing}", "format=hf", f"out={tmp_path / 'new'}"]) == 1
    assert "none' does not exist" in said(capsys)
    assert cli.main(base) == 1
    assert "genloom export needs out=" in said(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing half-written


def test_train_from_init_from_is_self_contained_and_resume_does_not_reload(trained, tmp_path, capsys):
    pretrained = tmp_path / "pretrained"
    assert cli.main(["export", f"checkpoint={trained}", "format=hf", f"out={pretrained}"]) == 0
    assert train(tmp_path / "wide", f"generator.init_from={pretrained}", "generator.n_embd=64") == 1
    message = said(capsys)
    assert "does not fit the configured transformer; set generator.n_embd=32" in message
    assert "Traceback" not in message
    run = tmp_path / "run"
    assert train(run, f"generator.init_from={pretrained}", "trainer.lr=0") == 0
    assert f"initialised the transformer from {pretrained}" in said(capsys)
    source = sampler.load(trained, plugins.active(), "cpu").pipeline.generator.state_dict()
    started = sampler.load(run, plugins.active(), "cpu").pipeline.generator.state_dict()
    assert all(torch.equal(source[k], started[k]) for k in source)  # lr=0: the imported weights
    shutil.rmtree(pretrained)  # the run needs it no more: resume and sample work without it
    assert train(run, f"generator.init_from={pretrained}", "trainer.lr=0", "trainer.max_steps=4",
                 "trainer.resume=true") == 0
    assert "initialised the transformer" not in said(capsys)
    assert cli.main(["sample", f"checkpoint={run}", "n=1", "max_new_tokens=4", "stream=false",
                     f"hydra.run.dir={tmp_path / 's'}"]) == 0
    assert (tmp_path / "s" / "samples" / "sample_000.txt").is_file()
