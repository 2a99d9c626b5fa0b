"""The HTTP routes: TEI's (`/embed`, `/embed_all`, `/tokenize`, `/info`, `/health`, `/metrics`) and
OpenAI's (`/v1/embeddings`, `/embeddings`, `/v1/models`), over one `Elmo` and its `Batcher`.

Sentence vectors (`/embed`, the OpenAI routes) are the mean over a sentence's tokens of a
layer mix: the server's `--layers` (default "average", the mean of all layers), or a
request's `layers` field. Vectors are unit length unless a request sends `normalize: false`
(as TEI's `/embed` and OpenAI's embeddings are).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from contextlib import asynccontextmanager
from typing import Any, Literal, Optional

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from elmo_runtime.serve.batcher import Batcher
from elmo_runtime.serve.guard import Guard, error_body
from elmo_runtime.serve.inputs import (
    ApiError,
    base64_of,
    normalized,
    npy_bytes,
    read_inputs,
    read_layers,
    token_spans,
    tokens_used,
)
from elmo_runtime.serve.metrics import Metrics
from elmo_runtime.serve.settings import ServeSettings

log = logging.getLogger(__name__)

NPY = "application/x-npy"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI's embeddings request; `layers` and `normalize` are this server's extensions."""

    model_config = ConfigDict(extra="ignore")  # what other OpenAI clients add is not ours to refuse
    input: Any
    model: Optional[StrictStr] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[StrictInt] = None
    user: Optional[StrictStr] = None
    layers: Any = None
    normalize: StrictBool = True


class EmbedRequest(_Strict):
    """TEI's `/embed` request, plus `layers` and `pool`."""

    inputs: Any
    normalize: StrictBool = True
    truncate: StrictBool = False
    truncation_direction: Literal["right", "left", "Right", "Left"] = "right"
    prompt_name: Optional[StrictStr] = None
    layers: Any = None
    pool: Literal["mean"] = "mean"


class EmbedAllRequest(_Strict):
    """TEI's `/embed_all` request, plus `layers` ("all" too), `return_tokens`, `encoding_format`, `dtype`."""

    inputs: Any
    truncate: StrictBool = False
    truncation_direction: Literal["right", "left", "Right", "Left"] = "right"
    prompt_name: Optional[StrictStr] = None
    layers: Any = None
    return_tokens: StrictBool = False
    encoding_format: Literal["float", "base64"] = "float"
    dtype: Literal["float32", "float16"] = "float32"


class TokenizeRequest(_Strict):
    """TEI's `/tokenize` request (`add_special_tokens` accepted; ELMo's boundaries are not tokens)."""

    inputs: Any
    add_special_tokens: StrictBool = True
    prompt_name: Optional[StrictStr] = None


class Server:
    """What the routes share: the model, the batcher, the settings, the counters.

    Args:
        elmo: the loaded `Elmo`.
        settings: the `ServeSettings`.
        info: extra `/info` entries (package sha256, load time, versions).
    """

    def __init__(self, elmo, settings: ServeSettings, info: dict):
        self.elmo = elmo
        self.settings = settings
        self.model_id = settings.model_id or str(settings.package)
        self.info = info
        self.metrics = Metrics(getattr(elmo, "token_cache", None))
        self.metrics.load_seconds.set(info.get("load_seconds", 0.0))
        self.batcher: Batcher | None = None
        self.in_flight = 0
        self.ready = False
        self.default_layers = read_layers(settings.layers, "--layers", elmo.num_layers, allow_all=False)

    def inputs(self, value, name: str, truncate: bool = False, direction: str = "right") -> list[list[str]]:
        s = self.settings
        return read_inputs(
            value,
            name,
            self.elmo.tokenizer,
            max_inputs=s.max_client_batch_size,
            max_tokens=s.max_input_tokens,
            truncate=truncate,
            left=direction.lower() == "left",
        )

    def layers(self, value, allow_all: bool = False):
        return self.default_layers if value is None else read_layers(value, "layers", self.elmo.num_layers, allow_all)

    async def embed(self, request: Request, token_lists: list[list[str]], layers, pool: str | None) -> list[np.ndarray]:
        """Queue the inputs, wait for their arrays; a client that leaves takes its job out of the queue."""
        value, key = layers
        job = self.batcher.submit(token_lists, value, pool, (key, pool))
        self.metrics.queue_size.set(len(self.batcher))
        gone = asyncio.ensure_future(_disconnect(request))
        try:
            await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # uvicorn cancels what is still in flight when --graceful-timeout runs out: a job still
            # queued then must not run (and hold the exit) for a client that gets no answer.
            self.batcher.cancel(job)
            raise
        finally:
            gone.cancel()
        if not job.future.done():
            self.batcher.cancel(job)
            job.future.cancel()
            raise ApiError(499, "the client closed the connection", None, "client_closed")
        state = request.state
        state.queue_ms, state.inference_ms = round(job.queue_time * 1000, 2), round(job.inference_time * 1000, 2)
        self.metrics.durations["queue"].observe(job.queue_time)
        self.metrics.durations["inference"].observe(job.inference_time)
        error = job.future.exception()
        if error is not None:  # logged by the batcher; TEI's status for a failed backend
            raise ApiError(424, f"the model failed on this request: {error}", None, "backend")
        self.metrics.embed_count.inc(len(token_lists))
        return job.future.result()

    def note_inputs(self, request: Request, token_lists: list[list[str]], seconds: float) -> None:
        request.state.inputs, request.state.tokens = len(token_lists), tokens_used(token_lists)
        request.state.tokenization_s = seconds
        self.metrics.durations["tokenization"].observe(seconds)
        for tokens in token_lists:
            self.metrics.input_length.observe(len(tokens))

    def headers(self, request: Request, started: float) -> dict[str, str]:
        """TEI's timing headers (milliseconds; compute = tokenization + the batch's inference)."""
        state = request.state
        compute_ms = getattr(state, "tokenization_s", 0.0) * 1000 + getattr(state, "inference_ms", 0.0)
        return {
            "x-compute-time": f"{compute_ms:.2f}",
            "x-compute-type": self.elmo.providers[0].replace("ExecutionProvider", "").lower(),
            "x-compute-tokens": str(getattr(state, "tokens", 0)),
            "x-total-time": f"{(time.perf_counter() - started) * 1000:.2f}",
            "x-tokenization-time": f"{getattr(state, 'tokenization_s', 0.0) * 1000:.2f}",
            "x-queue-time": str(getattr(state, "queue_ms", 0.0)),
            "x-inference-time": str(getattr(state, "inference_ms", 0.0)),
        }


async def _disconnect(request: Request) -> None:
    """Returns when the client has closed the connection (the body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _json(content: object, headers: dict | None = None, status: int = 200) -> Response:
    """`content` as JSON; arrays in it as lists of numbers.

    orjson writes a float32 (float16) array's numbers in their shortest form that reads back as the
    same float32 (float16): the vectors' exact values, in half the characters of Python's float64
    repr, and about 30 times faster to write (150 -> 5 us for a 256-dim vector: at 32 clients on
    2 cores the server's event loop spent 28% of its time in `json.dumps`).
    """
    body = orjson.dumps(content, default=_array_list, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status, headers, media_type="application/json")


def _array_list(value: object) -> object:
    # What orjson leaves to us: arrays it does not write itself (not C-contiguous) and numpy scalars.
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _wants_npy(request: Request) -> bool:
    return NPY in request.headers.get("accept", "")


async def _tokenized(server: Server, request: Request, value, name: str, truncate=False, direction="right"):
    started = time.perf_counter()
    token_lists = server.inputs(value, name, truncate, direction)
    server.note_inputs(request, token_lists, time.perf_counter() - started)
    return token_lists


def create_app(elmo, settings: ServeSettings, info: dict | None = None) -> FastAPI:
    """The ASGI app serving `elmo` under `settings` (`elmo-serve` runs it on uvicorn).

    Args:
        elmo: a loaded `Elmo`, verified already (`/health` says ready once the app has started).
        settings: limits and options.
        info: extra entries for `/info` (`cli.load` fills in the package's sha256 and versions).
    """
    server = Server(elmo, settings, info or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.batcher = Batcher(
            elmo.embed,
            settings.max_batch_tokens,
            settings.max_batch_requests,
            settings.max_wait_ms,
            settings.batch_tokens,
            server.metrics.batch,
            settings.workers,
        )
        server.batcher.start()
        server.ready = True
        yield
        server.ready = False
        await server.batcher.stop()

    app = FastAPI(
        title="elmo-serve",
        version=str(server.info.get("version") or "unknown"),  # FastAPI requires one
        lifespan=lifespan,
        description="ELMo embeddings over HTTP: text-embeddings-inference and OpenAI routes.",
    )
    app.state.server = server
    _add_error_handlers(app)
    _add_openai_routes(app, server)
    _add_tei_routes(app, server)
    _add_info_routes(app, server)
    app.add_middleware(Guard, server=server)
    if settings.cors_allow_origin:
        from starlette.middleware.cors import CORSMiddleware

        # Added last, so outermost: preflights and the headers of refusals (401, 429) get CORS too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origin),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            expose_headers=["x-compute-time", "x-total-time", "x-queue-time", "x-inference-time"],
        )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def reply(request: Request, status: int, message: str, field: str | None, kind: str) -> Response:
        request.state.error = kind
        return Response(
            error_body(request.url.path, status, message, field, kind), status, media_type="application/json"
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return reply(request, e.status, e.message, e.field, e.kind)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        field = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message = f"the body is not valid JSON ({first.get('ctx', {}).get('error', first.get('msg'))})"
            field = None
        elif field is None:
            message = f"the body must be a JSON object ({first.get('msg')})"
        else:
            message = f"{field}: {first.get('msg')}"
        return reply(request, 422, message, field, "validation")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        message = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return reply(request, e.status_code, message, None, "not_found" if e.status_code == 404 else "validation")


def _add_openai_routes(app: FastAPI, server: Server) -> None:
    elmo = server.elmo

    async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request):
        started = time.perf_counter()
        if body.dimensions is not None and body.dimensions != elmo.dim:
            raise ApiError(
                422,
                f"dimensions is {body.dimensions}; this model's vectors have {elmo.dim} (leave it out)",
                "dimensions",
            )
        layers = server.layers(body.layers)
        token_lists = await _tokenized(server, request, body.input, "input")
        vectors = await server.embed(request, token_lists, layers, "mean")
        data = []
        for i, v in enumerate(vectors):
            v = normalized(v) if body.normalize else v
            data.append(
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64_of(v) if body.encoding_format == "base64" else v,
                }
            )
        used = tokens_used(token_lists)
        return _json(
            {
                "object": "list",
                "data": data,
                "model": server.model_id,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            },
            server.headers(request, started),
        )

    app.post("/v1/embeddings", summary="OpenAI embeddings")(openai_embeddings)
    app.post("/embeddings", summary="OpenAI embeddings (without /v1)")(openai_embeddings)


def _add_tei_routes(app: FastAPI, server: Server) -> None:
    _add_tei_embed_routes(app, server)
    _add_tei_tokenize_route(app, server)


def _add_tei_embed_routes(app: FastAPI, server: Server) -> None:
    @app.post("/embed", summary="Sentence vectors (TEI)")
    async def embed(body: EmbedRequest, request: Request):
        started = time.perf_counter()
        _no_prompt(body.prompt_name)
        layers = server.layers(body.layers)
        token_lists = await _tokenized(server, request, body.inputs, "inputs", body.truncate, body.truncation_direction)
        vectors = await server.embed(request, token_lists, layers, body.pool)
        if body.normalize:
            vectors = [normalized(v) for v in vectors]
        headers = server.headers(request, started)
        if _wants_npy(request):
            return Response(npy_bytes(np.stack(vectors)), headers=headers, media_type=NPY)
        return _json(vectors, headers)

    @app.post("/embed_all", summary="Token vectors and their tokens (TEI, extended)")
    async def embed_all(body: EmbedAllRequest, request: Request):
        started = time.perf_counter()
        _no_prompt(body.prompt_name)
        layers = server.layers(body.layers, allow_all=True)
        token_lists = await _tokenized(server, request, body.inputs, "inputs", body.truncate, body.truncation_direction)
        arrays = await server.embed(request, token_lists, layers, None)
        headers = server.headers(request, started)
        if _wants_npy(request):
            headers["x-input-lengths"] = ",".join(str(len(t)) for t in token_lists)
            joined = np.concatenate(arrays, axis=-2).astype(body.dtype)  # tokens of every input, in order
            return Response(npy_bytes(joined), headers=headers, media_type=NPY)
        if body.encoding_format == "base64":
            return _json(
                [
                    {"tokens": t, "shape": list(a.shape), "dtype": body.dtype, "embedding": base64_of(a, body.dtype)}
                    for t, a in zip(token_lists, arrays)
                ],
                headers,
            )
        values = [a.astype(body.dtype) for a in arrays]
        if body.return_tokens:
            return _json([{"tokens": t, "embedding": v} for t, v in zip(token_lists, values)], headers)
        return _json(values, headers)


def _add_tei_tokenize_route(app: FastAPI, server: Server) -> None:
    elmo = server.elmo

    @app.post("/tokenize", summary="ELMo's tokens with their character offsets (TEI)")
    async def tokenize(body: TokenizeRequest, request: Request):
        _no_prompt(body.prompt_name)
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(422, "inputs must be a string or a non-empty list of strings", "inputs")
        if len(texts) > server.settings.max_client_batch_size:
            raise ApiError(
                413,
                f"inputs has {len(texts)} inputs; at most {server.settings.max_client_batch_size} "
                "per request (--max-client-batch-size)",
                "inputs",
            )
        if elmo.tokenizer is None:
            raise ApiError(422, "this package's model expects pre-tokenized input; it has no tokenizer", "inputs")
        out = []
        for text in texts:
            tokens = elmo.tokenizer(text)
            out.append(
                [
                    {"id": None, "text": t, "special": False, "start": a, "stop": b}
                    for t, (a, b) in zip(tokens, token_spans(text, tokens))
                ]
            )
        return _json(out)


def _no_prompt(prompt_name: str | None) -> None:
    if prompt_name is not None:
        raise ApiError(422, "prompt_name is not supported: ELMo packages have no prompts", "prompt_name")


def _add_info_routes(app: FastAPI, server: Server) -> None:
    elmo, s = server.elmo, server.settings

    @app.get("/info", summary="The model, its package and the server's limits")
    async def info():
        manifest = elmo.manifest
        return _json(
            {
                "model_id": server.model_id,
                "model_type": {"embedding": {"pooling": "mean"}},
                "precision": manifest.precision,
                "dim": elmo.dim,
                "layers": elmo.num_layers,
                "default_layers": s.layers,
                "state": elmo.default_state,
                "providers": elmo.providers,
                "package": str(manifest.directory),
                **server.info,
                "max_concurrent_requests": s.max_concurrent_requests,
                "max_input_length": s.max_input_tokens,
                "max_batch_tokens": s.max_batch_tokens,
                "max_batch_requests": s.max_batch_requests,
                "max_client_batch_size": s.max_client_batch_size,
                "payload_limit": s.payload_limit,
                "max_wait_ms": s.max_wait_ms,
                "python": platform.python_version(),
            }
        )

    @app.get("/v1/models", summary="OpenAI's model list: the one model served")
    async def models():
        return _json(
            {
                "object": "list",
                "data": [
                    {
                        "id": server.model_id,
                        "object": "model",
                        "created": int(server.info.get("loaded_at", 0)),
                        "owned_by": "elmo-onnx",
                    }
                ],
            }
        )

    @app.get("/health", summary="200 once the package is verified and its conformance vectors pass")
    async def health():
        if server.ready:
            return _json({"status": "ok"})
        return _json({"status": "unavailable"}, status=503)

    app.get("/ping", include_in_schema=False)(health)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        server.metrics.queue_size.set(len(server.batcher) if server.batcher else 0)
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(server.metrics.render(), media_type=CONTENT_TYPE_LATEST)
