"""The ASGI layer in front of the routes: key, body size, concurrency limit, log line and counts.

Plain ASGI (not Starlette's BaseHTTPMiddleware): the routes keep the client's own `receive`,
through which they notice a client that has gone.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

from elmo_runtime.serve.inputs import ApiError

access_log = logging.getLogger("elmo_runtime.serve.access")

# Routes that queue work: the concurrency limit counts them, and the metrics label them.
WORK_ROUTES = {
    "/embed": "embed",
    "/embed_all": "embed_all",
    "/v1/embeddings": "openai",
    "/embeddings": "openai",
    "/tokenize": "tokenize",
}
OPENAI_PATHS = ("/v1/", "/embeddings")
OPEN_PATHS = ("/health", "/ping")
# A body over the limit is read and dropped (so the client gets its 413 instead of a reset
# connection) up to this many times the limit; beyond, the connection is closed.
DRAIN_FACTOR = 32


def error_body(path: str, status: int, message: str, field: str | None, kind: str) -> bytes:
    """The error in the dialect of the route: OpenAI's `{"error": {...}}` or TEI's `{"error", "error_type"}`."""
    if path.startswith(OPENAI_PATHS):
        body = {"error": {"message": message, "type": kind, "param": field, "code": status}}
    else:
        body = {"error": message, "error_type": kind}
    return json.dumps(body).encode()


class Guard:
    """Refuses what the settings forbid before a route sees it, and logs every request.

    Args:
        app: the ASGI app behind it.
        server: the `app.Server` (settings, metrics, in-flight count).
    """

    def __init__(self, app, server):
        self.app = app
        self.server = server
        key = server.settings.api_key
        self._expected = None if key is None else f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        route = WORK_ROUTES.get(path) if method == "POST" else None
        reply = {"status": 500}
        server = self.server

        async def send_status(message):
            if message["type"] == "http.response.start":
                reply["status"] = message["status"]
            await send(message)

        if route:
            server.metrics.request_count.labels(route).inc()
            _read_as_json(scope)
        try:
            refusal = self._refusal(scope, path, route)
            if refusal is None:
                body = await self._read_body(scope, receive)  # an ApiError past the payload limit
                if route:
                    server.in_flight += 1
                    server.metrics.in_flight.inc()
                try:
                    await self.app(scope, _replay(body, receive), send_status)
                finally:
                    if route:
                        server.in_flight -= 1
                        server.metrics.in_flight.dec()
            else:
                raise refusal
        except ApiError as e:
            scope.setdefault("state", {})["error"] = e.kind
            await _send_error(send_status, path, e)
        except asyncio.CancelledError:
            # The graceful timeout ran out at shutdown: the connection closes unanswered.
            scope.setdefault("state", {})["error"] = "shutdown"
            reply["status"] = 503
            raise
        finally:
            self._account(scope, route, reply["status"], time.perf_counter() - started)

    def _refusal(self, scope, path: str, route: str | None) -> ApiError | None:
        if self._expected is not None and not path.startswith(OPEN_PATHS) and scope["method"] != "OPTIONS":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                return ApiError(
                    401, "missing or wrong API key: send 'Authorization: Bearer <key>'", None, "authentication"
                )
        if route and self.server.in_flight >= self.server.settings.max_concurrent_requests:
            return ApiError(
                429,
                f"overloaded: {self.server.in_flight} requests in flight "
                f"(--max-concurrent-requests {self.server.settings.max_concurrent_requests}); "
                "retry later",
                None,
                "overloaded",
            )
        return None

    async def _read_body(self, scope, receive) -> bytes:
        """The whole body, or ApiError 413 past the payload limit (the rest read and dropped)."""
        limit = self.server.settings.payload_limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            # A client waiting for "100 Continue" has sent nothing yet: refuse before it does.
            if dict(scope["headers"]).get(b"expect", b"").lower() != b"100-continue":
                await _drain(receive, limit * DRAIN_FACTOR)
            raise _too_large(int(declared), limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await _drain(receive, limit * DRAIN_FACTOR)
                raise _too_large(size, limit)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _account(self, scope, route: str | None, status: int, seconds: float) -> None:
        metrics = self.server.metrics
        state = scope.get("state", {})
        if route:
            if 200 <= status < 300:
                metrics.request_success.labels(route).inc()
                metrics.durations["request"].observe(seconds)
            else:
                metrics.request_failure.labels(state.get("error", _error_kind(status))).inc()
        if not self.server.settings.access_log:
            return
        client = scope.get("client") or ("-", 0)
        line = {
            "client": f"{client[0]}:{client[1]}",
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "ms": round(seconds * 1000, 2),
        }
        for key in ("inputs", "tokens", "queue_ms", "inference_ms", "error"):
            if key in state:
                line[key] = state[key]
        if self.server.settings.json_output:
            access_log.info(json.dumps(line))
        else:
            extra = " ".join(f"{k}={line[k]}" for k in line if k not in ("client", "method", "path", "status", "ms"))
            access_log.info(
                '%s "%s %s" %d %.2fms%s',
                line["client"],
                line["method"],
                line["path"],
                status,
                line["ms"],
                f" {extra}" if extra else "",
            )


def _read_as_json(scope) -> None:
    """Bodies of the work routes are JSON whatever their content type says (`curl -d` sends a form type)."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    scope["headers"] = headers + [(b"content-type", b"application/json")]


def _replay(body: bytes, receive):
    """A `receive` that gives the body already read, then the client's own messages (its disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _drain(receive, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        budget -= len(message.get("body", b""))


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body has {size} bytes; this server takes at most {limit} (--payload-limit)",
        None,
        "payload_too_large",
    )


async def _send_error(send, path: str, error: ApiError) -> None:
    body = error_body(path, error.status, error.message, error.field, error.kind)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error_kind(status: int) -> str:
    return {
        401: "authentication",
        404: "not_found",
        413: "validation",
        422: "validation",
        429: "overloaded",
        499: "client_closed",
        503: "unhealthy",
    }.get(status, "backend")
