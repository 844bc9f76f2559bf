"""Chat completions end to end: a tiny Llama whose directory has a chat template, served.

The same conversation through the official ``openai`` client and through transformers
(``apply_chat_template`` then greedy ``generate``) gives the same prompt and the same
answer. Nothing is downloaded: the model is random, written into a temporary directory.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from genloom.interfaces import ChatEncoder
from genloom.testing import active_plugins
from genloom_hf.tokenizer import hf_tokenizer

pytest.importorskip("fastapi", reason="genloom serve needs the serve extra: pip install 'genloom[serve]'")
openai = pytest.importorskip("openai")
transformers = pytest.importorskip("transformers")

from genloom.serve.app import create_app  # noqa: E402
from genloom.serve.models import ServedModel  # noqa: E402
from serving import make_checkpoint, running_app  # noqa: E402

# Llama-2's layout over the tiny model's own special tokens.
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)
MESSAGES = [{"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "The name of the module that parses arguments?"}]
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def chat_dir(llama_dir, tmp_path_factory):
    """The session's tiny Llama with a chat template added."""
    directory = tmp_path_factory.mktemp("tiny-llama-chat") / "model"
    shutil.copytree(llama_dir, directory)
    (directory / "chat_template.jinja").write_text(TEMPLATE)
    return directory


def test_a_broken_default_template_leaves_the_model_without_chat_but_a_named_one_fails(
        chat_dir, tmp_path, caplog) -> None:
    assert isinstance(hf_tokenizer(path=str(chat_dir)), ChatEncoder)
    broken = tmp_path / "broken"
    shutil.copytree(chat_dir, broken)
    (broken / "chat_template.jinja").write_text("{% for message in messages %}")
    encoder = hf_tokenizer(path=str(broken))  # a fine-tune and completions still work
    assert not isinstance(encoder, ChatEncoder) and encoder.encode("hi").numel() > 0
    assert "chat_template.jinja is not a valid Jinja template" in caplog.text
    assert "served without /v1/chat/completions" in caplog.text
    with pytest.raises(ValueError, match="has no chat template named 'tool_use'; it has: default"):
        hf_tokenizer(path=str(chat_dir), chat_template="tool_use")


def test_the_openai_client_chats_with_a_local_model_as_transformers_would(hf_plugins, chat_dir,
                                                                          tmp_path) -> None:
    with active_plugins(hf_plugins):
        run = make_checkpoint(hf_plugins, "hf_text_debug", tmp_path / "run",
                              overrides=[f"generator.path={chat_dir}"])
        model = ServedModel("chat", run, hf_plugins, "cpu")
    assert model.chats
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_dir, local_files_only=True)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    reference = transformers.AutoModelForCausalLM.from_pretrained(chat_dir, local_files_only=True)
    with torch.inference_mode():
        out = reference.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                 do_sample=False)
    expected = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)

    with running_app(create_app({"chat": model})) as base:
        api = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.model_extra["chat"] for m in api.models.list()] == [True]
        ask = {"model": "chat", "messages": MESSAGES, "max_completion_tokens": NEW_TOKENS,
               "temperature": 0, "extra_body": {"stop_at_eos": False}}
        done = api.chat.completions.create(**ask)
        streamed = [c.choices[0].delta.content or "" for c in api.chat.completions.create(**ask, stream=True)
                    if c.choices]
    assert done.usage.prompt_tokens == len(prompt)
    assert done.usage.completion_tokens == NEW_TOKENS and done.choices[0].finish_reason == "length"
    assert done.choices[0].message.content == "".join(streamed) == expected
