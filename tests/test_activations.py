"""Sigmoid and tanh written out in exactly rounded ops (`elmo_export.activations`): ONNX Runtime
computes exactly what IEEE 754 says op by op (so every build computes the same bits; the browser
side is `tests/test_browser.py`), close to the functions themselves, and no float32 graph keeps
a kernel whose rounding depends on the CPU."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from elmo_export.activations import FUNCTIONS, evaluate
from elmo_export.onnx_graph import _Graph, build_bilm, build_token_embedder
from elmo_export.quantize.graph import walk
from elmo_runtime import contract as C


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    grid = np.linspace(-30, 30, 600_001, dtype=np.float32)
    tiny = np.float32(2.0) ** -np.arange(0, 149, dtype=np.float32)  # down to the smallest subnormal
    return np.concatenate(
        [grid, rng.standard_normal(100_000).astype(np.float32) * 4, tiny, -tiny, np.array([0.0, -0.0], np.float32)]
    )


def _run(op_type: str, x: np.ndarray) -> np.ndarray:
    g = _Graph("t/", "fp32", C.DEFAULT_OPSET)
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


def test_float32_graphs_have_no_sigmoid_or_tanh_kernel_and_float16_keeps_them(tiny_model):
    def ops(model: onnx.ModelProto) -> set[str]:
        return {node.op_type for _, node, _ in walk(model.graph)}

    fp32 = ops(build_token_embedder(tiny_model)) | ops(build_bilm(tiny_model))
    fp16 = ops(build_bilm(tiny_model, "fp16"))
    assert not fp32 & {"Sigmoid", "Tanh"} and {"Div", "Clip"} <= fp32
    assert {"Sigmoid", "Tanh"} <= fp16
