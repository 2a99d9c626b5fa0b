"""The Node.js client (examples/node) on real packages, in a real Node process.

Runs in CI (node and npm are on the machine; a skip there is a failure, tests/conftest.py);
skipped elsewhere without `node` and `npm`. The first run installs the client's locked dependencies
(`npm ci`, onnxruntime-node's CPU build only) into examples/node/node_modules.
"""

from __future__ import annotations

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
from elmo_runtime.package import sha256_of

CLIENT = Path(__file__).resolve().parents[1] / "examples" / "node"


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:  # issue #12: skips cleanly without node, except in CI
        pytest.skip("node and npm are not installed")
    if not (CLIENT / "node_modules" / "onnxruntime-node").is_dir():
        # ONNXRUNTIME_NODE_INSTALL=skip: without it onnxruntime-node's install script fetches CUDA binaries.
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT, env=env,
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            reason = f"npm ci failed in {CLIENT}: {done.stderr.strip()[-500:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    return node


def run_node(node: str, *args: str, script: str = "verify.js") -> subprocess.CompletedProcess:
    return subprocess.run([node, str(CLIENT / script), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_zero_package(exported):
    return exported("tiny", "fp32", "zero")


@pytest.fixture(scope="module")
def tiny_int8_package(exported):
    return exported("tiny", "int8")


@pytest.mark.parametrize("which", ["tiny_package", "tiny_zero_package", "tiny_int8_package"])
def test_node_client_reproduces_the_conformance_vectors(node, which, request):
    package = request.getfixturevalue(which)
    done = run_node(node, str(package), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["failures"] == []
    doc = json.loads((Path(package) / C.CONFORMANCE_FILE).read_text())
    states = {s for entry in doc["sentences"] for s in entry["expected"]}
    assert len(report["checks"]) == 9 * len(states) * 3  # every layer of every sentence (the empty one: its shape)
    assert report["worst"]["max_abs"] <= doc["tolerance"]["max_abs"]


def test_node_client_embeds_like_the_python_runtime(node, tiny_package, tmp_path):
    sentences = [["The", "cat", "sat", "."], [], ["<S>", "naïve", "😀", "x" * 60], ["Hi"]]
    script = tmp_path / "embed.js"
    script.write_text(
        f"const {{ Elmo }} = require({json.dumps(str(CLIENT / 'elmo.js'))});\n"
        "(async () => {\n"
        f"  const elmo = await Elmo.load({json.dumps(str(tiny_package))});\n"
        f"  const out = await elmo.embed({json.dumps(sentences)});\n"
        "  console.log(JSON.stringify(out.map((v) => ({ dims: v.dims, data: Array.from(v.data) }))));\n"
        "})();\n")
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    want = Elmo(tiny_package, device="cpu").embed(sentences, batch_tokens=64)
    for g, w in zip(got, want):
        assert g["dims"] == list(w.shape)
        np.testing.assert_allclose(np.asarray(g["data"], np.float32).reshape(w.shape), w, atol=1e-5)


def test_node_client_names_the_sentence_and_layer_that_differ(node, tiny_package, tmp_path):
    package = Path(shutil.copytree(tiny_package, tmp_path / "copy"))
    vectors = package / C.CONFORMANCE_FILE
    doc = json.loads(vectors.read_text())
    entry = doc["sentences"][2]["expected"]["zero"]
    layers = decode_array(entry, "x").copy()
    layers[1, 0, 0] -= 0.5
    entry.update(encode_array(layers))
    vectors.write_text(json.dumps(doc))
    manifest = json.loads((package / C.MANIFEST_FILE).read_text())  # re-sealed: else its size stops the load
    manifest["files"][C.CONFORMANCE_FILE] = {"sha256": sha256_of(vectors), "bytes": vectors.stat().st_size}
    (package / C.MANIFEST_FILE).write_text(json.dumps(manifest))
    done = run_node(node, str(package))
    assert done.returncode == 1
    assert "sentence 2 (\"4-byte UTF-8\"), state zero, layer 1: max abs difference 0.500 > 0.0001" in done.stderr


def test_node_client_refuses_a_package_lacking_a_field_or_truncated(node, tiny_package, tmp_path):
    package = Path(shutil.copytree(tiny_package, tmp_path / "copy"))
    graph = package / C.BILM_FILE
    graph.write_bytes(graph.read_bytes()[:100])
    done = run_node(node, str(package))
    assert done.returncode == 1 and f"file '{C.BILM_FILE}' has 100 bytes, the manifest says" in done.stderr

    manifest = json.loads((package / C.MANIFEST_FILE).read_text())
    del manifest["initial_state"]["directions"]
    (package / C.MANIFEST_FILE).write_text(json.dumps(manifest))
    done = run_node(node, str(package))
    assert done.returncode == 1 and "missing field 'initial_state.directions'" in done.stderr
