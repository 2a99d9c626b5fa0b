"""int4's GPTQ rounding: against a textbook GPTQ, onnxruntime's packing, and the error it lowers."""

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from elmo_export.calibration import input_moments, load_calibration_sentences
from elmo_export.quantize.gptq import LEVELS, block_params, matmul_nbits, quantize_gptq


def _correlated_inputs(rng: np.random.Generator, rows: int, k: int, samples: int = 1) -> np.ndarray:
    """`samples` draws of `rows` inputs from one distribution whose columns go together (as an
    LSTM's do): a shared offset and a low-rank mix, plus a little noise."""
    mix, offset = rng.standard_normal((8, k)), rng.standard_normal(k)
    draws = [
        rng.standard_normal((rows, 8)) @ mix + 0.1 * rng.standard_normal((rows, k)) + offset for _ in range(samples)
    ]
    return draws[0] if samples == 1 else draws


def _textbook_gptq(weight: np.ndarray, moments: np.ndarray, block: int, damp: float) -> np.ndarray:
    """GPTQ as the paper's Algorithm 1 writes it (torch, `W (out, in)`, one column at a time, no
    lazy batches), a block's scale and zero point taken from its columns when it starts."""
    w = torch.from_numpy(weight.T.astype(np.float64)).clone()  # (N, K)
    h = torch.from_numpy(moments.astype(np.float64)).clone()
    h += damp * torch.mean(torch.diag(h)) * torch.eye(len(h), dtype=torch.float64)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    levels = torch.zeros_like(w)
    for i in range(w.shape[1]):
        if i % block == 0:
            group = w[:, i : i + block]
            low = torch.clamp(group.min(dim=1).values, max=0).float()  # stored in float32
            high = torch.clamp(group.max(dim=1).values, min=0).float()
            scale = ((high - low) / LEVELS).double()
            zero = torch.clamp(torch.round(-low.double() / scale), 0, LEVELS)
        q = torch.clamp(torch.round(w[:, i] / scale) + zero, 0, LEVELS)
        levels[:, i] = q
        error = (w[:, i] - (q - zero) * scale) / u[i, i]
        w[:, i:] -= error[:, None] * u[i, i:][None, :]
    return levels.T.numpy().astype(np.uint8)


def test_gptq_rounds_as_the_textbook_algorithm_does():
    rng = np.random.default_rng(0)
    k, n = 256, 24
    x = _correlated_inputs(rng, 400, k)
    weight = (0.1 * rng.standard_normal((k, n))).astype(np.float32)
    moments = x.T @ x / len(x)
    ours = quantize_gptq(weight, moments, block=64)
    np.testing.assert_array_equal(ours.levels, _textbook_gptq(weight, moments, 64, 0.01))
    assert ours.levels.max() <= LEVELS and ours.scales.shape == ours.zero_points.shape == (k // 64, n)


def test_gptq_lowers_the_output_error_on_inputs_it_was_not_calibrated_on():
    rng = np.random.default_rng(1)
    k, n = 512, 64
    calibration, held_out = _correlated_inputs(rng, 600, k, samples=2)  # two draws of one distribution
    weight = (0.1 * rng.standard_normal((k, n))).astype(np.float32)
    nearest = quantize_gptq(weight, None, block=64).dequantized()
    gptq = quantize_gptq(weight, calibration.T @ calibration / len(calibration), block=64).dequantized()
    error = {name: np.linalg.norm(held_out @ (weight - q)) for name, q in [("nearest", nearest), ("gptq", gptq)]}
    assert error["gptq"] < 0.5 * error["nearest"], error
    # Each weight moves at most a few levels from where rounding to nearest puts it.
    scale = quantize_gptq(weight, None, block=64).scales.max()
    assert np.abs(gptq - weight).max() < 4 * scale


def _one_matmul(weight: np.ndarray) -> onnx.ModelProto:
    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="product")],
        "one_product",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("k", [512, 192, 100])  # 8 blocks; 3 (a zero-point byte half used); K padded to 128
def test_round_to_nearest_packs_byte_for_byte_as_onnxruntimes_quantizer(k):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    weight = (0.1 * np.random.default_rng(k).standard_normal((k, 24))).astype(np.float32)
    logging.disable(logging.INFO)  # the quantizer logs each node
    try:
        quantizer = MatMulNBitsQuantizer(
            _one_matmul(weight), bits=4, block_size=64, is_symmetric=False, op_types_to_quantize=("MatMul",)
        )
        quantizer.process()
    finally:
        logging.disable(logging.NOTSET)
    theirs_graph = quantizer.model.model.graph
    theirs_node = next(n for n in theirs_graph.node if n.op_type == "MatMulNBits")
    theirs = {t.name: numpy_helper.to_array(t) for t in theirs_graph.initializer}
    node, initializers = matmul_nbits(_one_matmul(weight).graph.node[0], "W", quantize_gptq(weight, None, 64))
    for mine, name in zip(initializers, theirs_node.input[1:]):
        ours = numpy_helper.to_array(mine)
        assert ours.dtype == theirs[name].dtype and ours.shape == theirs[name].shape, name
        np.testing.assert_array_equal(ours, theirs[name], err_msg=name)
    attrs = lambda n: {a.name: helper.get_attribute_value(a) for a in n.attribute}  # noqa: E731
    assert attrs(node) == attrs(theirs_node)


def test_the_packed_node_computes_with_the_dequantized_weight():
    rng = np.random.default_rng(2)
    k, n = 200, 40
    weight = (0.1 * rng.standard_normal((k, n))).astype(np.float32)
    x = _correlated_inputs(rng, 50, k).astype(np.float32)
    blocks = quantize_gptq(weight, x.T @ x / len(x), block=64)
    model = _one_matmul(weight)
    node, initializers = matmul_nbits(model.graph.node[0], "W", blocks)
    model.graph.node[0].CopyFrom(node)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    want = x @ blocks.dequantized()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_block_params_include_zero_and_keep_an_all_zero_column_exact():
    scale, zero = block_params(np.array([[0.5, 0.0], [1.5, 0.0]], np.float32))
    assert scale[0] == pytest.approx(1.5 / LEVELS) and zero[0] == 0  # range widened down to 0
    assert scale[1] == 1.0 and zero[1] == 0


def test_onnxruntimes_bundled_gptq_still_rounds_to_nearest():
    """Why gptq.py is ours: onnxruntime 1.32's GPTQ moves no error. If this fails, onnxruntime
    fixed it, and gptq.py's docstring (and the choice) should be revisited."""
    from onnxruntime.quantization.neural_compressor.weight_only import gptq as onnxruntime_gptq

    rng = np.random.default_rng(3)
    k, n = 128, 16
    x = _correlated_inputs(rng, 300, k)
    weight = rng.standard_normal((k, n))
    theirs = onnxruntime_gptq(weight.copy(), x.T @ x / len(x), group_size=32, blocksize=32)
    np.testing.assert_array_equal(theirs, _nearest(weight, 32))


def _nearest(weight: np.ndarray, block: int) -> np.ndarray:
    """Round to nearest in float64, as onnxruntime's GPTQ computes."""
    out = weight.copy()
    for start in range(0, len(weight), block):
        rows = weight[start : start + block]
        low, high = np.minimum(rows.min(0), 0), np.maximum(rows.max(0), 0)
        scale = (high - low) / LEVELS
        zero = np.round(-low / scale)
        out[start : start + block] = (np.clip(np.round(rows / scale) + zero, 0, LEVELS) - zero) * scale
    return out


def test_input_moments_count_each_token_once_whatever_the_batching(tiny_model):
    sentences = load_calibration_sentences()[0][:12]
    path = "cells.1.0.hidden_to_gates"
    batched = input_moments(tiny_model, sentences, [path])[path]
    rows = []
    hook = dict(tiny_model.named_modules())[path].register_forward_pre_hook(lambda _m, args: rows.append(args[0]))
    try:
        with torch.no_grad():
            for sentence in sentences:  # one at a time: no padding at all
                tiny_model.run_tokens([sentence], tiny_model.zero_state(1))
    finally:
        hook.remove()
    x = torch.cat(rows).double()
    assert len(x) == sum(len(s) + 2 for s in sentences)  # each token and both boundaries, once a step
    np.testing.assert_allclose(batched, (x.T @ x / len(x)).numpy(), rtol=1e-6, atol=1e-9)


def test_input_moments_name_a_module_the_model_lacks(tiny_model):
    with pytest.raises(KeyError, match="cells.7.0.projection"):
        input_moments(tiny_model, [["a"]], ["cells.7.0.projection"])
