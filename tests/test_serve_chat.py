"""``/v1/chat/completions`` through the official ``openai`` client, on a tiny text Transformer.

The chat model is the text plugin's debug Transformer (random weights) whose encoder is
the fake ``chat_bytes`` (a real :class:`genloom.interfaces.ChatEncoder`: ChatML over bytes),
so the core's route is tested without the Hugging Face plugin. A plain byte model beside
it has no chat template. Every server binds 127.0.0.1 on a free port and is stopped.
"""

from __future__ import annotations

import httpx
import pytest
from genloom.testing import active_plugins, load_only
from serving import chromium_page, make_checkpoint, running_app

pytest.importorskip("fastapi", reason="genloom serve needs the serve extra: pip install 'genloom[serve]'")
pytest.importorskip("genloom_text", reason="the text plugin (genloom-text) is not installed")
openai = pytest.importorskip("openai")

from fake_plugin.chat import chatml  # noqa: E402
from genloom.serve.app import Limits, ServeOptions, create_app  # noqa: E402
from genloom.serve.models import ServedModel  # noqa: E402

CONVERSATION = [{"role": "system", "content": "You count."},
                {"role": "user", "content": "One, two,"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    plugin_set = load_only({"text": "genloom_text.plugin", "fake_chat": "fake_plugin.chat_hooks"})
    root = tmp_path_factory.mktemp("chat")
    with active_plugins(plugin_set):
        runs = {"chatty": make_checkpoint(plugin_set, "text_debug", root / "chatty",
                                          overrides=["encoder=chat_bytes"], weight_std=0.5),
                "story": make_checkpoint(plugin_set, "text_debug", root / "story", weight_std=0.5)}
        models = {name: ServedModel(name, run, plugin_set, "cpu") for name, run in runs.items()}
    limits = Limits(max_n=4, max_tokens=64, max_prompt_chars=300)
    with running_app(create_app(models, ServeOptions(limits=limits))) as base:
        yield base


@pytest.fixture(scope="module")
def api(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_say_which_chat(api) -> None:
    chats = {m.id: m.model_extra["chat"] for m in api.models.list()}
    assert chats == {"chatty": True, "story": False}


def test_a_chat_answer_is_the_completion_of_the_rendered_conversation(api) -> None:
    chat = api.chat.completions.create(model="chatty", messages=CONVERSATION, max_tokens=6,
                                       temperature=0, seed=1)
    plain = api.completions.create(model="chatty", prompt=chatml(CONVERSATION), max_tokens=6,
                                   temperature=0, seed=1)
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage.prompt_tokens == len(chatml(CONVERSATION).encode()) == plain.usage.prompt_tokens
    assert chat.usage.completion_tokens == 6
    newer = api.chat.completions.create(model="chatty", messages=CONVERSATION, max_completion_tokens=6,
                                        temperature=0, seed=1)
    assert newer.choices[0].message.content == chat.choices[0].message.content


def test_streaming_sends_deltas_that_add_up_to_the_answer(api) -> None:
    whole = api.chat.completions.create(model="chatty", messages=CONVERSATION, max_tokens=8,
                                        temperature=0)
    chunks = list(api.chat.completions.create(model="chatty", messages=CONVERSATION, max_tokens=8,
                                              temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert len(with_choices) >= 4  # token by token, not all at once
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == whole.choices[0].message.content
    assert with_choices[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_n_choices_are_seeded_and_reproducible(api) -> None:
    def ask() -> list[str]:
        done = api.chat.completions.create(model="chatty", messages=CONVERSATION, max_tokens=8, n=3,
                                           temperature=1.0, seed=7)
        assert [c.index for c in done.choices] == [0, 1, 2]
        return [c.message.content for c in done.choices]

    first = ask()
    assert ask() == first and len(set(first)) > 1


def test_content_parts_are_joined_as_text(api) -> None:
    parts = [{"type": "text", "text": "One,"}, {"type": "text", "text": "two,"}]
    joined = [{"role": "user", "content": "One,\ntwo,"}]
    ask = {"model": "chatty", "max_tokens": 4, "temperature": 0}
    by_parts = api.chat.completions.create(messages=[{"role": "user", "content": parts}], **ask)
    assert by_parts.choices[0].message.content == api.chat.completions.create(
        messages=joined, **ask).choices[0].message.content


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"model": "story"}, 400, "model 'story' has no chat template: its prompt encoder (ByteTokenizer)"),
    ({"model": "nobody"}, 404, "'nobody' is not served here"),
    ({"model": "chatty", "messages": [{"role": "user", "content": "hi"},
                                      {"role": "assistant", "content": "yo"}]},
     400, "ends with the assistant's message"),
    ({"model": "chatty", "messages": []}, 400, "messages"),
    ({"model": "chatty", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": "chatty", "messages": [{"role": "user", "content": "x" * 301}]}, 400,
     "messages: 301 characters, more than 300 (serve.max_prompt_chars)"),
    ({"model": "chatty", "max_tokens": 65}, 400, "max_tokens=65 is more than 64 (serve.max_tokens)"),
    ({"model": "chatty", "max_completion_tokens": 65}, 400, "max_completion_tokens=65 is more than 64"),
    ({"model": "chatty", "max_tokens": 3, "max_completion_tokens": 4}, 400, "disagree"),
    ({"model": "chatty", "n": 5}, 400, "n=5 is more than 4 (serve.max_n)"),
    ({"model": "chatty", "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "'tools' is not supported"),
    ({"model": "chatty", "logprobs": True}, 400, "'logprobs' is not supported"),
    ({"model": "chatty", "bogus": 1}, 400, "does not take bogus"),
    ({"model": "chatty", "stop": ["a", "b"]}, 400, "one stop sequence"),
])
def test_bad_chat_requests_get_one_clear_openai_shaped_error(server, body, status, says) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **body}
    answer = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and says in error["message"]


def test_the_openai_client_raises_its_own_errors(api) -> None:
    with pytest.raises(openai.BadRequestError, match="has no chat template"):
        api.chat.completions.create(model="story", messages=CONVERSATION, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="nobody", messages=CONVERSATION, max_tokens=2)


def test_chat_latency_has_its_own_metric_label(server, api) -> None:
    api.chat.completions.create(model="chatty", messages=CONVERSATION, max_tokens=1)
    metrics = httpx.get(f"{server}/metrics", timeout=30).text
    assert 'genloom_request_latency_seconds_count{model="chatty",route="chat_completions"}' in metrics


@pytest.fixture(scope="module")
def browser_page():
    with chromium_page() as page:
        yield page


@pytest.mark.slow
def test_the_page_holds_a_conversation(server, api, browser_page, tmp_path) -> None:
    try:
        hold_a_conversation(browser_page, server, api)
    finally:
        browser_page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)


def hold_a_conversation(page, server: str, api) -> None:  # noqa: ANN001 - a Playwright page, an OpenAI client
    page.goto(server)
    page.wait_for_selector("#model option[value=chatty]", state="attached")
    page.select_option("#model", "chatty")
    assert page.is_visible("#chat-box") and page.is_disabled("#n")
    page.fill("input[name=max_new_tokens]", "5")
    page.fill("input[name=temperature]", "0")
    said: list[dict[str, str]] = []
    for message in ("One, two,", "three?"):
        page.fill("#prompt", message)
        page.click("#generate")
        page.wait_for_function("!document.querySelector('#generate').disabled")
        said.append({"role": "user", "content": message})
        answer = api.chat.completions.create(model="chatty", messages=said, max_tokens=5, temperature=0)
        said.append({"role": "assistant", "content": answer.choices[0].message.content})
    assert page.is_hidden("#error")
    assert page.locator(".turn pre").all_text_contents() == [m["content"] for m in said]
    assert page.input_value("#prompt") == ""
    page.click("#new-chat")
    assert page.locator(".turn").count() == 0
    page.select_option("#model", "story")
    assert page.is_hidden("#chat-box") and not page.is_disabled("#n")
