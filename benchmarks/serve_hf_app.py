"""The way such models are usually deployed: HF ``generate`` behind a minimal FastAPI app.

    python benchmarks/serve_hf_app.py HF_MODEL_DIR PORT [--threads N]

One request at a time (a lock around ``generate``: concurrent ``generate`` calls on one
CPU model only fight over the cores), greedy, token ids in and out (the model is
byte-level, like genloom's bytes encoder). ``benchmarks/serve.py`` starts and stops it.
"""

from __future__ import annotations

import argparse
import asyncio

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import GPT2LMHeadModel


class Request(BaseModel):
    prompt: str
    max_tokens: int


def create(model_dir: str) -> FastAPI:
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    lock = asyncio.Lock()
    app = FastAPI()

    def generate(prompt: str, max_tokens: int) -> str:
        ids = torch.tensor([list(prompt.encode("utf-8"))])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 min_new_tokens=max_tokens, do_sample=False, use_cache=True, pad_token_id=0)
        return bytes(out[0, ids.shape[1]:].tolist()).decode("utf-8", errors="replace")

    @app.post("/generate")
    async def route(request: Request) -> dict:
        async with lock:
            text = await asyncio.to_thread(generate, request.prompt, request.max_tokens)
        return {"text": text}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("port", type=int)
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (torch's default otherwise)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(create(args.model_dir), host="127.0.0.1", port=args.port, log_level="warning")
