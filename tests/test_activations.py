"""Sigmoid and tanh written out in exactly rounded ops (`elmo_export.activations`, the export
option `exact_activations`): ONNX Runtime computes exactly what IEEE 754 says op by op (so every
build computes the same bits; the browser side is `tests/test_browser.py`), close to the
functions themselves; with the option no float32 graph keeps a kernel whose rounding depends on
the CPU, without it the graphs keep ONNX Runtime's; the manifest records the choice."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from elmo_export.activations import FUNCTIONS, evaluate
from elmo_export.cli import build_parser
from elmo_export.onnx_graph import _Graph, build_bilm, build_token_embedder
from elmo_export.quantize.graph import walk
from elmo_export.settings import ExportSettings
from elmo_runtime import contract as C
from elmo_runtime.fetch.resolve import SHIPPED_PACKAGE
from elmo_runtime.package import PackageError, load_manifest


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    grid = np.linspace(-30, 30, 600_001, dtype=np.float32)
    tiny = np.float32(2.0) ** -np.arange(0, 149, dtype=np.float32)  # down to the smallest subnormal
    return np.concatenate(
        [grid, rng.standard_normal(100_000).astype(np.float32) * 4, tiny, -tiny, np.array([0.0, -0.0], np.float32)]
    )


def _run(op_type: str, x: np.ndarray) -> np.ndarray:
    g = _Graph("t/", "fp32", C.DEFAULT_OPSET, exact=True)
    y = g.activation(op_type, "x")
    g.nodes.append(helper.make_node("Identity", [y], ["y"]))
    graph = helper.make_graph(
        g.nodes,
        "activation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", C.DEFAULT_OPSET)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the runtime and js/ run
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.reshape(1, -1)})[0].reshape(-1)


@pytest.mark.parametrize("op_type", sorted(FUNCTIONS))
def test_onnx_runtime_computes_the_ops_exactly_as_ieee_rounds_them(op_type):
    x = _inputs()
    got, want = _run(op_type, x), evaluate(FUNCTIONS[op_type], x)
    assert got.dtype == want.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit, the sign of zero included


@pytest.mark.parametrize(("op_type", "bar"), [("Sigmoid", 2.1e-7), ("Tanh", 3.6e-7)])
def test_the_approximation_is_as_close_as_the_kernels(op_type, bar):
    """Measured 2.05e-7 and 3.59e-7; ONNX Runtime's own kernels differ from each other (native x86
    against wasm) by up to 2.4e-7 and 4.8e-7."""
    x = _inputs()
    exact = {"Sigmoid": lambda v: 0.5 * (1.0 + np.tanh(0.5 * v)), "Tanh": np.tanh}[op_type](x.astype(np.float64))
    got = _run(op_type, x)
    assert np.abs(got - exact).max() <= bar
    assert got.min() >= FUNCTIONS[op_type].low and got.max() <= FUNCTIONS[op_type].high


def _ops(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for _, node, _ in walk(model.graph)}


def test_exact_float32_graphs_have_no_sigmoid_or_tanh_kernel_and_the_others_keep_them(tiny_model):
    exact = _ops(build_token_embedder(tiny_model, exact_activations=True)) | _ops(
        build_bilm(tiny_model, exact_activations=True)
    )
    native = _ops(build_token_embedder(tiny_model)) | _ops(build_bilm(tiny_model))
    assert not exact & {"Sigmoid", "Tanh"} and {"Div", "Clip"} <= exact
    assert {"Sigmoid", "Tanh"} <= native and "Div" not in native
    assert {"Sigmoid", "Tanh"} <= _ops(build_bilm(tiny_model, "fp16"))


def test_the_manifest_records_exact_activations_and_a_plain_export_stays_silent(exported):
    exact = exported("tiny", "int8", exact_activations=True)
    plain = exported("tiny", "int8")
    document = json.loads((exact / C.MANIFEST_FILE).read_text(encoding="utf-8"))
    assert document["precision"]["activation_functions"] == C.EXACT_ACTIVATIONS == "exact"
    assert document["precision"]["activations"].startswith("uint8")  # int8's quantized inputs: another field
    assert load_manifest(exact, verify_files=True).activation_functions == "exact"
    # Without the option the manifest is what it was before the field existed (the shipped default's).
    assert "activation_functions" not in json.loads((plain / C.MANIFEST_FILE).read_text(encoding="utf-8"))["precision"]
    assert load_manifest(plain).activation_functions == C.ONNXRUNTIME_ACTIVATIONS == "onnxruntime"
    assert load_manifest(SHIPPED_PACKAGE).activation_functions == "onnxruntime"
    assert _ops(onnx.load(exact / "bilm.onnx", load_external_data=False)).isdisjoint({"Sigmoid", "Tanh"})
    assert {"Sigmoid", "Tanh"} <= _ops(onnx.load(plain / "bilm.onnx", load_external_data=False))


def test_an_unknown_activation_functions_value_is_refused_naming_the_field(exported, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(exported("tiny", "int8", exact_activations=True), package)
    manifest = json.loads((package / C.MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["precision"]["activation_functions"] = "approximate"
    (package / C.MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(PackageError, match="precision.activation_functions is 'approximate'"):
        load_manifest(package)


def test_exact_activations_are_refused_for_fp16_and_the_cli_passes_the_flag():
    with pytest.raises(ValueError, match="exact activations are float32 ops; an fp16 package"):
        ExportSettings(precision="fp16", exact_activations=True)
    assert ExportSettings(precision="int8", exact_activations=True).activation_functions == "exact"
    assert ExportSettings().exact_activations is False
    args = build_parser().parse_args(["-o", "out", "--quantize", "int8", "--exact-activations"])
    assert args.exact_activations is True
    assert build_parser().parse_args(["-o", "out"]).exact_activations is False
