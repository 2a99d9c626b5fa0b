"""AWS Lambda handler: embed the sentences of a request with an ELMo package.

Request (a direct invocation, or the JSON body of an API Gateway / function URL request):

    {"sentences": ["The cat sat on the mat.", "Hi!"], "layers": "average", "pool": "mean"}

`layers` is "top", "average" (default) or an output layer index; `pool` is "mean" (default: one
vector per sentence) or null (one vector per token). Response, API Gateway shaped:

    {"statusCode": 200, "headers": {...}, "body": "{\"vectors\": [[...], ...], \"tokens\": [...], ...}"}

A bad request gets statusCode 400 and {"error": "..."} naming the problem.

The package: `ELMO_PACKAGE` (default "default", the int8 package shipped inside the runtime, so
the image needs nothing else). A catalog name or `hf:owner/repo` is downloaded on the cold start
into `/tmp/elmo-onnx` (the only writable place on Lambda; `ELMO_ONNX_CACHE` moves it), verified,
and reused by every warm invocation of that instance. A package baked into the image is a path.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time

log = logging.getLogger(__name__)

MAX_SENTENCES = 256  # per request: bounds the time and memory of one invocation
MAX_CHARACTERS = 100_000
LAYERS = ("top", "average")


@functools.lru_cache(maxsize=1)
def model():
    """The `Elmo` of this instance, loaded on its first request (the cold start) and kept."""
    os.environ.setdefault("ELMO_ONNX_CACHE", "/tmp/elmo-onnx")
    from elmo_runtime import Elmo

    started = time.perf_counter()
    elmo = Elmo(os.environ.get("ELMO_PACKAGE", "default"), device="cpu")
    log.info("loaded %r in %.2f s", elmo, time.perf_counter() - started)
    return elmo


class BadRequest(ValueError):
    """What the caller sent cannot be embedded; the message says why."""


def parse(event: dict) -> tuple[list[str], str | int, str | None]:
    """(sentences, layers, pool) from a direct or an HTTP event."""
    if not isinstance(event, dict):
        raise BadRequest("the event is not a JSON object")
    if "body" in event:  # API Gateway or a function URL
        body = event["body"] or ""
        if event.get("isBase64Encoded"):
            import base64

            body = base64.b64decode(body).decode("utf-8")
        try:
            event = json.loads(body)
        except ValueError as e:
            raise BadRequest(f"the body is not JSON: {e}") from None
        if not isinstance(event, dict):
            raise BadRequest("the body is not a JSON object")
    sentences = event.get("sentences")
    if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
        raise BadRequest("'sentences' must be a non-empty list of strings")
    if len(sentences) > MAX_SENTENCES:
        raise BadRequest(f"{len(sentences)} sentences: at most {MAX_SENTENCES} per request")
    if sum(map(len, sentences)) > MAX_CHARACTERS:
        raise BadRequest(f"more than {MAX_CHARACTERS} characters in one request")
    layers = event.get("layers", "average")
    if not (layers in LAYERS or (type(layers) is int)):
        raise BadRequest(f"'layers' is {layers!r}: use 'top', 'average' or a layer index")
    pool = event.get("pool", "mean")
    if pool not in ("mean", None):
        raise BadRequest(f"'pool' is {pool!r}: use 'mean' or null")
    return sentences, layers, pool


def respond(status: int, body: dict) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def handler(event: dict, context: object = None) -> dict:
    """The Lambda entry point."""
    try:
        sentences, layers, pool = parse(event)
    except BadRequest as e:
        return respond(400, {"error": str(e)})
    elmo = model()  # a misconfigured package raises: Lambda reports it as the function's error
    try:
        vectors, tokens = elmo.embed(sentences, layers=layers, pool=pool, return_tokens=True)
    except (ValueError, IndexError) as e:  # e.g. a layer index this model does not have
        return respond(400, {"error": str(e)})
    return respond(
        200,
        {
            "vectors": [v.tolist() for v in vectors],
            "tokens": tokens,
            "dim": elmo.dim,
            "layers": layers,
            "pool": pool,
            "package": os.environ.get("ELMO_PACKAGE", "default"),
            "precision": elmo.manifest.precision,
        },
    )
