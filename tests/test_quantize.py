"""Quantization wrappers: graph in, graph out, every weight MatMul reached (Scan bodies included)."""

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from elmo_export.calibration import input_moments, load_calibration_sentences
from elmo_export.onnx_graph import build_bilm, build_token_embedder
from elmo_export.quantize import (
    Int4Settings,
    Int8Settings,
    float_weight_matmuls,
    op_counts,
    quantize,
    quantize_int4,
    quantize_int8,
    sort_nodes,
)


@pytest.fixture(scope="module")
def graphs(tiny_model):
    return {"token_embedder": build_token_embedder(tiny_model), "bilm": build_bilm(tiny_model)}


@pytest.fixture(scope="module")
def moments(tiny_model):
    """int4 GPTQ's input moments by weight name, as the exporter makes them (a shorter text)."""
    sources = {}
    build_token_embedder(tiny_model, sources=sources)
    build_bilm(tiny_model, sources=sources)
    by_module = input_moments(tiny_model, load_calibration_sentences()[0][:20], set(sources.values()))
    return {weight: by_module[path] for weight, path in sources.items()}


def _subgraph_initializers(graph):
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from attr.g.initializer
                yield from _subgraph_initializers(attr.g)


def test_int8_quantizes_every_weight_matmul_including_the_scan_bodies(graphs, tiny_model):
    n_layers = tiny_model.options.n_layers
    bilm = quantize_int8(graphs["bilm"])
    counts = op_counts(bilm)
    # The hoisted input products: one per gate, direction and layer in the main graph; in each
    # layer's Scan body, per direction, one hidden-to-gate product per gate and the projection.
    assert counts["main"]["MatMulIntegerToFloat"] == 4 * 2 * n_layers
    assert counts["subgraphs"]["MatMulIntegerToFloat"] == (4 + 1) * 2 * n_layers
    # One quantization per activation, shared by the gates that read it: per layer and
    # direction, the packed inputs in the main graph, h and the projection's input per step.
    assert counts["main"]["QuantizeLinear"] == 2 * n_layers
    assert counts["subgraphs"]["QuantizeLinear"] == 2 * 2 * n_layers
    assert counts["main"]["MatMul"] == counts["subgraphs"]["MatMul"] == 0
    assert float_weight_matmuls(bilm) == []
    assert float_weight_matmuls(quantize_int8(graphs["token_embedder"])) == []


@pytest.mark.parametrize("rounding", ["gptq", "rtn"])
def test_int4_quantizes_the_scan_bodies_and_keeps_the_char_cnn_and_projection_float(
    graphs, tiny_model, moments, rounding
):
    n_layers = tiny_model.options.n_layers
    settings = Int4Settings(rounding=rounding)
    bilm = quantize_int4(graphs["bilm"], settings, moments)
    counts = op_counts(bilm)
    assert counts["main"]["MatMulNBits"] == 4 * 2 * n_layers
    assert counts["subgraphs"]["MatMulNBits"] == (4 + 1) * 2 * n_layers
    assert float_weight_matmuls(bilm) == []
    # The float weights it replaced are gone from the Scan bodies too (no size saved otherwise).
    float_weights = {t.name for t in _subgraph_initializers(graphs["bilm"].graph) if len(t.dims) == 2}
    assert float_weights and not float_weights & {t.name for t in _subgraph_initializers(bilm.graph)}

    embedder = quantize_int4(graphs["token_embedder"], settings, moments)
    left = float_weight_matmuls(embedder)
    n_filters = len(tiny_model.options.filters)
    assert len(left) == n_filters + 1  # the char CNN kernels and the projection, by design
    assert all("W_cnn" in line or "W_proj" in line for line in left)
    assert op_counts(embedder)["main"]["MatMulNBits"] == tiny_model.options.n_highway


def test_nothing_kept_float_quantizes_every_matmul(graphs, moments):
    # The char CNN's products have no moments (their input is a char window): rounded to nearest.
    assert not any("W_cnn" in name for name in moments)
    embedder = quantize_int4(graphs["token_embedder"], Int4Settings(keep_float=()), moments)
    assert float_weight_matmuls(embedder) == []


def test_gptq_needs_the_moments_and_says_so(graphs):
    with pytest.raises(ValueError, match="input moments"):
        quantize_int4(graphs["bilm"], Int4Settings())


def _weight_scale_sizes(graph):
    """{"main": sizes, "steps": sizes}: how many scales each quantized weight has, by location."""
    sizes = {"main": set(), "steps": set()}
    for name, tensors in [("main", graph.initializer), ("steps", list(_subgraph_initializers(graph)))]:
        for t in tensors:
            if "/W_" in t.name and t.name.endswith("_scale"):
                sizes[name].add(int(np.prod(t.dims)))
    return sizes


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("per_channel_steps", [True, False])
def test_int8_scales_per_column_or_per_matrix_outside_and_inside_the_recurrence(
    graphs, tiny_model, per_channel, per_channel_steps
):
    d, p = tiny_model.options.dim, tiny_model.options.projection_dim
    settings = Int8Settings(per_channel=per_channel, per_channel_steps=per_channel_steps)
    bilm = quantize_int8(graphs["bilm"], settings)
    sizes = _weight_scale_sizes(bilm.graph)
    # Outside: the input products (D columns); inside: the gate products (D) and projection (P).
    assert sizes["main"] == ({d} if per_channel else {1})
    assert sizes["steps"] == ({d, p} if per_channel_steps else {1})
    assert float_weight_matmuls(bilm) == []


@pytest.mark.parametrize(
    "settings",
    [
        Int8Settings(),
        Int8Settings(per_channel=False, weight_type="QUInt8"),
        Int8Settings(per_channel_steps=True),
        Int4Settings(),
        Int4Settings(rounding="rtn"),
        Int4Settings(rounding="rtn", block_size=128, symmetric=True),
    ],
)
def test_quantized_graphs_pass_the_checker_and_run_close_to_fp32(graphs, sizes, settings, moments):
    rng = np.random.default_rng(0)
    b, t = 2, 5
    feeds = {
        "token_embeddings": rng.normal(size=(b, t, sizes.projection_dim)).astype(np.float32),
        "mask": np.array([[1] * 5, [1] * 3 + [0] * 2], np.int32),
        "initial_h": np.zeros((sizes.n_layers, 2, b, sizes.projection_dim), np.float32),
        "initial_c": np.zeros((sizes.n_layers, 2, b, sizes.cells), np.float32),
        "sentence_edges": np.ones((1, 2), np.int64),
    }
    runs = []
    for graph in (graphs["bilm"], quantize(graphs["bilm"], settings, moments)):
        onnx.checker.check_model(graph, full_check=True)
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        runs.append(session.run(["layers"], feeds)[0])
    want, got = runs
    cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1) + 1e-12)
    assert cos[:, feeds["mask"].astype(bool)].mean() > 0.95


def test_quantizing_leaves_the_input_graph_unchanged(graphs, moments):
    before = graphs["bilm"].SerializeToString()
    quantize_int4(graphs["bilm"], Int4Settings(), moments)
    quantize_int4(graphs["bilm"], Int4Settings(rounding="rtn"))
    quantize_int8(graphs["bilm"])
    assert graphs["bilm"].SerializeToString() == before


def test_int4_block_size_shrinks_only_for_matrices_with_few_rows():
    s = Int4Settings()
    assert [s.block_size_for(k) for k in (16, 64, 124, 128, 256, 512, 4096)] == [16, 16, 16, 32, 64, 64, 64]
    assert Int4Settings(block_size=32, min_blocks=1).block_size_for(16) == 16


def test_settings_reject_bad_values_by_name():
    with pytest.raises(ValueError, match="block_size is 48"):
        Int4Settings(block_size=48)
    with pytest.raises(ValueError, match="accuracy_level"):
        Int4Settings(accuracy_level=7)
    with pytest.raises(ValueError, match="rounding is 'awq'"):
        Int4Settings(rounding="awq")
    with pytest.raises(ValueError, match="symmetric blocks are for rounding='rtn'"):
        Int4Settings(symmetric=True)
    with pytest.raises(ValueError, match="damp is 2"):
        Int4Settings(damp=2)
    with pytest.raises(ValueError, match="QInt4"):
        Int8Settings(weight_type="QInt4")
    with pytest.raises(TypeError, match="op_types"):  # not a setting: MatMul is the only op with weights
        Int8Settings(op_types=("Conv",))
    with pytest.raises(TypeError, match="Int8Settings or Int4Settings"):
        quantize(onnx.ModelProto(), "int8")


def test_settings_describe_themselves_for_the_manifest():
    int8, int4 = Int8Settings().to_dict(), Int4Settings().to_dict()
    assert int8["name"] == "int8" and int8["per_channel"] is True and int8["weight_type"] == "QInt8"
    assert int8["devices"] == ["cpu"]
    assert int4["name"] == "int4" and int4["block_size"] == 64 and int4["symmetric"] is False
    assert int4["keep_float"] == ["W_cnn", "W_proj"]
    assert int4["rounding"] == "gptq" and int4["tool"] == "elmo_export.quantize.gptq.quantize_gptq"
    assert Int4Settings(rounding="rtn").to_dict()["method"] == "weight-only block-wise, round to nearest"


def test_every_precision_has_typed_settings_with_its_name_manifest_entry_and_tolerance(tiny_model):
    from elmo_export import ExportSettings, Fp16Settings, Fp32Settings
    from elmo_export.parity import PARITY_TOLERANCES
    from elmo_export.quantize import DEFAULT_SETTINGS
    from elmo_runtime import contract as C

    assert tuple(DEFAULT_SETTINGS) == C.PRECISIONS  # the contract's list is the only one
    assert Fp32Settings().to_dict() == {"name": "fp32"}
    assert Fp16Settings().to_dict() == {
        "name": "fp16",
        "weights": "float16",
        "compute": "float16",
        "inputs_outputs": "float32",
    }
    for name, settings in DEFAULT_SETTINGS.items():
        assert settings.name == settings.to_dict()["name"] == name
        assert settings.parity_tolerance(tiny_model.options) == PARITY_TOLERANCES[name]
    # A name (or its alias) becomes its settings; settings pass through as given.
    assert ExportSettings(precision="none").precision == Fp32Settings()
    own = Int4Settings(block_size=128)
    assert ExportSettings(precision=own).precision is own
    assert ExportSettings(precision="int4").quantization == Int4Settings()
    assert ExportSettings(precision="fp16").quantization is None


def test_int4_without_onnx_ir_says_what_to_install(graphs, monkeypatch):
    monkeypatch.delitem(sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer", raising=False)
    monkeypatch.setitem(sys.modules, "onnx_ir", None)
    with pytest.raises(ImportError, match="onnx-ir"):
        quantize_int4(graphs["bilm"], Int4Settings(rounding="rtn"))


def test_sort_nodes_puts_what_a_scan_body_reads_from_outside_before_the_scan(graphs):
    model = onnx.ModelProto()
    model.CopyFrom(graphs["bilm"])
    nodes = list(model.graph.node)[::-1]  # every producer after its users, Scans first
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)
    sort_nodes(model.graph)
    onnx.checker.check_model(model, full_check=True)
    positions = {out: k for k, node in enumerate(model.graph.node) for out in node.output}
    scans = [k for k, node in enumerate(model.graph.node) if node.op_type == "Scan"]
    # Each Scan comes after the hoisted products its body reads (outer-scope names, no inputs).
    for k in scans:
        body = model.graph.node[k].attribute[0].g
        outer = {name for node in body.node for name in node.input if name in positions}
        assert outer and all(positions[name] < k for name in outer)


def _quantized_inputs(graph):
    """{activation name: how it is quantized} over the graph and its subgraphs."""
    found = {}
    for g in [graph, *(a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)]:
        init = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
        for node in g.node:
            if node.op_type == "QuantizeLinear":
                per_row = node.input[0].endswith("_in_levels")
                scale = None if per_row else float(init[node.input[1]]) if node.input[1] in init else "outer"
                found[node.input[0]] = ("per row" if per_row else scale, int(init[node.input[2]]))
    return found


def test_int8_takes_fixed_scales_from_the_graphs_bounds_and_per_row_scales_elsewhere(graphs, tiny_model):
    o = tiny_model.options
    found = _quantized_inputs(quantize_int8(graphs["bilm"]).graph)
    fixed = sorted((round(v[0], 9), v[1]) for v in found.values() if v[0] != "per row")
    # Per layer and direction, h (within proj_clip) and the projection's input sigmoid * tanh
    # (within 1), around zero point 128; the second layer's packed inputs are the first
    # layer's h: within proj_clip too.
    want = [(round(o.proj_clip / 127, 9), 128)] * (2 * o.n_layers + 2 * (o.n_layers - 1)) + [
        (round(1 / 127, 9), 128)
    ] * 2 * o.n_layers
    assert fixed == sorted(want)
    # The first layer's packed inputs are token embeddings: no bound, a scale per row.
    assert [v for v in found.values() if v[0] == "per row"] == [("per row", 128)] * 2

    embedder = _quantized_inputs(quantize_int8(graphs["token_embedder"]).graph)
    # The char CNN's windows are rows of the char embedding table: its range, a fixed scale.
    # After the ReLUs, the highway and projection inputs are non-negative (all 255 levels
    # above zero point 0), with a scale per row.
    table = onnx.numpy_helper.to_array(
        next(t for t in graphs["token_embedder"].graph.initializer if "char_embedding" in t.name)
    )
    windows = sorted(v for v in embedder.values() if v[1] == 128)
    assert windows == [(pytest.approx(np.abs(table).max() / 127), 128)] * len(o.filters)
    assert sorted(v for v in embedder.values() if v[1] == 0) == [("per row", 0)] * (o.n_highway + 1)

    per_row_only = _quantized_inputs(quantize_int8(graphs["bilm"], Int8Settings(fixed_scales=False)).graph)
    assert all(v[0] == "per row" for v in per_row_only.values())


def test_int8_products_with_a_fixed_scale_add_their_bias_themselves(graphs, tiny_model):
    """The second layer's input products (fixed scale) take the LSTM bias as the op's 7th
    input, and its Add is gone; the first layer's (a scale per row) keep Mul, then Add."""
    n_layers = tiny_model.options.n_layers
    graph = quantize_int8(graphs["bilm"]).graph
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    products = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    with_bias = [n for n in products if len(n.input) == 7]
    assert len(with_bias) == 4 * 2 * (n_layers - 1)
    assert not any("Add" in readers.get(n.output[0], []) for n in with_bias)  # read by the Scan bodies
    assert sorted(readers[n.output[0]] for n in products if len(n.input) == 6) == [["Mul"]] * 4 * 2
    assert op_counts(quantize_int8(graphs["bilm"]))["main"]["Add"] == op_counts(graphs["bilm"])["main"]["Add"] - len(
        with_bias
    )
    # The Scan bodies' products have no bias of their own: nothing folded there.
    assert op_counts(quantize_int8(graphs["bilm"]))["subgraphs"]["Add"] == op_counts(graphs["bilm"])["subgraphs"]["Add"]


def test_activation_ranges_prove_the_lstm_state_bounded_by_induction(graphs, tiny_model):
    from elmo_export.quantize import activation_ranges

    ranges = activation_ranges(graphs["bilm"].graph, {})
    scans = [n for n in graphs["bilm"].graph.node if n.op_type == "Scan"]
    clip = tiny_model.options.proj_clip
    for scan in scans:
        # Outputs 0 and 2: each direction's final h; 4 and 5: h at every step.
        assert [ranges[scan.output[k]] for k in (0, 2, 4, 5)] == [(-clip, clip)] * 4
    assert ranges.get("layers", (-np.inf, np.inf)) == (-np.inf, np.inf)  # layer 0 is unbounded


@pytest.mark.parametrize("settings", [Int8Settings(), Int8Settings(fixed_scales=False, per_channel_steps=True)])
def test_int8_rows_do_not_depend_on_the_other_rows(graphs, settings):
    rng = np.random.default_rng(1)
    b, t = 6, 7
    lengths = np.array([7, 2, 5, 1, 7, 4])
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    feeds = {
        # Rows of very different magnitudes: one scale for all would quantize the small ones coarsely.
        "token_embeddings": (rng.normal(size=(b, t, 16)) * mask[..., None] * rng.uniform(0.1, 10, (b, 1, 1))).astype(
            np.float32
        ),
        "mask": mask,
        "initial_h": np.zeros((2, 2, b, 16), np.float32),
        "initial_c": np.zeros((2, 2, b, 64), np.float32),
        "sentence_edges": np.ones((1, 2), np.int64),
    }
    session = ort.InferenceSession(
        quantize_int8(graphs["bilm"], settings).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    together = session.run(["layers"], feeds)[0]
    for row, n in enumerate(lengths):
        one = {
            "token_embeddings": feeds["token_embeddings"][row : row + 1, :n],
            "mask": mask[row : row + 1, :n],
            "initial_h": feeds["initial_h"][:, :, :1],
            "initial_c": feeds["initial_c"][:, :, :1],
            "sentence_edges": feeds["sentence_edges"],
        }
        assert np.array_equal(session.run(["layers"], one)[0][:, 0], together[:, row, :n])
