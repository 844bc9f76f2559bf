"""Soak `genloom serve`: concurrency 32, 5% malformed requests, 5% clients that hang up.

    python benchmarks/serve_soak.py [--checkpoint RUN_DIR] [--duration 600] [--concurrency 32]

Without ``--checkpoint`` it serves a tiny text model with random weights (``text_debug``).

Starts `genloom serve` on a free loopback port, warms it up, then keeps ``--concurrency``
clients busy for ``--duration`` seconds (completions, half of them streamed). Prints one
JSON summary: requests answered, answers by status, RSS of the server at the start and
the end, and its growth. Only 200, 4xx for the malformed requests and 503 for overload are
acceptable; the test suite runs it for 30 s (tests/test_serve_checkpoints.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

MALFORMED = [
    b"{not json",
    b'{"model": "MODEL", "prompt": 5}',
    b'{"model": "MODEL", "prompt": "x", "max_tokens": -1}',
    b'{"model": "MODEL", "prompt": "x", "temperature": "hot"}',
    b'{"model": "nobody", "prompt": "x"}',
    b'{"model": "MODEL", "prompt": "x", "bogus_option": 1}',
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_loop(base: str, model: str, stop_at: float, seed: int, statuses: Counter, lock: threading.Lock,
                max_tokens: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=120) as client:
        while time.monotonic() < stop_at:
            roll = rng.random()
            try:
                if roll < 0.05:
                    body = rng.choice(MALFORMED).replace(b"MODEL", model.encode())
                    status = client.post("/v1/completions", content=body,
                                         headers={"content-type": "application/json"}).status_code
                elif roll < 0.10:  # a client that hangs up mid-stream
                    with client.stream("POST", "/v1/completions", json={
                            "model": model, "prompt": "Hang up ", "max_tokens": max_tokens, "stream": True,
                    }) as response:
                        status = response.status_code
                        if status == 200:
                            next(response.iter_lines())
                    status = f"{status} (hung up)"
                else:
                    stream = rng.random() < 0.5
                    body = {"model": model, "prompt": f"Request {rng.randrange(1000)}: ",
                            "max_tokens": rng.randint(1, max_tokens), "seed": rng.randrange(1 << 30),
                            "stream": stream}
                    if stream:
                        with client.stream("POST", "/v1/completions", json=body) as response:
                            status = response.status_code
                            last = ""
                            for line in response.iter_lines():
                                last = line or last
                            if status == 200 and last != "data: [DONE]":
                                status = "200 without [DONE]"
                    else:
                        status = client.post("/v1/completions", json=body).status_code
            except httpx.HTTPError as err:
                status = f"client error {type(err).__name__}"
            with lock:
                statuses[str(status)] += 1


def soak(checkpoint: str, duration: float, concurrency: int, max_tokens: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"genloom-soak-{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "genloom", "serve", f"checkpoint={checkpoint}", "serve.host=127.0.0.1",
         f"serve.port={port}", "device=cpu", f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"genloom serve exited: {process.stderr.read()}")
            try:
                model = httpx.get(f"{base}/v1/models", timeout=2).json()["data"][0]["id"]
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        # Warm up (first requests allocate the batch's cache and the allocator's pools).
        warm_stop = time.monotonic() + min(10.0, duration / 3)
        warm = Counter()
        lock = threading.Lock()
        threads = [threading.Thread(target=client_loop, args=(base, model, warm_stop, 10_000 + i, warm, lock,
                                                              max_tokens)) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss_start = rss_kib(process.pid)
        statuses: Counter = Counter()
        stop_at = time.monotonic() + duration
        threads = [threading.Thread(target=client_loop, args=(base, model, stop_at, i, statuses, lock,
                                                              max_tokens)) for i in range(concurrency)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # let the hung-up rows leave the batch
        rss_end = rss_kib(process.pid)
        health = httpx.get(f"{base}/health", timeout=10).json()
        return {
            "duration_s": round(elapsed, 1), "concurrency": concurrency,
            "requests": sum(statuses.values()), "by_status": dict(sorted(statuses.items())),
            "rss_start_mib": round(rss_start / 1024, 1), "rss_end_mib": round(rss_end / 1024, 1),
            "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
            "busy_after": health["models"][model]["busy"],
        }
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a text run directory to serve (default: a tiny random one)")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genloom-soak-") as tmp:
        checkpoint = args.checkpoint or str(tiny_checkpoint(Path(tmp)))
        print(json.dumps(soak(checkpoint, args.duration, args.concurrency, args.max_tokens)))


def tiny_checkpoint(directory: Path) -> Path:
    import torch
    from genloom import checkpoint, pipeline
    from genloom.testing import active_plugins, compose, load_only

    plugin_set = load_only(["genloom_text.plugin"])
    with active_plugins(plugin_set):
        config = compose(plugin_set, ["pipeline=text_debug"])
    torch.manual_seed(0)
    built = pipeline.build(config, plugin_set.registry, with_dataset=False)
    checkpoint.save(directory / "checkpoints", step=0, model=built.generator, config=config,
                    plugins=plugin_set.versions())
    return directory


if __name__ == "__main__":
    main()
