"""`elmo-serve`: the real server in its own process on 127.0.0.1, called by the `openai` package and httpx.

The central promise: every vector a server answers equals, bit for bit, `Elmo.embed` of that
input alone in this process, however the server batched it with other clients' requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from serve_process import ROOT, Served, free_port  # noqa: E402

from elmo_runtime import Elmo  # noqa: E402
from elmo_runtime.serve.inputs import normalized  # noqa: E402

KEY = "test-key-0123"
SENTENCES = [
    "The cat sat on the mat.",
    "Hi!",
    "Zürich ist schön, and Ω is omega.",
    "Don't stop believing, Mr. Smith -- it's 5 p.m. already...",
    " ".join(f"word{i % 13}" for i in range(60)),  # longer than most: padding in any batch
    "x",
    "Emoji 😀 here, and a URL: https://example.org/a?b=c.",
    "The quick brown fox jumps over the lazy dog.",
    "A sentence with a " + "v" * 60 + " very long token.",
    "The cat sat on the mat.",  # a repeat: the token cache is warm for it
]
TOKENIZED = [["<S>", "boundary", "</S>"], ["A", "", "b"], ["pre", "tokenized", "input", "."]]


@pytest.fixture(scope="module")
def tiny_int8(exported):
    return exported("tiny", "int8")


def serve(tmp_path_factory, package, *args) -> Served:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    return Served(package, *args, log=log).wait_ready()


def _expected_sentence_vector(elmo: Elmo, sentence, layers, normalize: bool) -> np.ndarray:
    vector = _alone(elmo, sentence, layers, "mean")
    return normalized(vector) if normalize else vector


_ALONE: dict = {}


def _alone(elmo: Elmo, sentence, layers, pool) -> np.ndarray:
    """`Elmo.embed` of one sentence alone in this process (computed once per sentence and options)."""
    key = (id(elmo), json.dumps(sentence), json.dumps(layers), pool)
    if key not in _ALONE:
        _ALONE[key] = elmo.embed([sentence], layers=layers, pool=pool)[0]
    return _ALONE[key]


def _decode_b64(text: str, dtype=np.float32) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


# -- the promise: dynamic batching never changes a vector --------------------------------------


def _mixed_request(i: int, url: str, client, elmo: Elmo) -> int:
    """Request `i` of a mixed load: a route and options chosen by `i`; asserts its answer; returns 1."""
    sentence = SENTENCES[i % len(SENTENCES)]
    kind = i % 5
    if kind == 0:  # the openai package (it asks for base64 and decodes it)
        batch = [sentence, SENTENCES[(i + 3) % len(SENTENCES)]]
        got = client.embeddings.create(input=batch, model="elmo")
        for text, item in zip(batch, got.data):
            want = _expected_sentence_vector(elmo, text, "average", True)
            assert np.array_equal(np.asarray(item.embedding, np.float32), want), text
    elif kind == 1:  # OpenAI route, JSON floats, another layer mix, not normalized
        r = httpx.post(
            f"{url}/v1/embeddings",
            json={"input": sentence, "encoding_format": "float", "layers": "top", "normalize": False},
            headers=_auth(),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        want = _expected_sentence_vector(elmo, sentence, "top", False)
        assert np.array_equal(np.asarray(r.json()["data"][0]["embedding"], np.float32), want)
    elif kind == 2:  # TEI /embed, weights as the layer mix
        weights = [0.25, 0.5, 0.25]
        r = httpx.post(
            f"{url}/embed",
            json={"inputs": [sentence], "layers": weights, "normalize": False},
            headers=_auth(),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        want = _expected_sentence_vector(elmo, sentence, weights, False)
        assert np.array_equal(np.asarray(r.json()[0], np.float32), want)
    elif kind == 3:  # token vectors of every layer, base64, pre-tokenized input
        tokens = TOKENIZED[i % len(TOKENIZED)]
        r = httpx.post(
            f"{url}/embed_all",
            json={"inputs": [tokens], "layers": "all", "encoding_format": "base64"},
            headers=_auth(),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        item = r.json()[0]
        want = _alone(elmo, tokens, "all", None)
        assert item["tokens"] == tokens and item["shape"] == list(want.shape)
        assert np.array_equal(_decode_b64(item["embedding"]).reshape(want.shape), want)
    else:  # token vectors as .npy, raw text
        r = httpx.post(
            f"{url}/embed_all",
            json={"inputs": sentence},
            headers={**_auth(), "Accept": "application/x-npy"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        want = _alone(elmo, sentence, "average", None)
        assert np.array_equal(np.load(io.BytesIO(r.content)), want)
    return 1


def _auth() -> dict:
    return {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize("which", ["fp32 tiny", "int8 shipped default"])
def test_every_response_is_bit_identical_to_embedding_that_input_alone(which, tiny_package, tmp_path_factory):
    package = tiny_package if which == "fp32 tiny" else None  # None: elmo-serve's default, the shipped package
    # The shipped package also with two batches at a time on two model threads.
    workers = ["--workers", "2"] if package is None else []
    server = serve(tmp_path_factory, package, "--api-key", KEY, "--max-wait-ms", "5", "--threads", "1", *workers)
    try:
        elmo = Elmo(tiny_package if package else "default", device="cpu", threads=1)
        _ALONE.clear()  # a fresh Elmo could reuse an old one's id
        info = httpx.get(f"{server.url}/info", headers=_auth()).json()
        assert info["precision"] == elmo.manifest.precision == ("fp32" if package else "int8")
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        requests = 120
        with ThreadPoolExecutor(12) as pool:  # 12 clients at once, each request checked as it comes
            answered = sum(pool.map(lambda i: _mixed_request(i, server.url, client, elmo), range(requests)))
        assert answered == requests
        # The load was batched: fewer batches than requests, some holding several requests.
        batches = server.metric("elmo_batch_next_size_count", _auth())
        assert 0 < batches < requests
        assert server.metric("elmo_batch_next_size_sum", _auth()) == requests
        assert server.metric('elmo_request_success_total{method="openai"}', _auth()) == requests * 2 / 5
    finally:
        assert server.stop() == 0


# -- routes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tiny_package, tmp_path_factory):
    """A server on the tiny package with a key, CORS for one origin and small client limits."""
    server = serve(
        tmp_path_factory,
        tiny_package,
        "--api-key",
        KEY,
        "--cors-allow-origin",
        "https://app.example",
        "--max-client-batch-size",
        "4",
        "--model-id",
        "tiny-elmo",
    )
    yield server
    assert server.stop() == 0


def test_openai_client_usage_dimensions_and_models(guarded, elmo):
    client = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=KEY, max_retries=0)
    texts = ["The cat sat on the mat.", "Hi!"]
    got = client.embeddings.create(input=texts, model="tiny-elmo", encoding_format="float", dimensions=elmo.dim)
    assert [d.index for d in got.data] == [0, 1] and got.model == "tiny-elmo"
    assert (
        got.usage.prompt_tokens
        == got.usage.total_tokens
        == sum(len(t) for t in elmo.embed(texts, return_tokens=True)[1])
    )
    assert all(len(d.embedding) == elmo.dim for d in got.data)
    assert abs(float(np.linalg.norm(got.data[0].embedding)) - 1.0) < 1e-6  # unit length, as OpenAI's
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.embeddings.create(input="Hi", model="tiny-elmo", dimensions=elmo.dim // 2)
    assert e.value.body["param"] == "dimensions"
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-elmo"]
    raw = httpx.post(f"{guarded.url}/embeddings", json={"input": "Hi!"}, headers=_auth())  # TEI's alias, without /v1
    assert raw.status_code == 200 and len(raw.json()["data"][0]["embedding"]) == elmo.dim


def test_info_health_metrics_docs_tokenize(guarded, tiny_package, elmo):
    info = httpx.get(f"{guarded.url}/info", headers=_auth()).json()
    assert info["package_sha256"] == hashlib.sha256((tiny_package / "elmo.json").read_bytes()).hexdigest()
    assert (info["dim"], info["layers"], info["max_client_batch_size"]) == (elmo.dim, elmo.num_layers, 4)
    assert info["conformance"]["passed"] is True and info["conformance"]["layer_checks"] > 0
    assert httpx.get(f"{guarded.url}/health").status_code == 200  # no key needed: a probe
    metrics = httpx.get(f"{guarded.url}/metrics", headers=_auth()).text
    for name in (
        "elmo_request_count",
        "elmo_queue_size",
        "elmo_batch_next_tokens",
        "elmo_request_queue_duration",
        "elmo_request_inference_duration",
        "elmo_request_input_length",
        "elmo_token_cache_hits",
    ):
        assert f"# TYPE {name}" in metrics, name
    assert "/embed_all" in httpx.get(f"{guarded.url}/openapi.json", headers=_auth()).json()["paths"]
    assert "swagger" in httpx.get(f"{guarded.url}/docs", headers=_auth()).text.lower()
    text = "Don't stop, Mr. Smith."
    tokens = httpx.post(f"{guarded.url}/tokenize", json={"inputs": text}, headers=_auth()).json()[0]
    assert [t["text"] for t in tokens] == elmo.embed([text], return_tokens=True)[1][0]
    assert all(text[t["start"] : t["stop"]] == t["text"] for t in tokens)


@pytest.mark.parametrize(
    "body, status, field",
    [
        (b'{"inputs": ["The cat"', 422, None),  # malformed JSON
        (b'["The cat"]', 422, None),  # not an object
        (b'{"inputs": 3}', 422, "inputs"),
        (b'{"inputs": ["ok", ["a", 3]]}', 422, "inputs[1][1]"),
        (b'{"inputs": []}', 422, "inputs"),
        (b'{"inputs": ["fine", ""]}', 422, "inputs[1]"),  # an empty string: refused, as TEI and OpenAI do
        (b'{"inputs": "a", "normalize": "yes"}', 422, "normalize"),
        (b'{"inputs": "a", "layers": 9}', 422, "layers"),
        (b'{"inputs": "a", "pooling": "max"}', 422, "pooling"),  # unknown field
        (b'{"inputs": ["a", "b", "c", "d", "e"]}', 413, "inputs"),  # --max-client-batch-size 4
        (json.dumps({"inputs": " ".join(["w"] * 100_000)}).encode(), 413, "inputs"),  # the default --max-input-tokens
    ],
)
def test_bad_requests_are_refused_naming_the_field(guarded, body, status, field):
    r = httpx.post(f"{guarded.url}/embed", content=body, headers={**_auth(), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()
    assert error["error_type"] == "validation"
    if field:
        assert error["error"].startswith(field), error


def test_openai_route_errors_in_openai_shape(guarded):
    r = httpx.post(f"{guarded.url}/v1/embeddings", json={"input": [1, 2, 3]}, headers=_auth())
    assert r.status_code == 422 and r.json()["error"]["param"] == "input[0]"


def test_limits_key_cors_and_unknown_routes(guarded):
    big = b'{"inputs": "' + b"a " * 5_000_000 + b'"}'  # 10 MB
    r = httpx.post(f"{guarded.url}/embed", content=big, headers=_auth(), timeout=30)
    assert r.status_code == 413 and "--payload-limit" in r.json()["error"]
    assert httpx.post(f"{guarded.url}/embed", json={"inputs": "a"}).status_code == 401
    wrong = httpx.post(f"{guarded.url}/embed", json={"inputs": "a"}, headers={"Authorization": f"Bearer {KEY}x"})
    assert wrong.status_code == 401 and wrong.json()["error_type"] == "authentication"
    assert httpx.get(f"{guarded.url}/nowhere", headers=_auth()).status_code == 404
    assert httpx.get(f"{guarded.url}/embed", headers=_auth()).status_code == 405
    origin = httpx.post(
        f"{guarded.url}/embed", json={"inputs": "a"}, headers={**_auth(), "Origin": "https://app.example"}
    )
    assert origin.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.post(
        f"{guarded.url}/embed", json={"inputs": "a"}, headers={**_auth(), "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
    preflight = httpx.options(
        f"{guarded.url}/embed", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200  # no key on a preflight: browsers send none


def test_under_load_a_batch_waits_for_its_clients_in_proportion_to_the_last_batch():
    """A large model's clients come back over several milliseconds after its batch: the next batch
    waits for them up to 5% of the last batch's run time (here 20 ms), not only --max-wait-ms."""
    from elmo_runtime.serve.batcher import Batcher

    sizes = []

    def slow_embed(sentences, **options):  # a model that takes 0.4 s a batch
        sizes.append(len(sentences))
        time.sleep(0.4)
        return [np.zeros(2, np.float32) for _ in sentences]

    async def clients():
        batcher = Batcher(slow_embed, max_batch_tokens=2048, max_batch_requests=64, max_wait_ms=2)
        batcher.start()
        first = [batcher.submit([["a"]], "average", "mean", "k") for _ in range(4)]
        await asyncio.gather(*(job.future for job in first))
        later = []
        for _ in range(4):  # back one by one, 2.5 ms apart: over --max-wait-ms, within 20 ms
            later.append(batcher.submit([["b"]], "average", "mean", "k"))
            await asyncio.sleep(0.0025)
        await asyncio.gather(*(job.future for job in later))
        await batcher.stop()

    asyncio.run(clients())
    assert sizes == [4, 4]


# -- long inputs, load, shutdown, clients that leave --------------------------------------------


def test_a_100k_token_input_within_a_raised_limit_runs_in_bounded_memory(tiny_package, tmp_path_factory, sizes):
    # (The default limit refuses it: test_bad_requests_are_refused_naming_the_field.) The default
    # 512-position budget: 254-token time chunks.
    server = serve(tmp_path_factory, tiny_package, "--max-input-tokens", "200000", "--threads", "1")
    try:
        elmo = Elmo(tiny_package, device="cpu", threads=1)
        words = [f"w{i % 50}" for i in range(100_000)]
        httpx.post(f"{server.url}/embed", json={"inputs": "warm up"})
        before = server.peak_rss_kib()
        with ThreadPoolExecutor(1) as pool:  # the reference computed here meanwhile, on the other core
            reply = pool.submit(
                httpx.post, f"{server.url}/embed", json={"inputs": [words], "normalize": False}, timeout=300
            )
            want = elmo.embed([words], layers="average", pool="mean")[0]
            r = reply.result()
        assert r.status_code == 200, r.text
        assert np.array_equal(np.asarray(r.json()[0], np.float32), want)
        grown_kib = server.peak_rss_kib() - before
        # Run whole, the sentence's output layers alone would take this much.
        whole_layers_kib = sizes.layers * len(words) * sizes.dim * 4 // 1024
        assert grown_kib < whole_layers_kib / 2, (grown_kib, whole_layers_kib)
    finally:
        assert server.stop() == 0


def _post_status(url: str, body: dict) -> tuple[int, object]:
    r = httpx.post(url, json=body, timeout=60)
    return r.status_code, r.json()


def test_overload_is_refused_with_429_and_accepted_requests_are_answered(tiny_package, elmo, tmp_path_factory):
    # The first batch waits 300 ms for company (no batch before it to size it by), so 16 clients
    # at once are over a limit of 3 in flight.
    server = serve(tmp_path_factory, tiny_package, "--max-concurrent-requests", "3", "--max-wait-ms", "300")
    try:
        sentences = [SENTENCES[i % len(SENTENCES)] for i in range(16)]
        with ThreadPoolExecutor(16) as pool:
            results = list(
                pool.map(lambda s: _post_status(f"{server.url}/embed", {"inputs": s, "normalize": False}), sentences)
            )
        statuses = [status for status, _ in results]
        assert set(statuses) == {200, 429} and 1 <= statuses.count(200) <= 15, statuses
        for sentence, (status, body) in zip(sentences, results):
            if status == 200:
                want = elmo.embed([sentence], layers="average", pool="mean")[0]
                assert np.array_equal(np.asarray(body[0], np.float32), want)
            else:
                assert body["error_type"] == "overloaded"
        assert server.metric('elmo_request_failure_total{err="overloaded"}') == statuses.count(429)
    finally:
        assert server.stop() == 0


def test_sigterm_answers_every_accepted_request_then_exits_0(tiny_package, elmo, tmp_path_factory):
    # The first batch waits up to 1.5 s for company: the signal comes while all 8 requests are in flight.
    server = serve(tmp_path_factory, tiny_package, "--max-wait-ms", "1500", "--json-output")
    sentences = SENTENCES[:8]
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(_post_status, f"{server.url}/embed", {"inputs": s, "normalize": False}) for s in sentences
        ]
        deadline = time.monotonic() + 10
        while server.metric("elmo_requests_in_flight") < len(sentences) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.metric("elmo_requests_in_flight") == len(sentences)
        server.terminate()
        results = [f.result() for f in futures]
    assert server.proc.wait(30) == 0
    for sentence, (status, body) in zip(sentences, results):
        assert status == 200
        assert np.array_equal(np.asarray(body[0], np.float32), elmo.embed([sentence], layers="average", pool="mean")[0])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)
    # One JSON line per request (--json-output): the 8 answered, and the probes of the metrics.
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    embeds = [line for line in lines if line.get("path") == "/embed"]
    assert len(embeds) == len(sentences) and {line["status"] for line in embeds} == {200}
    assert all(line["inputs"] == 1 and line["tokens"] > 0 for line in embeds)


def _post_or_error(url: str, body: dict) -> int | str:
    try:
        return httpx.post(url, json=body, timeout=120).status_code
    except httpx.TransportError as e:
        return type(e).__name__


def test_past_the_graceful_timeout_queued_work_is_dropped_and_the_server_exits_0(tiny_package, tmp_path_factory):
    # One request per batch on one model thread: of four long inputs, one runs and three queue.
    server = serve(
        tmp_path_factory,
        tiny_package,
        *("--max-input-tokens", "200000", "--max-batch-requests", "1", "--threads", "1"),
        *("--graceful-timeout", "0.5", "--json-output"),
    )
    body = {"inputs": [[f"w{i % 50}" for i in range(40_000)]]}
    started = time.monotonic()
    assert httpx.post(f"{server.url}/embed", json=body, timeout=120).status_code == 200
    one = time.monotonic() - started
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_post_or_error, f"{server.url}/embed", body) for _ in range(4)]
        deadline = time.monotonic() + 10
        while server.metric("elmo_requests_in_flight") < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.metric("elmo_requests_in_flight") == 4 and server.metric("elmo_queue_size") == 3
        server.terminate()
        signalled = time.monotonic()
        assert server.proc.wait(120) == 0
        exit_s = time.monotonic() - signalled
        outcomes = [f.result() for f in futures]
    # The running batch finishes (ONNX Runtime's call is not interrupted); the three queued never
    # run: had they, the exit would take about four times `one`.
    assert exit_s < 0.5 + 2 * one, (exit_s, one)
    assert 200 not in outcomes, outcomes
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    cut = [line for line in lines if line.get("error") == "shutdown"]
    assert len(cut) == 4 and {line["status"] for line in cut} == {503}, lines


def test_a_client_that_leaves_leaves_no_work_behind(tiny_package, tmp_path_factory):
    server = serve(tmp_path_factory, tiny_package, "--max-wait-ms", "1000")
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/embed", json={"inputs": "I will not wait."}, timeout=0.3)
        time.sleep(1.5)  # past the first batch's wait: had the job stayed queued, it would have run by now
        assert server.metric("elmo_batch_next_size_count") == 0
        assert server.metric('elmo_request_failure_total{err="client_closed"}') == 1
        assert server.metric("elmo_requests_in_flight") == 0 and server.metric("elmo_queue_size") == 0
        assert httpx.post(f"{server.url}/embed", json={"inputs": "Still serving."}).status_code == 200
    finally:
        assert server.stop() == 0


class _BreaksOn(Elmo):
    """The real model, except that a sentence holding the token "BOOM" fails, as a broken backend would."""

    def embed(self, sentences, **kwargs):
        if any("BOOM" in sentence for sentence in sentences):
            raise RuntimeError("the model broke on BOOM")
        return super().embed(sentences, **kwargs)


@contextmanager
def _in_thread(elmo: Elmo, **settings):
    """The app on a real uvicorn server on 127.0.0.1, in a thread of this process (for a model
    that only exists here)."""
    import uvicorn

    from elmo_runtime.serve.app import create_app
    from elmo_runtime.serve.settings import ServeSettings

    port = free_port()
    app = create_app(elmo, ServeSettings(port=port, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_request_that_breaks_the_model_gets_424_and_its_batch_neighbours_their_vectors(tiny_package, elmo):
    # The first batch waits 500 ms for company: the six requests share it, and it fails.
    sentences = [["BOOM", "here"], *TOKENIZED, ["one", "more"], ["and", "BOOM"]]
    with _in_thread(_BreaksOn(tiny_package, device="cpu"), max_wait_ms=500) as url:
        with ThreadPoolExecutor(len(sentences)) as pool:
            replies = list(
                pool.map(lambda s: httpx.post(f"{url}/embed", json={"inputs": [s], "normalize": False}), sentences)
            )
        for sentence, r in zip(sentences, replies):
            if "BOOM" in sentence:
                assert r.status_code == 424 and r.json()["error_type"] == "backend", r.text
                assert "the model broke on BOOM" in r.json()["error"]
            else:
                assert r.status_code == 200, r.text
                want = elmo.embed([sentence], layers="average", pool="mean")[0]
                assert np.array_equal(np.asarray(r.json()[0], np.float32), want)
        metrics = httpx.get(f"{url}/metrics").text
    assert "elmo_batch_next_size_count 1.0" in metrics  # one batch, failed, then run request by request
    assert 'elmo_request_failure_total{err="backend"} 2.0' in metrics


def test_a_damaged_package_refuses_to_start_naming_the_file(tiny_package, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_package, damaged)
    data = damaged / "bilm.onnx.data" if (damaged / "bilm.onnx.data").exists() else damaged / "bilm.onnx"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    server = Served(damaged, log=tmp_path / "server.log")
    assert server.proc.wait(60) == 1
    errors = [line for line in server.log().splitlines() if line.startswith("elmo-serve: error:")]
    assert len(errors) == 1 and data.name in errors[0], server.log()
    assert "Traceback" not in server.log()


def test_a_package_whose_conformance_vectors_fail_refuses_to_start(tiny_package, tmp_path):
    # Sealed (hashes match), but one expected value is off: the sessions the server would serve
    # with disagree with the package's own vectors.
    from test_conformance import nudged_copy

    package = nudged_copy(tiny_package, tmp_path, (1, 3, 0), 0.5)
    server = Served(package, log=tmp_path / "server.log")
    assert server.proc.wait(60) == 1
    errors = [line for line in server.log().splitlines() if line.startswith("elmo-serve: error:")]
    assert len(errors) == 1 and "conformance vectors FAILED (1 failures" in errors[0], server.log()
    assert "sentence 5 ('sixty tokens'), state warm, layer 1: max abs difference 0.5" in errors[0]


def test_import_elmo_runtime_stays_light():
    heavy = ("fastapi", "uvicorn", "prometheus_client", "elmo_runtime.serve")
    code = f"import sys, elmo_runtime; from elmo_runtime import Elmo; print(sorted(set({heavy!r}) & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
