"""The ASGI app: OpenAI-compatible routes, a generic media route, health, metrics, the page.

Routes (``docs/serving.md`` has examples of each):

* ``GET /v1/models``: the served models, their media type, generator, step and options;
* ``POST /v1/completions``: OpenAI's completions, for streaming models (SSE with ``stream``);
* ``POST /v1/chat/completions``: OpenAI's chat completions, for streaming models whose prompt
  encoder renders messages (:class:`genloom.interfaces.ChatEncoder`);
* ``POST /v1/images/generations``: OpenAI's image generations, for models whose decoder
  writes PNG files (``response_format: b64_json``);
* ``POST /v1/generate/{model}``: any model, answered with its decoder's files;
* ``GET /health``, ``GET /metrics`` (Prometheus), and the web page at ``/``.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from genloom.serve.engine import (
    BatchingEngine,
    ContinuousEngine,
    MediaRequest,
    MediaResult,
    Overloaded,
    RowSpec,
    TokenStream,
)
from genloom.serve.metrics import Metrics
from genloom.serve.models import BadRequest, MediaFile, ServedModel

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """What one request may ask for; beyond these the answer is a 4xx that says so."""

    max_n: int = 16
    max_tokens: int = 1024
    max_prompt_chars: int = 8192
    max_body_bytes: int = 1 << 20
    max_batch: int = 32
    max_queue: int = 64
    batch_window_ms: float = 5.0


@dataclass
class ServeOptions:
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)


# -- request bodies (FastAPI turns these into the OpenAPI schema) --------------------------------


# A request's rows are seeded seed, seed + 1, ...; torch's generators take 64 bits.
MAX_SEED = 2**62

class TextRequest(BaseModel):
    """What OpenAI's two text routes share; other keys are the generator's own sampling options."""

    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class CompletionRequest(TextRequest):
    """OpenAI's completion request."""

    prompt: str | list[str] = ""
    max_tokens: int | None = Field(default=16, ge=0)


class TextPart(BaseModel):
    """A part of a message's content; genloom's models read text only."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a conversation, as OpenAI's chat completions take it."""

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_input(self) -> dict[str, str]:
        """The message as a chat template reads it: content parts joined by newlines."""
        content = self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)
        message = {"role": self.role, "content": content}
        if self.name is not None:
            message["name"] = self.name
        return message


class ChatRequest(TextRequest):
    """OpenAI's chat completion request: ``max_completion_tokens`` or the older ``max_tokens``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)


class ImageRequest(BaseModel):
    """OpenAI's image generation request; ``label`` picks a class of a label-conditioned model."""

    model_config = ConfigDict(extra="allow")

    model: str
    prompt: str | None = None
    label: int | None = None
    n: int = Field(default=1, ge=1)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    response_format: Literal["b64_json"] = "b64_json"
    size: str | None = None


class GenerateRequest(BaseModel):
    """Any model: a prompt or a label, how many, a seed; other keys are the generator's options."""

    model_config = ConfigDict(extra="allow")

    prompt: str | None = None
    label: int | None = None
    n: int = Field(default=1, ge=1)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    response_format: Literal["json", "raw"] = "json"


# OpenAI keys that genloom does not implement: set to anything but their default, they are refused.
_UNSUPPORTED = ("suffix", "logprobs", "echo", "best_of", "logit_bias", "presence_penalty",
                "frequency_penalty", "quality", "style")
# And those only chat completions has (tools, structured output, log probabilities of a message).
_UNSUPPORTED_IN_CHAT = ("logprobs", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
                        "functions", "function_call", "response_format")


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class BodyLimit:
    """ASGI middleware: refuses a request body over ``max_bytes`` (413) and counts every answer.

    Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which relays every chunk of a
    streamed response through a task and a memory stream of its own: at one server-sent
    event per token that relay cost more than the events themselves.
    """

    def __init__(self, app: Any, *, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        status: dict[str, int] = {}

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                await self.too_big(scope, receive, counted)
            elif length is None and scope["method"] == "POST":  # a chunked body: read it, bounded
                body = bytearray()
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.max_bytes:
                        await self.too_big(scope, receive, counted)
                        return
                await self.app(scope, _replay(bytes(body), receive), counted)
            else:
                await self.app(scope, receive, counted)
        finally:
            if "code" in status:
                path = scope["path"]
                self.metrics.requests.labels(path.split("/")[2] if path.startswith("/v1/") else path,
                                             str(status["code"])).inc()

    async def too_big(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        response = JSONResponse(error_body(
            f"the request body is larger than {self.max_bytes} bytes (serve.max_body_bytes)",
            code="body_too_large"), status_code=413)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that gives ``body`` once, then the client's later messages."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def create_app(models: Mapping[str, ServedModel], options: ServeOptions | None = None) -> FastAPI:
    """The server for ``models`` (name -> model); engines start with the app and stop after it."""
    options = options or ServeOptions()
    limits = options.limits
    metrics = Metrics()
    engines: dict[str, ContinuousEngine | BatchingEngine] = {}
    state = {"draining": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name, model in models.items():
            if model.streams:
                engines[name] = ContinuousEngine(
                    model, max_batch=limits.max_batch, max_queue=limits.max_queue, metrics=metrics)
            else:
                engines[name] = BatchingEngine(
                    model, max_batch=limits.max_batch, max_queue=limits.max_queue,
                    window_s=limits.batch_window_ms / 1000, metrics=metrics)
        log.info("serving %s", ", ".join(f"{n} ({m.media_type})" for n, m in models.items()))
        yield
        state["draining"] = True
        for engine in engines.values():
            engine.close()
        for engine in engines.values():
            await asyncio.to_thread(engine.thread.join)
        engines.clear()

    app = FastAPI(title="genloom serve", version="1", lifespan=lifespan,
                  description="Serve genloom checkpoints: OpenAI-compatible text and images, any media.")
    app.state.engines = engines
    app.state.metrics = metrics
    if options.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, metrics=metrics)

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, err: BadRequest) -> JSONResponse:
        code = "model_not_found" if err.status == 404 else None
        return JSONResponse(error_body(str(err), param=err.param, code=code), status_code=err.status)

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, err: Overloaded) -> JSONResponse:
        return JSONResponse(error_body(f"{err}; retry later", kind="server_overloaded", code="overloaded"),
                            status_code=503, headers={"Retry-After": str(err.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"] if p != "body")
            problems.append(f"{where or 'body'}: {e['msg']}")
        first = err.errors()[0]["loc"][-1] if err.errors() else None
        return JSONResponse(error_body("invalid request: " + "; ".join(problems), param=str(first)),
                            status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        kind = "authentication_error" if err.status_code == 401 else "invalid_request_error"
        return JSONResponse(error_body(str(err.detail), kind=kind), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    async def authorized(request: Request) -> None:
        if options.api_key is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {options.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})

    def model_named(name: str) -> ServedModel:
        if name not in models:
            raise BadRequest(f"model {name!r} is not served here; served models: {', '.join(models)}",
                             param="model", status=404)
        return models[name]

    def check_common(model: ServedModel, body: BaseModel, n: int, prompts: list[str], *,
                     param: str = "prompt") -> dict[str, Any]:
        """The limits every route shares; returns the generator's own options from the body."""
        if n > limits.max_n:
            raise BadRequest(f"n={n} is more than {limits.max_n} (serve.max_n)", param="n")
        for prompt in prompts:
            if len(prompt) > limits.max_prompt_chars:
                raise BadRequest(f"{param}: {len(prompt)} characters, more than "
                                 f"{limits.max_prompt_chars} (serve.max_prompt_chars)", param=param)
        extra = dict(body.model_extra or {})
        for key in _UNSUPPORTED:
            value = extra.pop(key, None)
            if value not in (None, False, 0, 1) or (key == "best_of" and value not in (None, 1)):
                raise BadRequest(f"{key!r} is not supported by genloom serve", param=key)
        if model.streams and "max_new_tokens" in extra:
            check_tokens(extra["max_new_tokens"])
        return extra

    def check_tokens(value: Any, param: str = "max_tokens") -> None:
        if isinstance(value, int) and value > limits.max_tokens:
            raise BadRequest(f"{param}={value} is more than {limits.max_tokens} (serve.max_tokens)",
                             param=param)

    def seeds(seed: int | None, count: int) -> tuple[int, list[int]]:
        """A request's seed (drawn when not given) and each of its rows' (seed, seed + 1, ...)."""
        base = secrets.randbits(31) if seed is None else seed
        return base, [base + i for i in range(count)]

    async def media(model: ServedModel, body: ImageRequest | GenerateRequest, extra: dict[str, Any],
                    route: str) -> MediaResult:
        started = time.perf_counter()
        condition = model.condition(body.prompt, body.label)
        opts = model.sampling_options(extra)
        if model.streams:
            result = await streamed_media(model, body, condition, opts)
        else:
            future = engines[model.name].submit(MediaRequest(body.n, condition, opts, body.seed))
            result = await asyncio.wrap_future(future)
        metrics.latency.labels(model.name, route).observe(time.perf_counter() - started)
        return result

    async def streamed_media(model: ServedModel, body: GenerateRequest | ImageRequest, condition: Any,
                             opts: dict[str, Any]) -> MediaResult:
        base, row_seeds = seeds(body.seed, body.n)
        stream = TokenStream(asyncio.get_running_loop(), [RowSpec(condition, opts, s) for s in row_seeds])
        tokens = await collect(model, stream)
        items = [model.decoder.decode(ids) for _, ids in tokens]
        files, gallery = await asyncio.to_thread(model.files, items)
        return MediaResult(base, items, files, gallery)

    async def collect(model: ServedModel, stream: TokenStream) -> list[Any]:
        """Submit a stream and wait for all its rows; each row's tokens."""
        engines[model.name].submit(stream)
        done: dict[int, Any] = {}
        try:
            while len(done) < len(stream.rows):
                kind, row, value, _ = await stream.events.get()
                if kind == "error":
                    raise value
                if kind == "done":
                    done[row] = value
        finally:
            stream.cancel()
        return [done[i] for i in range(len(stream.rows))]

    def file_json(f: MediaFile) -> dict[str, Any]:
        out: dict[str, Any] = {"name": f.name, "content_type": f.content_type,
                               "b64_json": base64.b64encode(f.data).decode()}
        if f.content_type.startswith("text/"):
            out["text"] = f.data.decode("utf-8", errors="replace")
        return out

    # -- routes ----------------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "draining" if state["draining"] else "ok",
                "models": {name: {"busy": engine.busy} for name, engine in engines.items()}}

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [m.describe() for m in models.values()]}

    def text_options(model: ServedModel, body: TextRequest, extra: dict[str, Any],
                     max_tokens: int | None) -> dict[str, Any]:
        """The generator's options for a text route: OpenAI's keys in genloom's names, checked."""
        check_tokens(max_tokens)
        stop = body.stop
        if isinstance(stop, list):
            if len(stop) > 1:
                raise BadRequest("genloom serve takes one stop sequence; got "
                                 f"{len(stop)}", param="stop")
            stop = stop[0] if stop else None
        if stop == "":
            raise BadRequest("stop is empty; give the text to stop at, or leave it out", param="stop")
        wanted = {"max_new_tokens": max_tokens, "temperature": body.temperature,
                  "top_p": body.top_p, "stop": stop, **extra}
        return model.sampling_options({k: v for k, v in wanted.items() if v is not None})

    async def answer_text(model: ServedModel, body: TextRequest,
                          conditions: list[Any], opts: dict[str, Any], *, chat: bool,
                          ) -> dict[str, Any] | StreamingResponse:
        """Decode ``n`` rows per condition on the model's engine and answer in OpenAI's shape.

        The one body of both text routes: completions answer ``text``, chat completions a
        ``message`` (and ``delta`` chunks when streamed); all else (seeds, batching, usage,
        finish reasons, streaming, metrics) is shared.
        """
        route = "chat_completions" if chat else "completions"
        base, row_seeds = seeds(body.seed, len(conditions) * body.n)
        rows = [RowSpec(c, opts, row_seeds[i * body.n + j])
                for i, c in enumerate(conditions) for j in range(body.n)]
        prompt_tokens = sum(0 if r.condition is None else r.condition.numel() for r in rows[:: body.n])
        created = int(time.time())
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{secrets.token_hex(12)}"
        stream = TokenStream(asyncio.get_running_loop(), rows)
        started = time.perf_counter()

        def envelope(choices: list[dict[str, Any]], *, chunk: bool = False) -> dict[str, Any]:
            kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
            return {"id": ident, "object": kind, "created": created, "model": body.model,
                    "system_fingerprint": f"seed-{base}", "choices": choices}

        def choice(row: int, text: str, reason: str | None, *, chunk: bool = False) -> dict[str, Any]:
            if not chat:
                return {"index": row, "text": text, "logprobs": None, "finish_reason": reason}
            if chunk:
                return {"index": row, "delta": {"content": text} if text else {}, "logprobs": None,
                        "finish_reason": reason}
            return {"index": row, "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None, "finish_reason": reason}

        def usage(used: int) -> dict[str, int]:
            return {"prompt_tokens": prompt_tokens, "completion_tokens": used,
                    "total_tokens": prompt_tokens + used}

        if not body.stream:
            tokens = await collect(model, stream)
            choices = [choice(i, model.decoder.decode(ids), reason) for i, (reason, ids) in enumerate(tokens)]
            metrics.latency.labels(model.name, route).observe(time.perf_counter() - started)
            return {**envelope(choices), "usage": usage(sum(ids.numel() for _, ids in tokens))}

        engines[model.name].submit(stream)
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        # Wait for the first event before answering, so that an option the generator refuses
        # is a 400 rather than an error inside a 200 stream.
        first = await stream.events.get()
        if first[0] == "error":
            stream.cancel()
            raise first[2]

        def sse(payload: dict[str, Any]) -> str:
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            finished, used = 0, 0
            waiting = [first]
            stream_text: dict[int, str] = {}
            try:
                if chat:  # OpenAI's first chunk of each choice names the role, with no content yet
                    for row in range(len(rows)):
                        opening = {"index": row, "delta": {"role": "assistant", "content": ""},
                                   "logprobs": None, "finish_reason": None}
                        yield sse(envelope([opening], chunk=True))
                while finished < len(rows):
                    kind, row, value, count = waiting.pop() if waiting else await stream.events.get()
                    if kind == "error":
                        status = getattr(value, "status", 500)
                        kind_name = "invalid_request_error" if status < 500 else "server_error"
                        yield sse(error_body(str(value), kind=kind_name))
                        break
                    if kind == "text":
                        stream_text[row] = stream_text.get(row, "") + value
                        yield sse(envelope([choice(row, value, None, chunk=True)], chunk=True))
                        continue
                    reason, ids = value
                    finished += 1
                    used += count
                    # The decoder's whole text may hold a character the pieces still held back.
                    sent = stream_text.get(row, "")
                    whole = model.decoder.decode(ids)
                    rest = whole[len(sent):] if whole.startswith(sent) else ""
                    yield sse(envelope([choice(row, rest, reason, chunk=True)], chunk=True))
                if include_usage:
                    yield sse({**envelope([], chunk=True), "usage": usage(used)})
                yield "data: [DONE]\n\n"
                metrics.latency.labels(model.name, route).observe(time.perf_counter() - started)
            finally:
                stream.cancel()  # a client that went away frees its slots at the next step

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def text_model(name: str) -> ServedModel:
        model = model_named(name)
        if not model.streams:
            raise BadRequest(f"model {name!r} answers {model.media_type}, not streamed text; "
                             f"use /v1/generate/{name}", param="model")
        return model

    @app.post("/v1/completions", dependencies=[Depends(authorized)], response_model=None)
    async def completions(body: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        model = text_model(body.model)
        prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
        if not prompts:
            raise BadRequest("prompt is an empty list; give a string or a list of strings", param="prompt")
        extra = check_common(model, body, body.n, prompts)
        opts = text_options(model, body, extra, body.max_tokens)
        return await answer_text(model, body, [model.condition(p, None) for p in prompts], opts, chat=False)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)], response_model=None)
    async def chat_completions(body: ChatRequest) -> dict[str, Any] | StreamingResponse:
        model = text_model(body.model)
        if not model.chats:
            raise BadRequest(
                f"model {body.model!r} has no chat template: its prompt encoder "
                f"({type(model.loaded.pipeline.prompt_encoder).__name__}) does not render messages; "
                f"use /v1/completions with a prompt, or serve a model whose tokenizer has a chat template",
                param="model")
        for key in _UNSUPPORTED_IN_CHAT:  # before check_common, which lets logprobs=1 (True) pass
            if (body.model_extra or {}).get(key) not in (None, False, [], {}, {"type": "text"}):
                raise BadRequest(f"{key!r} is not supported by genloom serve's chat completions", param=key)
        messages = [m.as_template_input() for m in body.messages]
        extra = check_common(model, body, body.n, ["".join(m["content"] for m in messages)], param="messages")
        for key in _UNSUPPORTED_IN_CHAT:
            extra.pop(key, None)
        opts = text_options(model, body, extra, chat_tokens(model, body))
        return await answer_text(model, body, [model.chat_condition(messages)], opts, chat=True)

    def chat_tokens(model: ServedModel, body: ChatRequest) -> int:
        """``max_completion_tokens`` (or the older ``max_tokens``); unset, the generator's default
        up to serve.max_tokens, since a chat turn ends where the model ends it."""
        if body.max_tokens is not None and body.max_completion_tokens is not None \
                and body.max_tokens != body.max_completion_tokens:
            raise BadRequest(f"max_tokens={body.max_tokens} and max_completion_tokens="
                             f"{body.max_completion_tokens} disagree; give one of them",
                             param="max_completion_tokens")
        if body.max_completion_tokens is not None:
            check_tokens(body.max_completion_tokens, "max_completion_tokens")
            return body.max_completion_tokens
        if body.max_tokens is not None:
            return body.max_tokens
        spec = model.options.get("max_new_tokens")
        default = spec.default if spec is not None and isinstance(spec.default, int) else limits.max_tokens
        return min(default, limits.max_tokens)

    @app.post("/v1/images/generations", dependencies=[Depends(authorized)])
    async def images(body: ImageRequest) -> dict[str, Any]:
        model = model_named(body.model)
        extra = check_common(model, body, body.n, [body.prompt or ""])
        if body.size is not None:
            raise BadRequest("size is fixed by the model's training; leave it out", param="size")
        result = await media(model, body, extra, "images")
        if not all(f.content_type == "image/png" for f in result.files):
            raise BadRequest(f"model {body.model!r} answers {model.media_type}, not PNG images; "
                             f"use /v1/generate/{body.model}", param="model")
        return {"created": int(time.time()), "seed": result.seed,
                "data": [{"b64_json": base64.b64encode(f.data).decode()} for f in result.files]}

    @app.post("/v1/generate/{model_name}", dependencies=[Depends(authorized)], response_model=None)
    async def generate(model_name: str, body: GenerateRequest) -> dict[str, Any] | Response:
        model = model_named(model_name)
        extra = check_common(model, body, body.n, [body.prompt or ""])
        if body.response_format == "raw" and body.n != 1:
            raise BadRequest("response_format=raw answers one file: set n=1", param="n")
        result = await media(model, body, extra, "generate")
        if body.response_format == "raw":
            item = result.files[0]
            return Response(item.data, media_type=item.content_type,
                            headers={"X-Genloom-Seed": str(result.seed)})
        return {"model": model_name, "media_type": model.media_type, "seed": result.seed,
                "outputs": [file_json(f) for f in result.files],
                "gallery": [file_json(f) for f in result.gallery]}

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, with the served models' names as the values ``model`` may take."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            names = list(models)
            for component in ("CompletionRequest", "ChatRequest", "ImageRequest"):
                schema["components"]["schemas"][component]["properties"]["model"]["enum"] = names
            for param in schema["paths"]["/v1/generate/{model_name}"]["post"]["parameters"]:
                if param["name"] == "model_name":
                    param["schema"]["enum"] = names
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    web = resources.files("genloom.serve") / "web"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((web / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(packages=[("genloom.serve", "web")]), name="static")
    return app
