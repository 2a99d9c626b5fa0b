"""The Lambda handler of `examples/serverless/`, invoked locally with sample events."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from elmo_runtime import Elmo

HANDLER = Path(__file__).resolve().parents[1] / "examples" / "serverless" / "handler.py"


@pytest.fixture
def lambda_handler(monkeypatch, tmp_path):
    """A fresh import of the handler, as on a cold start, with /tmp standing in as a temp dir."""
    for name in ("ELMO_PACKAGE", "ELMO_ONNX_CATALOG", "ELMO_ONNX_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "tmp" / "elmo-onnx"))
    spec = importlib.util.spec_from_file_location("lambda_handler", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_sample_event_gets_sentence_vectors(lambda_handler):
    event = {"sentences": ["The cat sat on the mat.", "ELMo vectors depend on context."]}
    response = lambda_handler.handler(event, None)
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["dim"] == 256 and body["precision"] == "int8" and body["package"] == "default"
    assert body["tokens"] == [
        ["The", "cat", "sat", "on", "the", "mat", "."],
        ["ELMo", "vectors", "depend", "on", "context", "."],
    ]
    want = Elmo("default").embed(event["sentences"], layers="average", pool="mean")
    for got, expected in zip(body["vectors"], want):
        np.testing.assert_allclose(np.array(got, dtype=np.float32), expected, rtol=0, atol=1e-6)


def test_an_api_gateway_event_and_bad_requests(lambda_handler):
    http = {"body": json.dumps({"sentences": ["Hi !"], "layers": "top", "pool": None}), "isBase64Encoded": False}
    body = json.loads(lambda_handler.handler(http, None)["body"])
    assert np.array(body["vectors"][0]).shape == (2, 256)
    for event, message in [
        ({"sentences": []}, "'sentences' must be a non-empty list of strings"),
        ({"sentences": ["x"] * 257}, "257 sentences: at most 256 per request"),
        ({"sentences": ["x"], "layers": "all"}, "'layers' is 'all'"),
        ({"body": "{not json"}, "the body is not JSON"),
        ({"sentences": ["a b"], "layers": 7}, "layer"),
    ]:
        response = lambda_handler.handler(event, None)
        assert response["statusCode"] == 400, event
        assert message in json.loads(response["body"])["error"]


def test_a_catalog_package_is_fetched_to_tmp_on_the_cold_start(lambda_handler, tiny_package, tmp_path, monkeypatch):
    from http_server import serving

    from elmo_export.publish import archive_package

    with serving() as server:
        entry = archive_package(
            tiny_package, tmp_path / "tiny.zip", url=f"{server.url}/tiny.zip", name="tiny-fp32", model="tiny"
        )
        server.files["/tiny.zip"] = (tmp_path / "tiny.zip").read_bytes()
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps({"schema_version": 1, "packages": {"tiny-fp32": entry}}))
        monkeypatch.setenv("ELMO_ONNX_CATALOG", str(catalog))
        monkeypatch.setenv("ELMO_PACKAGE", "tiny-fp32")
        for _ in range(2):  # a cold start, then a warm invocation of the same instance
            response = lambda_handler.handler({"sentences": ["One sentence ."]}, None)
            assert response["statusCode"] == 200
        assert len(server.requests) == 1
    assert json.loads(response["body"])["dim"] == 32
    assert (tmp_path / "tmp" / "elmo-onnx" / "packages" / "tiny-fp32" / "elmo.json").is_file()
