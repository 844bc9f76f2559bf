"""``genloom serve`` in the core, with the fake plugin: dynamic batching, seeds, limits.

The fake plugin's bigram model neither streams nor decodes step by step, so it is served
by the dynamic request batching engine; the text, image and audio models are exercised in
``test_serve_checkpoints.py``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi", reason="genloom serve needs the serve extra: pip install 'genloom[serve]'")

import httpx  # noqa: E402
from genloom.registry import RegistryError  # noqa: E402
from genloom.serve import server  # noqa: E402
from genloom.serve.app import Limits, ServeOptions, create_app  # noqa: E402
from genloom.serve.models import ServedModel  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from serving import make_checkpoint, running_app  # noqa: E402


@pytest.fixture
def counting(fake_plugins, tmp_path) -> ServedModel:
    run = make_checkpoint(fake_plugins, "counting", tmp_path / "run")
    return ServedModel("counting", run, fake_plugins, "cpu")


def test_a_seeded_request_returns_what_the_generator_gives_for_that_seed(counting) -> None:
    with running_app(create_app({"counting": counting})) as base:
        answer = httpx.post(f"{base}/v1/generate/counting", timeout=30,
                            json={"prompt": "3", "n": 3, "seed": 5, "max_new_tokens": 4}).json()
    rng = torch.Generator().manual_seed(5)
    with torch.inference_mode():
        rows = counting.generator.generate(3, condition=torch.tensor([3]), rng=rng, max_new_tokens=4)
    assert [o["text"] for o in answer["outputs"]] == [counting.decoder.decode(r) + "\n" for r in rows]
    assert answer["media_type"] == "text" and answer["seed"] == 5


def test_unseeded_requests_arriving_together_share_one_batch(counting) -> None:
    sizes = []
    original = counting.generator.generate

    def spy(n, **kwargs):  # noqa: ANN001, ANN202
        sizes.append(n)
        return original(n, **kwargs)

    counting.generator.generate = spy
    limits = Limits(batch_window_ms=300, max_batch=8)
    with running_app(create_app({"counting": counting}, ServeOptions(limits=limits))) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        def ask(_: int) -> int:
            return client.post("/v1/generate/counting", json={"prompt": "1"}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(ask, range(8))) == [200] * 8
    assert sum(sizes) == 8 and max(sizes) > 1


def test_a_full_queue_answers_503_and_wrong_routes_say_which_to_use(counting) -> None:
    release = threading.Event()
    original = counting.generator.generate

    def slow(n, **kwargs):  # noqa: ANN001, ANN202
        release.wait(10)
        return original(n, **kwargs)

    counting.generator.generate = slow
    limits = Limits(max_queue=1, max_batch=1)
    with running_app(create_app({"counting": counting}, ServeOptions(limits=limits))) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client.post, "/v1/generate/counting", json={"seed": i}) for i in range(4)]
            release_after = threading.Timer(1.0, release.set)
            release_after.start()
            statuses = sorted(f.result().status_code for f in futures)
        assert 503 in statuses and 200 in statuses
        wrong = client.post("/v1/completions", json={"model": "counting", "prompt": "1"})
        assert wrong.status_code == 400
        assert "use /v1/generate/counting" in wrong.json()["error"]["message"]


def test_settings_are_checked_before_anything_is_loaded() -> None:
    with pytest.raises(RegistryError, match="serve.host=0.0.0.0 is reachable from other machines"):
        server.serve_options({"host": "0.0.0.0", "port": 8000})
    assert server.serve_options({"host": "0.0.0.0", "port": 8000, "api_key": "k"}).api_key == "k"
    with pytest.raises(RegistryError, match=r"serve.threads=0 must be a number of threads \(1 or more\)"):
        server.serve_options({"host": "127.0.0.1", "port": 8000, "threads": 0})
    assert server.serving_threads(3) == 3 and server.serving_threads("auto") >= 1
    with pytest.raises(RegistryError, match="unknown serve settings serve.max_bach"):
        server.serve_options({"host": "127.0.0.1", "port": 8000, "max_bach": 3})
    with pytest.raises(RegistryError, match="nothing to serve"):
        server.model_paths(OmegaConf.create({"checkpoint": None, "models": None}))
    with pytest.raises(RegistryError, match="not both"):
        server.model_paths(OmegaConf.create({"checkpoint": "a", "models": {"b": "c"}}))
    named = server.model_paths(OmegaConf.create({"checkpoint": "outputs/train/day/12-00-00/checkpoints",
                                                 "models": None}))
    assert list(named) == ["12-00-00"]
