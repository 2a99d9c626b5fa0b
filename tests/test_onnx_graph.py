"""The two graphs, built from the reference, before any packaging."""

import functools
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from elmo_export.model import LstmState
from elmo_export.onnx_graph import build_bilm, build_token_embedder
from elmo_runtime.chars import batch_to_char_ids


@functools.cache  # one build per model and precision, shared by the parametrized tests
def sessions(model, precision="fp32"):
    graphs = build_token_embedder(model, precision), build_bilm(model, precision)
    for graph in graphs:
        onnx.checker.check_model(graph, full_check=True)
        onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    return [ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"]) for g in graphs]


def run(te, bilm, ids, h, c):
    emb, mask = te.run(None, {"char_ids": ids})
    return (
        *bilm.run(
            None,
            {
                "token_embeddings": emb,
                "mask": mask,
                "initial_h": h,
                "initial_c": c,
                "sentence_edges": np.ones((1, 2), np.int64),
            },
        ),
        mask,
    )


def test_the_recurrence_is_a_scan_not_unrolled(tiny_model):
    graph = build_bilm(tiny_model)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Scan") == tiny_model.options.n_layers
    # Unrolled, there would be MatMuls per step in the main graph: only the hoisted input
    # products are there, one per gate, direction and layer.
    assert ops.count("MatMul") == 4 * 2 * tiny_model.options.n_layers
    bodies = [n.attribute[0].g for n in graph.graph.node if n.op_type == "Scan"]
    # Per step and direction: one product per gate, then the projection.
    assert all([n.op_type for n in body.node].count("MatMul") == 2 * (4 + 1) for body in bodies)


# Rows in any order, ties, empty rows, all rows empty, padding columns past the longest row:
# the graph sorts rows by length and computes only those still running at each step.
@pytest.mark.parametrize(
    "lengths, padding", [([1], 0), ([7, 3, 12], 0), ([40, 1], 0), ([3, 0, 3, 9, 0], 0), ([0, 0], 1), ([2, 5], 3)]
)
def test_graphs_match_the_reference_for_any_batch_and_length(tiny_model, sizes, lengths, padding):
    te, bilm = sessions(tiny_model)
    rng = np.random.default_rng(len(lengths))
    words = ["the", "cat", "sat", "on", "mat", ",", "Zürich", "x" * 60, "1,000", "."]
    batch = [[words[i] for i in rng.integers(0, len(words), n)] for n in lengths]
    ids = batch_to_char_ids(batch)
    ids = np.pad(ids, [(0, 0), (0, padding), (0, 0)])
    b = len(batch)
    h = rng.normal(size=(sizes.n_layers, 2, b, sizes.projection_dim)).astype(np.float32)
    c = rng.normal(size=(sizes.n_layers, 2, b, sizes.cells)).astype(np.float32)
    layers, fh, fc, mask = run(te, bilm, ids, h, c)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(ids), LstmState(torch.from_numpy(h), torch.from_numpy(c)))
    np.testing.assert_array_equal(mask, ref.mask.numpy().astype(np.int32))
    np.testing.assert_allclose(layers, ref.layers.numpy(), atol=1e-5)
    np.testing.assert_allclose(fh, ref.state.h.numpy(), atol=1e-5)
    np.testing.assert_allclose(fc, ref.state.c.numpy(), atol=1e-5)


def test_fp16_graphs_run_on_the_cpu_close_to_fp32(tiny_model, sizes):
    te, bilm = sessions(tiny_model, "fp16")
    ids = batch_to_char_ids([["Half", "precision", "still", "works", "."], ["Yes"]])
    h = np.zeros((sizes.n_layers, 2, 2, sizes.projection_dim), np.float32)
    c = np.zeros((sizes.n_layers, 2, 2, sizes.cells), np.float32)
    layers, _, _, mask = run(te, bilm, ids, h, c)
    assert layers.dtype == np.float32
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(ids)).layers.numpy()
    got, want = layers[:, mask.astype(bool)], ref[:, mask.astype(bool)]  # (L+1, tokens, 2P)
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() > 0.999


def _token_embeddings_float64(model, char_ids: np.ndarray) -> np.ndarray:
    """The char CNN in numpy float64, written independently of torch: other kernels, other
    summation orders, as another CPU's would be. `(N, C)` char ids -> `(N, P)`."""
    te = model.token_embedder
    weight = lambda module: module.weight.detach().numpy().astype(np.float64)  # noqa: E731
    bias = lambda module: module.bias.detach().numpy().astype(np.float64)  # noqa: E731
    act = np.tanh if te.activation is torch.tanh else (lambda v: np.maximum(v, 0.0))
    x = weight(te.char_embedding)[char_ids]  # (N, C, E)
    pooled = []
    for conv in te.convolutions:
        w = weight(conv)  # (F, E, K)
        k = w.shape[2]
        windows = np.stack([x[:, i : i + k, :] for i in range(x.shape[1] - k + 1)], axis=1)  # (N, C-K+1, K, E)
        out = np.einsum("npke,fek->npf", windows, w) + bias(conv)  # (N, C-K+1, F)
        pooled.append(act(out.max(axis=1)))
    x = np.concatenate(pooled, axis=-1)  # (N, F)
    for transform, carry in zip(te.highway_transform, te.highway_carry):
        gate = 1.0 / (1.0 + np.exp(-(x @ weight(carry).T + bias(carry))))
        x = gate * np.maximum(x @ weight(transform).T + bias(transform), 0.0) + (1.0 - gate) * x
    if te.projection is not None:
        x = x @ weight(te.projection).T + bias(te.projection)
    return x


def test_the_boundary_constants_do_not_depend_on_the_cpus_kernels():
    # Float32 kernels differ in the last bits between CPUs (an Intel AVX-512 export of the default
    # model's <S>/</S> embeddings was up to 7.2e-7 off the AMD one), which made the shipped package's
    # bytes depend on the CPU that exported it. Computed in float64 and rounded once, they equal
    # an independent float64 computation with other kernels, bit for bit.
    from elmo_export.onnx_graph import _boundary_embeddings
    from elmo_export.weights import load_reference

    folder = Path(__file__).parent.parent / "models" / "default-wordnet"
    model = load_reference(folder / "options.json", folder / "weights.hdf5")
    bos, eos = _boundary_embeddings(model)
    ids = torch.stack([model.bos_char_ids, model.eos_char_ids]).numpy()
    independent = _token_embeddings_float64(model, ids).astype(np.float32)
    assert bos.dtype == np.float32 and bos.tobytes() == independent[0].tobytes()
    assert eos.tobytes() == independent[1].tobytes()
    with torch.no_grad():  # what the float32 path this replaced gives: other bits, the test's point
        single = model.token_embedder(torch.from_numpy(ids)[None], model.boundary_word_ids[None])[0].numpy()
    assert np.abs(single - np.stack([bos, eos])).max() > 0
