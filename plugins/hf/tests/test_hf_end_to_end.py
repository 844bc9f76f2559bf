"""`genloom train`, `sample` and `serve` on pipeline=hf_text_debug, in-process, with a tiny GPT-2."""

import json

import httpx
import pytest
from genloom import cli
from genloom.testing import active_plugins, check_resume
from genloom_hf.tokenizer import HFTokenizer


@pytest.fixture(scope="module")
def plugins_on(hf_plugins):
    with active_plugins(hf_plugins):
        yield hf_plugins


def tiny(model_dir) -> list[str]:
    return [
        "pipeline=hf_text_debug",
        "trainer=debug",
        "trainer.progress=false",
        f"generator.path={model_dir}",
    ]


@pytest.fixture(scope="module")
def trained(plugins_on, gpt2_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    args = [
        "train",
        *tiny(gpt2_dir),
        "trainer.max_steps=12",
        "trainer.lr=3e-3",
        "trainer.log_every=1",
        "trainer.eval_every=12",
        "trainer.checkpoint_every=12",
        f"hydra.run.dir={run}",
    ]
    assert cli.main(args) == 0
    return run


def test_fine_tuning_lowers_the_loss(trained) -> None:
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3  # nats per token
    val = [r for r in records if r["split"] == "val"][-1]
    assert val["val_bits_per_byte"] < val["val_bits_per_token"]  # a token covers more than a byte


def test_sampling_a_checkpoint_streams_and_writes_what_it_streamed(
    trained, gpt2_dir, tmp_path, capsys
) -> None:
    args = [
        "sample",
        f"checkpoint={trained}",
        "n=2",
        'prompt="The "',
        "max_new_tokens=12",
        "temperature=0",
        "stop_at_eos=false",
        f"hydra.run.dir={tmp_path}",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    texts = [p.read_text() for p in sorted((tmp_path / "samples").glob("sample_*.txt"))]
    assert len(texts) == 2 and texts[0] == texts[1] and texts[0]  # greedy: identical
    assert "--- sample 0 ---\nThe " + texts[0] in out  # streamed as generated, after the prompt


def test_a_resumed_fine_tune_logs_exactly_the_uninterrupted_losses(plugins_on, gpt2_dir, tmp_path) -> None:
    overrides = [
        *tiny(gpt2_dir),
        "trainer.max_steps=3",
        "trainer.eval_every=100",
        "trainer.checkpoint_every=100",
    ]
    records = check_resume(plugins_on, overrides, stop_after=1, directory=tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]


def test_serving_streams_completions_equal_to_sampling(plugins_on, trained, gpt2_dir) -> None:
    pytest.importorskip("fastapi", reason="genloom serve needs the serve extra: pip install 'genloom[serve]'")
    import torch
    from genloom.serve.app import create_app
    from genloom.serve.models import ServedModel
    from serving import running_app

    model = ServedModel("tiny", trained, plugins_on, "cpu")
    assert model.streams  # continuous batching: /v1/completions
    body = {"model": "tiny", "prompt": "The ", "max_tokens": 8, "temperature": 0, "stop_at_eos": False}
    with running_app(create_app({"tiny": model})) as base, httpx.Client(base_url=base, timeout=60) as client:
        whole = client.post("/v1/completions", json=body).json()
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    streamed = "".join(c["choices"][0]["text"] for c in map(json.loads, events[:-1]) if c["choices"])
    prompt = HFTokenizer(path=str(gpt2_dir)).encode("The ")
    with torch.inference_mode():
        tokens = model.generator.generate(
            1, condition=prompt, temperature=0, max_new_tokens=8, stop_at_eos=False
        )
    expected = model.decoder.decode(tokens[0])
    assert whole["choices"][0]["text"] == streamed == expected
    assert whole["usage"]["completion_tokens"] == 8


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_tokenizer_with_a_chat_template_serves_chat_completions(plugins_on, gpt2_dir, tmp_path) -> None:
    pytest.importorskip("fastapi", reason="genloom serve needs the serve extra: pip install 'genloom[serve]'")
    import shutil

    import torch
    from genloom.interfaces import ChatEncoder
    from genloom.serve.app import create_app
    from genloom.serve.models import ServedModel
    from serving import make_checkpoint, running_app

    chat_dir = tmp_path / "chat-gpt2"
    shutil.copytree(gpt2_dir, chat_dir)
    (chat_dir / "chat_template.jinja").write_text(CHATML)
    run = make_checkpoint(
        plugins_on, "hf_text_debug", tmp_path / "run", overrides=[f"generator.path={chat_dir}"]
    )
    model = ServedModel("chatty", run, plugins_on, "cpu")
    encoder = model.loaded.pipeline.encoder
    assert isinstance(encoder, ChatEncoder) and model.chats
    messages = [{"role": "user", "content": "Hi there"}]
    prompt = encoder.encode_chat(messages)
    assert model.decoder.decode(prompt) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    body = {"model": "chatty", "messages": messages, "max_tokens": 6, "temperature": 0, "stop_at_eos": False}
    with running_app(create_app({"chatty": model})) as base:
        answer = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).json()
    with torch.inference_mode():
        tokens = model.generator.generate(
            1, condition=prompt, temperature=0, max_new_tokens=6, stop_at_eos=False
        )
    assert answer["choices"][0]["message"]["content"] == model.decoder.decode(tokens[0])
    plain = HFTokenizer(path=str(gpt2_dir))
    assert not isinstance(plain, ChatEncoder)  # no template, no chat route


def test_export_writes_a_directory_transformers_loads_with_the_same_logits(
    plugins_on, trained, tmp_path, capsys
) -> None:
    import torch
    from genloom import sampler
    from transformers import AutoModelForCausalLM

    out = tmp_path / "exported"
    assert (
        cli.main(["export", f"checkpoint={trained}", "format=hf", f"out={out}", f"hydra.run.dir={tmp_path}"])
        == 0
    )
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not list(out.glob("*.bin"))
    ours = sampler.load(trained, plugins_on, "cpu").pipeline.generator.eval()
    theirs = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    ids = HFTokenizer(path=str(out)).encode("The quick brown fox")[None]
    with torch.no_grad():
        assert torch.allclose(ours.model(input_ids=ids).logits, theirs(input_ids=ids).logits, atol=1e-5)
    refused = ["export", f"checkpoint={trained}", "format=hf", f"out={tmp_path / 'x'}", "merge=true"]
    assert cli.main([*refused, f"hydra.run.dir={tmp_path}"]) == 1
    said = capsys.readouterr()
    assert "merge=true is for a LoRA generator" in said.out + said.err
