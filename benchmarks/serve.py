"""Serving throughput and latency: `genloom serve` against the usual ways of deploying a model.

One genloom Transformer per size is trained briefly (as in ``text_sample.py``) and its
weights are shared by every contender:

* ``genloom cb``: ``genloom serve`` with continuous batching (``serve.max_batch=64``);
* ``genloom off``: ``genloom serve`` with batching off (``serve.max_batch=1``);
* ``HF+FastAPI``: ``GPT2LMHeadModel.generate`` behind a minimal FastAPI app, one request
  at a time (``serve_hf_app.py``), the way such models are usually deployed;
* ``HF+FastAPI T``: the same with torch's threads set as ``genloom serve`` sets its own
  (``serve.threads=auto``: one fewer than the cores), so that the ratio to it shows what
  batching gives and not what the thread setting gives;
* ``HF serve cb``: ``transformers serve --continuous-batching``, transformers' own
  OpenAI-compatible server, on the same weights exported as a HF model directory with a
  byte-level tokenizer whose ids are genloom's (``hf_export.py``), offline, through the raw
  ``/v1/completions`` route (no chat template), streaming;
* ``HF generate_batch``: transformers' own continuous-batching engine, offline (no HTTP),
  when it runs here; otherwise the table says why.

At each concurrency C, C clients send one request each at the same moment (greedy, the
same ``--new-tokens`` for every request, a different prompt per client); a round ends when
all are answered. Rounds repeat ``--repeats`` times, interleaving the contenders; the tables
show medians: throughput (new tokens of all requests per second of the round), time to first
token (the first streamed event; HF+FastAPI does not stream, so its TTFT is its latency) and
request latency, p50 and p99. Greedy outputs are asserted equal across contenders.

    python benchmarks/serve.py                      # small and large, C = 1, 4, 16, 64, 256 tokens
    python benchmarks/serve.py --quick              # tiny, few tokens (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from genloom.serve.server import serving_threads

sys.path.insert(0, str(Path(__file__).parent))
from hf_export import export as export_hf  # noqa: E402
from text_sample import SIZES, trained_model  # noqa: E402
from text_train import cpu_name  # noqa: E402

PROMPT = "The with statement "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_checkpoint(model: torch.nn.Module, size_name: str, block_size: int, directory: Path) -> Path:
    from genloom import checkpoint
    from genloom.testing import active_plugins, compose, load_only

    plugin_set = load_only(["genloom_text.plugin"])
    size = SIZES[size_name]
    with active_plugins(plugin_set):
        config = compose(plugin_set, [
            "pipeline=text_debug", f"generator.n_layer={size.n_layer}", f"generator.n_head={size.n_head}",
            f"generator.n_embd={size.n_embd}", f"generator.block_size={block_size}", "generator.bias=true"])
    checkpoint.save(directory / "checkpoints", step=size.train_steps, model=model, config=config,
                    plugins=plugin_set.versions())
    return directory


def start(command: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               env=None if env is None else {**os.environ, **env})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise TimeoutError(f"{command} did not answer within 300 s")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


async def genloom_request(client: httpx.AsyncClient, model: str, prompt: str, tokens: int,
                          ) -> tuple[float, float, str]:
    started = time.perf_counter()
    first = None
    text = []
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                break
            if first is None:
                first = time.perf_counter() - started
            text.append(json.loads(data)["choices"][0]["text"])
    return first or 0.0, time.perf_counter() - started, "".join(text)


def hf_serve_command(hf_dir: Path, port: int, concurrency: int, block_size: int) -> list[str]:
    """``transformers serve`` with continuous batching on the CPU, the model preloaded from ``hf_dir``.

    Its paged KV cache is sized for ``concurrency`` requests of ``block_size`` tokens: left to
    itself on a CPU it takes 60 % of the free RAM, which takes minutes to allocate here.
    """
    cli = Path(sys.executable).with_name("transformers")
    pages = -(-block_size // 256)  # ContinuousBatchingConfig.page_size: 256 tokens per block
    return [str(cli), "serve", str(hf_dir), "--continuous-batching", "--device", "cpu", "--dtype", "float32",
            "--cb-num-blocks", str(concurrency * pages + 1),
            "--cb-max-batch-tokens", str(max(256, 32 * concurrency)),
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


HF_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # the model is a local directory


async def hf_request(client: httpx.AsyncClient, _: str, prompt: str, tokens: int) -> tuple[float, float, str]:
    started = time.perf_counter()
    response = await client.post("/generate", json={"prompt": prompt, "max_tokens": tokens})
    assert response.status_code == 200, response.text
    latency = time.perf_counter() - started
    return latency, latency, response.json()["text"]


async def round_(base: str, request, model: str, concurrency: int, tokens: int):  # noqa: ANN001, ANN201
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(3600.0),
                                 limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(request(client, model, f"{PROMPT}{i}: ", tokens)
                                         for i in range(concurrency)))
        wall = time.perf_counter() - started
    return wall, results


def generate_batch_round(hf_model: torch.nn.Module, concurrency: int, tokens: int):  # noqa: ANN201
    from transformers import GenerationConfig

    inputs = [list(f"{PROMPT}{i}: ".encode()) for i in range(concurrency)]
    config = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                              eos_token_id=None, pad_token_id=0, max_batch_tokens=max(256, concurrency * 32))
    started = time.perf_counter()
    with torch.inference_mode():
        outputs = hf_model.generate_batch(inputs=inputs, generation_config=config, progress_bar=False)
    wall = time.perf_counter() - started
    texts = []
    for out in sorted(outputs.values(), key=lambda o: int(str(o.request_id).rsplit("_", 1)[-1])):
        texts.append(bytes(out.generated_tokens).decode("utf-8", errors="replace"))
    return wall, [(float("nan"), float("nan"), t) for t in texts]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], choices=sorted(SIZES))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contenders", nargs="+", default=[
        "genloom cb", "genloom off", "HF+FastAPI", "HF+FastAPI T", "HF serve cb", "HF generate_batch"])
    parser.add_argument("--generate-batch-max-concurrency", type=int, default=4,
                        help="generate_batch is slow on a CPU: measure it up to this concurrency only")
    parser.add_argument("--hf-serve-max-concurrency", type=int, default=16,
                        help="transformers serve is slow on a CPU: measure it up to this concurrency only")
    parser.add_argument("--quick", action="store_true", help="tiny model, 8 tokens, C = 1 and 4, once")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.concurrency, args.new_tokens, args.repeats = ["tiny"], [1, 4], 8, 1
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"# genloom serve benchmark on {cpu_name()}, torch {torch.__version__}, "
          f"{args.new_tokens} new tokens per request, medians of {args.repeats}\n")
    for size_name in args.sizes:
        with tempfile.TemporaryDirectory(prefix="genloom-serve-bench-") as tmp:
            run(Path(tmp), size_name, args)


def run(tmp: Path, size_name: str, args: argparse.Namespace) -> None:
    block_size = 32 + args.new_tokens  # the prompt and every new token fit: no context overflow
    model = trained_model(SIZES[size_name], block_size)
    run_dir = save_checkpoint(model, size_name, block_size, tmp / "run")
    hf_model, hf_dir = None, tmp / "hf"
    if any(name.startswith("HF") for name in args.contenders):  # transformers: `make bench` installs it
        hf_model = export_hf(model, hf_dir)  # weights, byte-level tokenizer, generation config

    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    genloom = [sys.executable, "-m", "genloom", "serve", f"checkpoint={run_dir}", "device=cpu",
               "serve.max_tokens=4096", "serve.max_queue=256", f"hydra.run.dir={tmp / 'serve'}"]
    commands = {
        "genloom cb": [*genloom, "serve.max_batch=64"],
        "genloom off": [*genloom, "serve.max_batch=1"],
        "HF+FastAPI": [sys.executable, str(Path(__file__).parent / "serve_hf_app.py"), str(hf_dir)],
        "HF+FastAPI T": [sys.executable, str(Path(__file__).parent / "serve_hf_app.py"), str(hf_dir),
                         f"--threads={serving_threads('auto')}"],
    }
    problems: dict[str, str] = {}
    rows: dict[tuple[str, int], list[tuple[float, list]]] = {}
    try:
        for name in args.contenders:
            if name not in commands:
                continue
            port = free_port()
            extra = [str(port)] if name.startswith("HF+FastAPI") else [f"serve.port={port}"]
            process = start([*commands[name], *extra], port, tmp / f"{name}.log")
            servers[name] = (process, f"http://127.0.0.1:{port}")
        widest = max([c for c in args.concurrency if c <= args.hf_serve_max_concurrency], default=0)
        if "HF serve cb" in args.contenders and widest:
            port = free_port()
            try:
                command = hf_serve_command(hf_dir, port, widest, block_size)
                process = start(command, port, tmp / "HF serve cb.log", HF_OFFLINE)
                servers["HF serve cb"] = (process, f"http://127.0.0.1:{port}")
                # Its continuous-batching manager starts on the first request (with that request's
                # generation config): one request of the measured length starts it before the rounds.
                base = f"http://127.0.0.1:{port}"
                asyncio.run(round_(base, genloom_request, str(hf_dir), 1, args.new_tokens))
            except Exception as err:  # noqa: BLE001 - a peer that cannot run here is reported, as below
                problems["HF serve cb"] = f"{type(err).__name__}: {str(err)[-200:]}".replace("\n", " ")
        for _ in range(args.repeats):
            for concurrency in args.concurrency:
                for name in args.contenders:
                    if name in problems:
                        continue
                    if name == "HF generate_batch" and concurrency > args.generate_batch_max_concurrency:
                        continue
                    if name == "HF serve cb" and concurrency > args.hf_serve_max_concurrency:
                        continue
                    try:
                        if name == "HF generate_batch":
                            result = generate_batch_round(hf_model, concurrency, args.new_tokens)
                        else:
                            request = hf_request if name.startswith("HF+FastAPI") else genloom_request
                            served = str(hf_dir) if name == "HF serve cb" else "run"
                            result = asyncio.run(round_(servers[name][1], request, served, concurrency,
                                                        args.new_tokens))
                    except Exception as err:  # noqa: BLE001 - a peer that cannot run here is reported
                        problems[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
                        continue
                    rows.setdefault((name, concurrency), []).append(result)
    finally:
        for process, _ in servers.values():
            stop(process)
    report(size_name, SIZES[size_name], args, rows, problems)


def report(size_name, size, args, rows, problems) -> None:  # noqa: ANN001
    print(f"## {size_name}: {size.n_layer} layers, {size.n_head} heads, width {size.n_embd}\n")
    print("| contender | C | tok/s | TTFT p50 | TTFT p99 | latency p50 | latency p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    reference: dict[int, list[str]] = {}
    for concurrency in args.concurrency:
        for name in args.contenders:
            if (name, concurrency) not in rows:
                continue
            runs = rows[(name, concurrency)]
            texts = [t for _, _, t in runs[0][1]]
            expected = reference.setdefault(concurrency, texts)
            assert texts == expected, f"{name} at C={concurrency}: greedy outputs differ from the others"
            throughput = statistics.median(len(r) * args.new_tokens / wall for wall, r in runs)
            ttft = [x[0] for _, r in runs for x in r]
            latency = [x[1] for _, r in runs for x in r]

            def ms(v: float) -> str:
                return "n/a" if v != v else f"{v * 1000:.0f} ms"

            print(f"| {name} | {concurrency} | {throughput:.0f} | {ms(percentile(ttft, .5))} | "
                  f"{ms(percentile(ttft, .99))} | {ms(percentile(latency, .5))} | "
                  f"{ms(percentile(latency, .99))} |")
    for name, why in problems.items():
        print(f"| {name} | - | could not run here: {why} | | | | |")
    print()
    for concurrency in args.concurrency:
        for peer in ("HF+FastAPI", "HF+FastAPI T", "HF serve cb"):
            cb, hf = rows.get(("genloom cb", concurrency)), rows.get((peer, concurrency))
            if cb and hf:
                rate = [statistics.median(len(r) / w for w, r in runs) for runs in (cb, hf)]
                print(f"C={concurrency}: continuous batching gives {rate[0] / rate[1]:.1f}x the throughput "
                      f"of {peer}")
    print()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
