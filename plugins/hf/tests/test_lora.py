"""LoRA on hf_causal_lm: only the adapters train, checkpoints hold only them, export merges them."""

import json
import shutil

import pytest
import torch
from genloom import checkpoint, cli, sampler
from genloom.testing import active_plugins, check_resume
from genloom_hf.causal_lm import HFCausalLM
from genloom_hf.random_model import write_random_model
from genloom_hf.tokenizer import HFTokenizer
from omegaconf import OmegaConf
from safetensors.torch import load_file

LORA = {"r": 4, "alpha": 16, "dropout": 0.1}


@pytest.fixture(scope="module")
def plugins_on(hf_plugins):
    with active_plugins(hf_plugins):
        yield hf_plugins


def lora_run(model_dir) -> list[str]:
    return [
        "pipeline=hf_text_debug",
        "trainer=debug",
        "trainer.progress=false",
        f"generator.path={model_dir}",
        "generator.lora.r=4",
        "generator.lora.alpha=8",
        "generator.lora.dropout=0.1",
    ]


@pytest.fixture(scope="module")
def trained(plugins_on, gpt2_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("lora-run")
    args = [
        "train",
        *lora_run(gpt2_dir),
        "generator.lora.target_modules=[c_attn,lm_head]",
        "trainer.max_steps=10",
        "trainer.lr=3e-2",
        "trainer.log_every=1",
        "trainer.eval_every=10",
        "trainer.checkpoint_every=10",
        f"hydra.run.dir={run}",
    ]
    assert cli.main(args) == 0
    return run


def adapted(model_dir, **lora) -> HFCausalLM:
    torch.manual_seed(0)
    return HFCausalLM(path=str(model_dir), block_size=16, lora={**LORA, **lora})


def batch(model: HFCausalLM) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"tokens": torch.randint(0, model.vocab_size, (4, 17), generator=generator)}


def test_only_the_adapters_train_and_the_loss_falls(model_dir) -> None:
    model = adapted(model_dir, dropout=0.0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if n not in trainable}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(10):
        loss = model.loss(batch(model))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1  # nats per token, on a batch of random ids
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)  # bit for bit
    assert any(bool(p.any()) for n, p in model.named_parameters() if ".lora_B." in n)  # B starts at 0


def test_a_fine_tune_through_the_trainer_lowers_the_loss(trained) -> None:
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2


def test_the_checkpoint_holds_only_the_adapters_and_the_base_fingerprint(trained, gpt2_dir) -> None:
    step = checkpoint.resolve(trained)
    weights = load_file(step / "model.safetensors")
    assert "base_sha256" in weights
    adapters = set(weights) - {"base_sha256"}
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    assert checkpoint.read_header(step / "model.safetensors").partial
    base_bytes = (gpt2_dir / "model.safetensors").stat().st_size
    assert (step / "model.safetensors").stat().st_size < base_bytes / 5
    config = checkpoint.read(step).config
    assert config.generator.path == str(gpt2_dir) and config.generator.lora.r == 4


def test_a_checkpoint_round_trip_gives_the_same_logits(model_dir, tmp_path) -> None:
    model = adapted(model_dir)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)  # B starts at zero: make the adapters matter
    config = OmegaConf.create({"generator": {"name": "hf_causal_lm", "path": str(model_dir), "lora": LORA}})
    saved = checkpoint.save(tmp_path / "checkpoints", step=1, model=model, config=config, plugins={})
    fresh = adapted(model_dir)
    checkpoint.load_weights(fresh, saved)
    ids = batch(model)["tokens"]
    model.eval(), fresh.eval()
    with torch.no_grad():
        plain = HFCausalLM(path=str(model_dir), block_size=16).eval()
        assert not torch.allclose(plain.model(input_ids=ids).logits, model.model(input_ids=ids).logits)
        assert torch.equal(fresh.model(input_ids=ids).logits, model.model(input_ids=ids).logits)


def test_sampling_and_evaluating_a_lora_checkpoint_rebuild_base_and_adapters(plugins_on, trained, tmp_path):
    loaded = sampler.load(trained, plugins_on, "cpu").pipeline.generator
    assert loaded.lora.r == 4
    args = ["sample", f"checkpoint={trained}", "n=1", 'prompt="The "', "max_new_tokens=8", "temperature=0",
            f"hydra.run.dir={tmp_path}"]
    assert cli.main(args) == 0
    assert (tmp_path / "samples" / "sample_000.txt").is_file()
    args = ["eval", f"checkpoint={trained}", "batch_size=4", "max_batches=2",
            f"hydra.run.dir={tmp_path / 'eval'}"]
    assert cli.main(args) == 0
    scores = json.loads((tmp_path / "eval" / "eval.json").read_text())
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"][-1]
    # The training run's own validation (the same 2 batches): the adapters came back, not the base alone.
    assert scores["loss"] == pytest.approx(val["val_loss"], abs=1e-4)


def test_a_resumed_lora_fine_tune_logs_exactly_the_uninterrupted_losses(plugins_on, gpt2_dir, tmp_path):
    overrides = [*lora_run(gpt2_dir), "trainer.max_steps=3", "trainer.eval_every=100",
                 "trainer.checkpoint_every=100"]
    records = check_resume(plugins_on, overrides, stop_after=1, directory=tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]


def test_merged_export_loads_in_transformers_with_the_same_logits(plugins_on, trained, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ours = sampler.load(trained, plugins_on, "cpu").pipeline.generator.eval()
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    for out, merge in ((merged, "true"), (adapter, "false")):
        args = ["export", f"checkpoint={trained}", "format=hf", f"out={out}", f"merge={merge}",
                f"hydra.run.dir={tmp_path}"]
        assert cli.main(args) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    assert not list(merged.glob("*.bin")) and not list(adapter.glob("*.bin"))
    ids = HFTokenizer(path=str(merged)).encode("The quick brown fox")[None]
    theirs = AutoModelForCausalLM.from_pretrained(merged, local_files_only=True).eval()
    assert not any("lora" in name for name in theirs.state_dict())
    base = AutoModelForCausalLM.from_pretrained(ours.path, local_files_only=True)
    with_adapter = PeftModel.from_pretrained(base, adapter, local_files_only=True).eval()
    with torch.no_grad():
        expected = ours.model(input_ids=ids).logits
        assert (theirs(input_ids=ids).logits - expected).abs().max() <= 1e-5
        assert torch.equal(with_adapter(input_ids=ids).logits, expected)


# -- refusals ---------------------------------------------------------------------------------


def test_a_changed_or_missing_base_is_refused_naming_the_path_and_the_hash(
    plugins_on, trained, gpt2_dir, tmp_path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(gpt2_dir, base)
    moved = tmp_path / "run"
    shutil.copytree(trained, moved)
    step = checkpoint.resolve(moved)
    config = (step / "config.yaml").read_text().replace(str(gpt2_dir), str(base))
    (step / "config.yaml").write_text(config)
    assert sampler.load(moved, plugins_on, "cpu").pipeline.generator.path == str(base)
    recorded = bytes(load_file(step / "model.safetensors")["base_sha256"].tolist()).hex()

    write_random_model(base, family="gpt2", seed=7)  # other weights in the same directory
    with pytest.raises(checkpoint.CheckpointError) as caught:
        sampler.load(moved, plugins_on, "cpu")
    said = str(caught.value)
    assert str(base) in said and recorded in said and "trained on" in said

    shutil.rmtree(base)
    with pytest.raises(checkpoint.CheckpointError, match=f"path='{base}' does not exist"):
        sampler.load(moved, plugins_on, "cpu")


def test_an_unknown_target_module_is_refused_listing_the_models_layers(gpt2_dir) -> None:
    with pytest.raises(ValueError, match="target_modules names 'q_proj'") as caught:
        adapted(gpt2_dir, target_modules=["q_proj"])
    assert "c_attn" in str(caught.value) and "c_fc" in str(caught.value)


@pytest.mark.parametrize(
    ("lora", "said"),
    [
        ({"r": 0}, "generator.lora.r=0 must be a whole number"),
        ({"r": 4, "rank": 8}, "generator.lora has no key rank"),
        ({"r": 4, "dropout": 1.5}, "generator.lora.dropout=1.5"),
    ],
)
def test_bad_lora_settings_say_which_key(gpt2_dir, lora, said) -> None:
    with pytest.raises(ValueError, match=said):
        HFCausalLM(path=str(gpt2_dir), lora=lora)


def test_merge_is_refused_for_a_whole_model(gpt2_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="merge=true is for a LoRA generator"):
        HFCausalLM(path=str(gpt2_dir)).export(tmp_path, format="hf", merge=True)
