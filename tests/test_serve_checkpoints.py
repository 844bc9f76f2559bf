"""``genloom serve`` with real text, image and audio checkpoints (tiny, random weights).

These tests need the built-in plugins (``make setup`` installs them) and each skips with
the reason when its plugin is missing. Every server binds 127.0.0.1 on a free port and is
stopped at the end; every request loop is bounded.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from genloom import cli
from genloom.testing import only_plugins
from serving import chromium_page, make_checkpoint, running_app, serve_process, wait_healthy

pytest.importorskip("fastapi", reason="genloom serve needs the serve extra: pip install 'genloom[serve]'")
pytest.importorskip("genloom_text", reason="the text plugin (genloom-text) is not installed")
pytest.importorskip("genloom_image", reason="the image plugin (genloom-image) is not installed")
pytest.importorskip("genloom_audio", reason="the audio plugin (genloom-audio) is not installed")

from genloom.serve.app import Limits, ServeOptions, create_app  # noqa: E402
from genloom.serve.models import ServedModel  # noqa: E402

PLUGINS = ("genloom_text.plugin", "genloom_image.plugin", "genloom_audio.plugin")
KEY = "test-key-1234"
TIMEOUT = httpx.Timeout(60.0)


@pytest.fixture(scope="module")
def plugin_set():
    with only_plugins(PLUGINS) as plugin_set:
        yield plugin_set


@pytest.fixture(scope="module")
def checkpoints(plugin_set, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "story": make_checkpoint(plugin_set, "text_debug", root / "story", weight_std=0.5),
        "digits": make_checkpoint(plugin_set, "image_debug", root / "digits"),
        "notes": make_checkpoint(plugin_set, "audio_debug", root / "notes"),
    }


@pytest.fixture(scope="module")
def models(plugin_set, checkpoints) -> dict[str, ServedModel]:
    return {name: ServedModel(name, path, plugin_set, "cpu") for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def server(models):
    limits = Limits(max_n=8, max_tokens=256, max_prompt_chars=200, max_body_bytes=4096, max_batch=32)
    with running_app(create_app(models, ServeOptions(limits=limits))) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=TIMEOUT) as client:
        yield client


def completion(client: httpx.Client, **body: object) -> dict:
    response = client.post("/v1/completions", json={"model": "story", **body})
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error["message"]


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream, checking its framing."""
    text = response.read().decode()
    blocks = text.split("\n\n")
    assert blocks[-1] == "", "the stream must end with a blank line"
    payloads = []
    for block in blocks[:-1]:
        assert block.startswith("data: "), block
        payloads.append(block.removeprefix("data: "))
    return payloads


# -- routes ----------------------------------------------------------------------------------------


def test_models_lists_media_type_generator_step_and_options(client) -> None:
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert {k: v["media_type"] for k, v in data.items()} == {"story": "text", "digits": "image",
                                                             "notes": "audio"}
    story = data["story"]
    assert story["generator"] == "Transformer" and story["step"] == 3 and story["streaming"]
    assert {"max_new_tokens", "temperature", "top_k", "top_p", "stop"} <= set(story["options"])
    assert data["digits"]["options"] == {"temperature": {"type": "float", "default": 1.0}}


def test_health_and_metrics_answer(client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    completion(client, prompt="Hi", max_tokens=3, stream=False)
    text = client.get("/metrics").text
    for name in ("genloom_queue_depth", "genloom_batch_size", "genloom_generated_tokens_total",
                 "genloom_tokens_per_second", "genloom_time_to_first_token_seconds_bucket",
                 "genloom_request_latency_seconds_bucket"):
        assert name in text


def test_completion_counts_usage_and_says_why_it_finished(client) -> None:
    out = completion(client, prompt="Hello", max_tokens=7, temperature=0, n=2)
    assert out["object"] == "text_completion" and len(out["choices"]) == 2
    assert [c["finish_reason"] for c in out["choices"]] == ["length", "length"]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 14, "total_tokens": 19}


def test_streaming_is_openai_sse_ending_in_done(client) -> None:
    with client.stream("POST", "/v1/completions", json={
        "model": "story", "prompt": "Hello", "max_tokens": 6, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    }) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = sse_events(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 6 and chunks[-1]["choices"] == []
    text = "".join(c["choices"][0]["text"] for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert text == completion(client, prompt="Hello", max_tokens=6, temperature=0)["choices"][0]["text"]
    assert len(chunks) >= 4  # token by token, not all at once


def test_the_official_openai_client_works_unchanged(server) -> None:
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)
    assert {m.id for m in api.models.list()} == {"story", "digits", "notes"}
    done = api.completions.create(model="story", prompt="Once", max_tokens=5, temperature=0, seed=1)
    assert done.usage.completion_tokens == 5 and done.choices[0].finish_reason == "length"
    pieces = [c.choices[0].text for c in api.completions.create(
        model="story", prompt="Once", max_tokens=5, temperature=0, seed=1, stream=True) if c.choices]
    assert "".join(pieces) == done.choices[0].text
    images = api.images.generate(model="digits", prompt=None, n=2, response_format="b64_json",
                                 extra_body={"label": 3, "seed": 5})
    assert len(images.data) == 2 and base64.b64decode(images.data[0].b64_json)[:4] == b"\x89PNG"
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="nobody", prompt="x", max_tokens=1)


def test_images_are_pngs_and_a_seed_reproduces_them(client) -> None:
    from PIL import Image

    body = {"model": "digits", "label": 7, "n": 3, "seed": 11}
    first = client.post("/v1/images/generations", json=body).json()
    again = client.post("/v1/images/generations", json=body).json()
    assert first["data"] == again["data"] and len(first["data"]) == 3
    image = Image.open(io.BytesIO(base64.b64decode(first["data"][0]["b64_json"])))
    assert image.format == "PNG" and image.size == (8, 8)


def test_the_generic_route_answers_each_decoders_media(client) -> None:
    audio = client.post("/v1/generate/notes", json={"label": 2, "n": 2, "seed": 1}).json()
    assert audio["media_type"] == "audio"
    assert [o["content_type"] for o in audio["outputs"]] == ["audio/wav", "audio/wav"]
    assert base64.b64decode(audio["outputs"][0]["b64_json"])[:4] == b"RIFF"
    assert [g["name"] for g in audio["gallery"]] == ["spectrograms.png"]
    raw = client.post("/v1/generate/notes", json={"label": 2, "seed": 1, "response_format": "raw"})
    assert raw.headers["content-type"] == "audio/wav"
    one = client.post("/v1/generate/notes", json={"label": 2, "seed": 1}).json()
    assert raw.content == base64.b64decode(one["outputs"][0]["b64_json"])
    text = client.post("/v1/generate/story", json={"prompt": "Hi", "max_new_tokens": 4, "seed": 2}).json()
    assert text["outputs"][0]["content_type"].startswith("text/plain")
    same = completion(client, prompt="Hi", max_tokens=4, seed=2)["choices"][0]["text"]
    assert text["outputs"][0]["text"] == same
    image = client.post("/v1/generate/digits", json={"label": 1, "response_format": "raw"})
    assert image.headers["content-type"] == "image/png"


# -- batching guarantees --------------------------------------------------------------------------


def test_a_seeded_request_gives_the_same_tokens_alone_or_beside_thirty_others(client) -> None:
    def ask(i: int) -> str:
        return completion(client, prompt=f"Row {i}: ", max_tokens=12, temperature=1.0, top_k=40,
                          seed=100 + i)["choices"][0]["text"]

    alone = ask(0)
    with ThreadPoolExecutor(31) as pool:
        crowd = list(pool.map(ask, range(31)))
    assert crowd[0] == alone
    assert len(set(crowd)) > 20  # the rows really differ, so they could have been mixed up


def test_greedy_serving_equals_genloom_sample(client, checkpoints, tmp_path) -> None:
    served = completion(client, prompt="Once upon", max_tokens=20, temperature=0)["choices"][0]["text"]
    status = cli.main(["sample", f"checkpoint={checkpoints['story']}", "n=1", "prompt=Once upon",
                       "temperature=0", "max_new_tokens=20", "stream=false", "device=cpu",
                       f"hydra.run.dir={tmp_path}"])
    assert status == 0
    assert (tmp_path / "samples" / "sample_000.txt").read_text(encoding="utf-8") == served


# -- bad input and limits ----------------------------------------------------------------------


@pytest.mark.parametrize(("route", "body", "status", "says"), [
    ("/v1/completions", {"model": "nobody", "prompt": "x"}, 404, "'nobody' is not served here"),
    ("/v1/completions", {"model": "digits", "prompt": "x"}, 400, "answers image, not streamed text"),
    ("/v1/images/generations", {"model": "notes", "label": 1}, 400, "answers audio, not PNG images"),
    ("/v1/completions", {"model": "story", "prompt": "x", "bogus": 1}, 400,
     "does not take bogus; its sampling options are: compile, guidance, max_new_tokens, stop, temperature"),
    ("/v1/completions", {"model": "story", "prompt": "x", "top_k": "many"}, 400,
     "option 'top_k' of model 'story' must be int | None"),
    ("/v1/completions", {"model": "story", "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"model": "story", "prompt": "x", "top_k": 0}, 400, "top_k=0 must be at least 1"),
    ("/v1/completions", {"model": "story", "prompt": "x", "n": 9}, 400, "n=9 is more than 8 (serve.max_n)"),
    ("/v1/completions", {"model": "story", "prompt": "x", "max_tokens": 257}, 400,
     "max_tokens=257 is more than 256 (serve.max_tokens)"),
    ("/v1/completions", {"model": "story", "prompt": "x" * 201}, 400,
     "201 characters, more than 200 (serve.max_prompt_chars)"),
    ("/v1/completions", {"model": "story", "prompt": "x", "logprobs": 3}, 400, "'logprobs' is not supported"),
    ("/v1/completions", {"model": "story", "prompt": "x", "stop": ["a", "b"]}, 400, "one stop sequence"),
    ("/v1/images/generations", {"model": "digits", "label": 10}, 400, "label=10"),
    ("/v1/images/generations", {"model": "digits", "label": 1, "response_format": "url"}, 400,
     "response_format"),
    ("/v1/generate/nobody", {}, 404, "'nobody' is not served here"),
    ("/v1/generate/notes", {"label": 1, "n": 2, "response_format": "raw"}, 400, "set n=1"),
    # Found by schemathesis: a seed torch cannot hold once stopped the text model's engine thread.
    ("/v1/generate/story", {"seed": -204801416784023701313044873216, "label": 245}, 400, "seed"),
    ("/v1/completions", {"model": "story", "prompt": "x", "seed": 2**64}, 400, "seed"),
    ("/v1/images/generations", {"model": "digits", "label": 1, "seed": -1}, 400, "seed"),
])
def test_bad_requests_get_one_clear_openai_shaped_4xx(client, route, body, status, says) -> None:
    assert says in error_of(client.post(route, json=body), status)


def test_a_body_too_large_or_not_json_is_refused(client) -> None:
    big = client.post("/v1/completions", content=b'{"model": "story", "prompt": "' + b"x" * 5000 + b'"}',
                      headers={"content-type": "application/json"})
    assert "larger than 4096 bytes (serve.max_body_bytes)" in error_of(big, 413)
    broken = client.post("/v1/completions", content=b"{not json",
                         headers={"content-type": "application/json"})
    assert "invalid request" in error_of(broken, 400)


def test_an_api_key_guards_every_v1_route_but_not_health(models) -> None:
    with running_app(create_app(models, ServeOptions(api_key=KEY))) as base, \
            httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        assert "Bearer" in error_of(client.get("/v1/models"), 401)
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert error_of(wrong, 401)
        assert error_of(client.post("/v1/generate/notes", json={"label": 1}), 401)
        right = {"Authorization": f"Bearer {KEY}"}
        assert client.get("/v1/models", headers=right).status_code == 200
        assert client.get("/health").status_code == 200


def test_a_full_queue_answers_503_with_retry_after(models) -> None:
    limits = Limits(max_batch=1, max_queue=1)
    with running_app(create_app(models, ServeOptions(limits=limits))) as base, \
            httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        def ask(_: int) -> httpx.Response:
            return client.post("/v1/completions", json={"model": "story", "prompt": "x", "max_tokens": 60})

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(ask, range(6)))
        statuses = sorted(r.status_code for r in responses)
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
        full = next(r for r in responses if r.status_code == 503)
        assert full.headers["retry-after"] == "1" and "retry later" in error_of(full, 503)


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server, client) -> None:
    with client.stream("POST", "/v1/completions", json={
            "model": "story", "prompt": "x", "max_tokens": 256, "stream": True}) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 20
    busy = None
    while time.monotonic() < deadline:
        busy = client.get("/health").json()["models"]["story"]["busy"]
        if busy == 0:
            break
        time.sleep(0.05)
    assert busy == 0
    tokens = client.get("/metrics").text
    generated = next(float(line.split()[-1]) for line in tokens.splitlines()
                     if line.startswith('genloom_generated_tokens_total{model="story"}'))
    assert generated < 10_000  # sanity: the metric is a count


# -- the process: CLI, SIGTERM, schema fuzzing ------------------------------------------------------


@pytest.mark.slow
def test_sigterm_finishes_the_requests_in_flight_then_exits_zero(checkpoints, tmp_path) -> None:
    overrides = [f"models={{story: {checkpoints['story']}, digits: {checkpoints['digits']}}}", "device=cpu"]
    with serve_process(overrides, tmp_path) as (process, base):
        got: dict[str, object] = {}
        started = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", f"{base}/v1/completions", timeout=TIMEOUT, json={
                    "model": "story", "prompt": "x", "max_tokens": 60, "stream": True}) as response:
                lines = []
                for line in response.iter_lines():
                    started.set()
                    if line:
                        lines.append(line)
                got["lines"] = lines

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(30)
        process.send_signal(signal.SIGTERM)
        reader.join(60)
        assert process.wait(timeout=60) == 0
        assert got["lines"][-1] == "data: [DONE]" and len(got["lines"]) > 20
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health", timeout=2)


def test_binding_beyond_loopback_without_a_key_is_refused(checkpoints, tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "genloom", "serve", f"checkpoint={checkpoints['story']}",
         "serve.host=0.0.0.0", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )
    said = done.stdout + done.stderr
    assert done.returncode == 1
    assert "serve.host=0.0.0.0 is reachable from other machines: set an API key" in said
    assert "Traceback" not in said


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(server, tmp_path) -> None:
    pytest.importorskip("schemathesis")
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "20", "--max-time", "45",
         "--request-timeout", "60", "--no-color"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    summary = done.stdout[-3000:]
    (tmp_path / "schemathesis.txt").write_text(done.stdout)
    assert done.returncode == 0, summary
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert cases and cases[1] == cases[2] and int(cases[1]) > 50, summary
    assert "Missing test data" not in summary, summary


def test_serving_the_cli_way_matches_the_in_process_app(checkpoints, tmp_path) -> None:
    with serve_process([f"checkpoint={checkpoints['story']}", "device=cpu"], tmp_path) as (_, base):
        models = httpx.get(f"{base}/v1/models", timeout=TIMEOUT).json()["data"]
        assert [m["id"] for m in models] == ["story"]
        wait_healthy(base)


@pytest.mark.slow
def test_a_thirty_second_soak_answers_everything_and_holds_its_memory(checkpoints, tmp_path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_soak.py"
    done = subprocess.run(
        [sys.executable, str(script), "--checkpoint", str(checkpoints["story"]), "--duration", "30",
         "--concurrency", "32", "--max-tokens", "16"],
        capture_output=True, text=True, timeout=400, env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    (tmp_path / "soak.json").write_text(json.dumps(report, indent=2))
    allowed = {"200", "400", "404", "503", "200 (hung up)", "503 (hung up)"}
    assert set(report["by_status"]) <= allowed, report
    assert report["by_status"].get("200", 0) > 0 and report["by_status"].get("400", 0) > 0, report
    assert report["rss_growth_pct"] < 5, report
    assert report["busy_after"] == 0, report


# -- the web page, in a real browser --------------------------------------------------------------

@pytest.fixture(scope="module")
def browser_page():
    with chromium_page() as page:
        yield page


@pytest.mark.slow
def test_the_page_streams_text_shows_images_and_plays_audio(server, browser_page, tmp_path) -> None:
    try:
        use_the_page(browser_page, server, tmp_path)
    finally:
        browser_page.screenshot(path=str(tmp_path / "last.png"), full_page=True)


def use_the_page(page, server: str, tmp_path: Path) -> None:  # noqa: ANN001 - a Playwright page
    page.goto(server)
    page.wait_for_selector("#model option[value=story]", state="attached")

    page.select_option("#model", "story")
    page.fill("#prompt", "Once")
    page.fill("input[name=max_new_tokens]", "250")  # long enough to outlast the network's coalescing
    page.fill("input[name=temperature]", "0.8")
    # Record every length the text passes through while it streams in.
    page.evaluate("""() => {
        window.lengths = [];
        new MutationObserver(() => {
            const pre = document.querySelector('pre.text');
            if (pre) window.lengths.push(pre.textContent.length);
        }).observe(document.querySelector('#outputs'), {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#generate")
    page.wait_for_function("!document.querySelector('#generate').disabled")
    lengths = page.evaluate("window.lengths")
    # Piece by piece: partial texts were on the page before the last one. Two are the proof;
    # how many more depends on how a starved browser coalesces reads (at load 9 on 2 cores:
    # lengths [4, 6, 248]), so asking for more made the test fail on a busy machine.
    assert len(set(lengths)) >= 3, f"the text should arrive piece by piece, saw lengths {lengths}"
    assert page.text_content("pre.text").startswith("Once") and page.is_hidden("#error")

    page.select_option("#model", "digits")
    page.fill("#prompt", "")
    page.fill("#label", "3")
    page.fill("#n", "8")
    page.fill("#seed", "4")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#outputs .grid img').length === 8")
    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)

    page.select_option("#model", "notes")
    page.fill("#label", "5")
    page.fill("#n", "2")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#outputs audio').length === 2")
    assert page.eval_on_selector("#outputs audio", "a => a.src.startsWith('data:audio/wav;base64,')")
    page.wait_for_selector("#outputs .gallery img[alt='spectrograms.png']")

    page.select_option("#model", "digits")
    page.fill("#label", "99")
    page.fill("#n", "1")
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert "400: model 'digits'" in page.text_content("#error") and "label=99" in page.text_content("#error")
