"""The JavaScript package (js/) in Node.js, in a real Node process, against the Python runtime.

Skipped without `node` and `npm`. The first run installs js/'s locked dependencies (`npm ci`,
onnxruntime-node's CPU build only: ONNXRUNTIME_NODE_INSTALL=skip) into js/node_modules.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from elmo_runtime import Elmo
from elmo_runtime import contract as C
from elmo_runtime.conformance import decode_array, encode_array
from elmo_runtime.fetch.resolve import SHIPPED_PACKAGE
from elmo_runtime.package import sha256_of

JS = Path(__file__).resolve().parents[1] / "js"
SENTENCES = [
    ["The", "cat", "sat", "."],
    [],
    ["<S>", "naïve", "😀", "x" * 60],
    "The bank of the river, not the bank that lends.",
    ["Hi"],
]


def npm_ci() -> None:
    """Install js/'s locked dependencies once (what .ci/run does too)."""
    if (JS / "node_modules" / "onnxruntime-node").is_dir():
        return
    # ONNXRUNTIME_NODE_INSTALL=skip: without it onnxruntime-node's install script fetches CUDA binaries.
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
    done = subprocess.run(
        [shutil.which("npm"), "ci", "--no-audit", "--no-fund"],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        reason = f"npm ci failed in {JS}: {done.stderr.strip()[-500:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:  # issue #12: the JS tests skip cleanly without node
        pytest.skip("node and npm are not installed")
    npm_ci()
    return node


def js_embed(node: str, request: dict) -> list:
    done = subprocess.run(
        [node, str(JS / "test" / "embed.mjs")], input=json.dumps(request), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def as_array(entry: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry["float32_base64"]), np.float32).reshape(entry["dims"])


def verify(node: str, package: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [node, str(JS / "bin" / "verify.js"), str(package), "--json"], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module", params=["fp32", "fp16", "int8", "int4"])
def package(request, exported):
    return exported("tiny", request.param)


def test_the_js_client_passes_every_conformance_case_in_every_precision(node, package):
    done = verify(node, package)
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    report = json.loads(done.stdout)
    doc = json.loads((package / C.CONFORMANCE_FILE).read_text())
    assert (
        report["passed"]
        and report["failures"] == []
        and report["tokenizerCases"] == len(doc["tokenizer"]["cases"]) > 10
    )
    # 9 sentences x 2 states x 3 layers, the time-chunks case (3 layers + final h and c), the stream's 9 rows x 3 layers
    assert len(report["checks"]) == 54 + 5 + 27
    assert report["worst"]["max_abs"] <= doc["tolerance"]["max_abs"]


def test_the_js_client_embeds_like_the_python_runtime(node, package):
    """fp32 and int8 bit for bit (one sentence, a batch, raw text, time chunks of a long sentence,
    a carried stream); fp16 and int4 within their tolerance (other row counts take other kernels)."""
    manifest = json.loads((package / C.MANIFEST_FILE).read_text())
    exact = manifest["precision"]["name"] in ("fp32", "int8")
    tolerance = json.loads((package / C.CONFORMANCE_FILE).read_text())["tolerance"]["max_abs"]
    python = Elmo(package, device="cpu")
    long = [f"w{i % 97}" for i in range(3000)]  # 3000 tokens: time chunks of 254 in both clients
    got = js_embed(node, {"package": str(package), "sentences": SENTENCES + [long]})
    want = python.embed(SENTENCES + [long], batch_tokens=512)
    streamed = js_embed(node, {"package": str(package), "stream": [SENTENCES[:2], [SENTENCES[2]], SENTENCES]})
    stream = python.stream()
    want_stream = [stream.embed(batch) for batch in (SENTENCES[:2], [SENTENCES[2]], SENTENCES)]
    pairs = list(zip(got, want)) + [p for g, w in zip(streamed, want_stream) for p in zip(g, w)]
    assert got[3]["tokens"] == python.tokenizer(SENTENCES[3]) and len(pairs) == 6 + 8
    for g, w in pairs:
        assert g["dims"] == list(w.shape)
        if exact:
            assert np.array_equal(as_array(g), w)
        else:
            np.testing.assert_allclose(as_array(g), w, rtol=0, atol=tolerance)


def test_the_shipped_default_in_node_is_the_python_runtime_bit_for_bit(node):
    long = [f"w{i % 89}" for i in range(3000)]
    got = js_embed(
        node, {"package": str(SHIPPED_PACKAGE), "sentences": SENTENCES + [long], "options": {"layers": "top"}}
    )
    want = Elmo(device="cpu").embed(SENTENCES + [long], layers="top")
    for g, w in zip(got, want):
        assert g["dims"] == list(w.shape) and np.array_equal(as_array(g), w)


def test_the_js_client_names_the_damaged_file_and_the_unknown_version(node, tiny_package, tmp_path):
    package = Path(shutil.copytree(tiny_package, tmp_path / "copy"))
    data = package / "bilm.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0x01
    data.write_bytes(bytes(raw))
    done = verify(node, package)
    assert done.returncode == 1
    assert "file 'bilm.onnx.data' does not match its sha256 in the manifest" in json.loads(done.stdout)["failures"][0]
    data.write_bytes(raw[:100])
    assert (
        "file 'bilm.onnx.data' has 100 bytes, the manifest says"
        in json.loads(verify(node, package).stdout)["failures"][0]
    )

    manifest = json.loads((package / C.MANIFEST_FILE).read_text())
    (package / C.MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 7}))
    assert "package format version 7; this client reads 3" in json.loads(verify(node, package).stdout)["failures"][0]


def test_nothing_is_half_loaded(node, tiny_package, tmp_path):
    """The last file read is damaged: no ONNX Runtime session was ever created."""
    package = Path(shutil.copytree(tiny_package, tmp_path / "copy"))
    data = package / "bilm.onnx.data"
    data.write_bytes(data.read_bytes()[::-1])
    script = tmp_path / "half.mjs"
    script.write_text(
        f"import {{ Elmo }} from {json.dumps((JS / 'src' / 'core.js').as_uri())};\n"
        "import { readFile } from 'node:fs/promises';\n"
        "let created = 0;\n"
        "const ort = { InferenceSession: { create: async () => { created += 1; return { release() {} }; } } };\n"
        f"const read = async (name) => new Uint8Array(await readFile({json.dumps(str(package))} + '/' + name));\n"
        "try { await Elmo.open({ ort, read, source: 'pkg' }); console.log('loaded'); }\n"
        "catch (e) { console.log(JSON.stringify({ message: e.message, created })); }\n"
    )
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60)
    result = json.loads(done.stdout)
    assert result == {
        "message": "pkg: file 'bilm.onnx.data' does not match its sha256 in the manifest (corrupt or altered)",
        "created": 0,
    }


def test_the_js_client_names_the_case_that_differs(node, tiny_package, tmp_path):
    package = Path(shutil.copytree(tiny_package, tmp_path / "copy"))
    vectors = package / C.CONFORMANCE_FILE
    doc = json.loads(vectors.read_text())
    entry = doc["stream"]["expected"]["warm"][1][2]
    layers = decode_array(entry, "x").copy()
    layers[2, 0, 0] -= 0.5
    entry.update(encode_array(layers))
    vectors.write_text(json.dumps(doc))
    manifest = json.loads((package / C.MANIFEST_FILE).read_text())  # re-sealed: else its hash stops the check
    manifest["files"][C.CONFORMANCE_FILE] = {"sha256": sha256_of(vectors), "bytes": vectors.stat().st_size}
    (package / C.MANIFEST_FILE).write_text(json.dumps(manifest))
    done = verify(node, package)
    assert done.returncode == 1
    assert json.loads(done.stdout)["failures"] == [
        "stream call 1 row 2, state warm, layer 2: max abs difference 0.500 > 0.0001"
    ]
