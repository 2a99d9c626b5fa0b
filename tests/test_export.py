"""Exported packages: parity per precision, the TF fixtures through ONNX Runtime, the manifest,
the state contract, and the errors for bad inputs and outputs."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tf_fixtures import FIXTURE_SETS, FIXTURES, load_fixture_set

from elmo_export import ExportSettings, export_package, onnx_graph, parity
from elmo_export.calibration import CALIBRATION_SOURCE, load_calibration_sentences
from elmo_export.conformance import load_builtin, load_sentences
from elmo_export.graph_io import GraphValidationError, graph_specs, validate_graph
from elmo_export.model import LstmState
from elmo_export.parity import ParityError
from elmo_export.warmup import load_warmup_sentences, warm_state
from elmo_export.weights import WeightFileError
from elmo_runtime import contract as C
from elmo_runtime.chars import batch_to_char_ids
from elmo_runtime.compare import Tolerance
from elmo_runtime.package import load_manifest, state_digest
from elmo_runtime.runner import PackageRunner

MODELS = ["tiny", *FIXTURE_SETS]


def manifest_of(package):
    return json.loads((package / C.MANIFEST_FILE).read_text())


@pytest.mark.parametrize("quantize", C.PRECISIONS)
@pytest.mark.parametrize("name", MODELS)
def test_every_precision_meets_its_tolerance(exported, name, quantize):
    """The exporter's own verdict, re-read; its value is the bars below, which duplicate
    `parity.PARITY_TOLERANCES` on purpose: loosening a tolerance there fails here."""
    report = manifest_of(exported(name, quantize))["parity"]
    assert report["passed"] and report["failures"] == []
    assert [m["mode"] for m in report["modes"]] == ["zero", "warm", "carried"]
    assert report["sentences"] == 24
    worst = report["worst"]
    if quantize == "fp32":
        assert worst["max_abs"] <= 1e-5 and worst["final_state_max_abs"] <= 1e-5
    elif quantize == "fp16":
        assert worst["min_cosine"] >= 0.999
    else:
        assert worst["mean_cosine"] >= {"int8": 0.99, "int4": 0.98}[quantize]


@pytest.mark.parametrize("name", FIXTURE_SETS)
def test_fp32_package_reproduces_tensorflow_with_state_carried(exported, name):
    fixture = load_fixture_set(name)
    runner = PackageRunner(exported(name), device="cpu")
    h, c = runner.initial_state("zero", 3)  # the fixtures start from zeros
    checked = 0
    for i, batch in enumerate(fixture.batches):
        layers, _, h, c = runner.run(batch_to_char_ids(batch), h, c)
        for row, sentence in enumerate(batch):
            if (i, row) in fixture.expected:
                np.testing.assert_allclose(
                    layers[-1, row, : len(sentence)], fixture.expected[i, row], atol=1e-6, rtol=1e-5
                )
                checked += 1
    assert checked == (30 if name == "bilm-tf" else 10)


def test_char_cnn_of_the_package_reproduces_tensorflow_token_embeddings(exported):
    import h5py

    from elmo_runtime.chars import tokens_to_char_ids

    folder = FIXTURES / "allennlp-elmo"
    runner = PackageRunner(exported("allennlp-elmo"), device="cpu")
    words = (folder / "vocab_test.txt").read_text().strip().split("\n")
    with h5py.File(folder / "elmo_token_embeddings.hdf5") as fin:
        expected = fin["embedding"][...]
    emb, mask = runner.token_embeddings(tokens_to_char_ids(words)[None])
    assert mask.all()
    np.testing.assert_allclose(emb[0], expected, atol=1e-6, rtol=1e-5)


def test_carrying_state_through_onnx_equals_carrying_through_the_reference(exported, tiny_model):
    runner = PackageRunner(exported("tiny"), device="cpu")
    batches = [
        [["The", "cat", "sat", "."], ["Hi"], ["A", "longer", "one", "with", "more", "tokens", "."]],
        [["Then"], ["it", "rained", "all", "day"], ["Zürich", "x" * 60]],
        [["Yes", "."], ["No", "!"], ["Maybe", "later", ",", "perhaps", "."]],
    ]
    h, c = runner.initial_state("warm", 3)
    state = LstmState(torch.from_numpy(h.copy()), torch.from_numpy(c.copy()))
    for batch in batches:
        ids = batch_to_char_ids(batch)
        layers, mask, h, c = runner.run(ids, h, c)
        with torch.no_grad():
            ref = tiny_model(torch.from_numpy(ids), state)
        state = ref.state
        np.testing.assert_array_equal(mask.astype(bool), ref.mask.numpy())
        np.testing.assert_allclose(layers, ref.layers.numpy(), atol=1e-5)
        np.testing.assert_allclose(h, ref.state.h.numpy(), atol=1e-5)
        np.testing.assert_allclose(c, ref.state.c.numpy(), atol=1e-5)


def test_manifest_has_the_contract_keys_and_true_hashes(exported, tiny_weights, tiny_model):
    package = exported("tiny", "int8")
    manifest = manifest_of(package)
    assert list(manifest) == [
        "format_version",
        "producer",
        "architecture",
        "chars",
        "graphs",
        "pipeline",
        "precision",
        "opset",
        "initial_state",
        "sentences",
        "conformance",
        "source",
        "files",
        "parity",
    ]
    assert manifest["format_version"] == C.FORMAT_VERSION
    assert manifest["producer"]["name"] == "elmo-onnx" and manifest["producer"]["version"]
    assert manifest["architecture"] == tiny_model.options.to_dict()
    assert manifest["chars"] == C.char_constants()
    assert manifest["graphs"] == {name: spec.to_dict() for name, spec in graph_specs(tiny_model.options).items()}
    o = tiny_model.options
    assert manifest["graphs"]["bilm"]["inputs"]["initial_h"] == {
        "dtype": "float32",
        "shape": [o.n_layers, 2, "batch", o.projection_dim],
    }
    assert manifest["precision"]["name"] == "int8" and manifest["precision"]["per_channel"] is True
    assert manifest["opset"] == C.DEFAULT_OPSET

    # Every file but the manifest, with its true sha256 and size.
    on_disk = {p.name for p in package.iterdir()} - {C.MANIFEST_FILE}
    assert (
        set(manifest["files"])
        == on_disk
        == {
            C.TOKEN_EMBEDDER_FILE,
            C.BILM_FILE,
            C.TOKEN_EMBEDDER_FILE + ".data",
            C.BILM_FILE + ".data",
            C.CONFORMANCE_FILE,
        }
    )
    for name, entry in manifest["files"].items():
        data = (package / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    options, weights = tiny_weights
    assert manifest["source"] == {
        "options_file": "options.json",
        "options_sha256": hashlib.sha256(Path(options).read_bytes()).hexdigest(),
        "weights_file": "weights.hdf5",
        "weights_sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
    }
    load_manifest(package, verify_files=True)


def test_warm_state_is_the_reference_state_after_the_warmup_text(exported, tiny_model):
    state = manifest_of(exported("tiny"))["initial_state"]
    assert state["mode"] == "warm"
    sentences, sha = load_warmup_sentences()
    assert state["warmup"]["sentences"] == len(sentences) >= 5 and state["warmup"]["batch_size"] == 1
    assert state["warmup"]["text_sha256"] == sha
    assert sum(map(len, sentences)) > 250  # a few hundred words of real prose
    want = warm_state(tiny_model, sentences)
    # Stored as float32 decimals that read back exactly.
    np.testing.assert_array_equal(np.asarray(state["h"], np.float32), want.h.numpy())
    np.testing.assert_array_equal(np.asarray(state["c"], np.float32), want.c.numpy())
    assert np.abs(want.h.numpy()).max() > 0.01  # not a zero state


def test_zero_initial_state_is_stated_as_zeros(exported, tiny_model):
    package = exported("tiny", "fp32", "zero")
    manifest = manifest_of(package)
    state, o = manifest["initial_state"], tiny_model.options
    assert {k: v for k, v in state.items() if k not in ("h", "c", "sha256")} == {"mode": "zero", **C.STATE_LAYOUT}
    assert state["sha256"] == state_digest(np.asarray(state["h"], np.float32), np.asarray(state["c"], np.float32))
    assert np.asarray(state["h"]).shape == (o.n_layers, 2, o.projection_dim) and not np.asarray(state["h"]).any()
    assert np.asarray(state["c"]).shape == (o.n_layers, 2, o.dim) and not np.asarray(state["c"]).any()
    assert [m["mode"] for m in manifest["parity"]["modes"]] == ["zero", "carried"]
    assert PackageRunner(package, device="cpu").manifest.warm_h is None


def test_other_opsets_export(tmp_path, tiny_weights):
    package = export_package(*tiny_weights, tmp_path / "opset21", opset=21, precision="int8", progress=False)
    assert manifest_of(package)["opset"] == 21
    assert onnx.load(package / C.BILM_FILE).opset_import[0].version == 21


def test_weights_go_to_external_data_files(exported):
    package = exported("tiny")
    files = manifest_of(package)["files"]
    assert set(files) == {
        C.TOKEN_EMBEDDER_FILE,
        C.BILM_FILE,
        C.TOKEN_EMBEDDER_FILE + ".data",
        C.BILM_FILE + ".data",
        C.CONFORMANCE_FILE,
    }
    assert manifest_of(package)["parity"]["passed"]
    graph = onnx.load(package / C.BILM_FILE, load_external_data=False)
    # The LSTM's recurrent weights live in the Scan bodies: those go external too.
    bodies = [a.g for n in graph.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    weights = [t for g in [graph.graph, *bodies] for t in g.initializer if np.prod(t.dims) > 256]
    assert len(bodies) == 2 and len(weights) > 8
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in weights)


# -- failures -----------------------------------------------------------------------------------


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_parity_failure_raises_and_leaves_no_package(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.setitem(parity.PARITY_TOLERANCES, "fp32", Tolerance(min_cosine=1.5))
    out = tmp_path / "pkg"
    with pytest.raises(ParityError) as info:
        export_package(*tiny_weights, out, progress=False)
    # The conformance sentences are checked first: every layer of every state mode of each, then the
    # time-chunks case and each non-empty row of the stream (in the warm state), all listed.
    rows = sum(1 for call in load_builtin()["stream"]["calls"] for sentence in call if sentence)
    assert len(info.value.failures) == (len([s for s in load_sentences() if s["tokens"]]) * 2 + 1 + rows) * 3
    assert all(f.startswith("conformance sentence ") and "min cosine" in f for f in info.value.failures)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_corrupted_graph_weight_fails_parity(tmp_path, tiny_weights, monkeypatch):
    build = onnx_graph.build_bilm

    def corrupted(model, *args, **kwargs):
        graph = build(model, *args, **kwargs)
        scan = next(n for n in graph.graph.node if n.op_type == "Scan")
        body = scan.attribute[0].g
        weight = next(t for t in body.initializer if len(t.dims) == 2)
        value = onnx.numpy_helper.to_array(weight).copy()
        value[0, 0] += 1.0
        weight.CopyFrom(onnx.numpy_helper.from_array(value, weight.name))
        return graph

    monkeypatch.setattr(onnx_graph, "build_bilm", corrupted)
    out = tmp_path / "pkg"
    with pytest.raises(ParityError, match="max abs difference"):
        export_package(*tiny_weights, out, progress=False)
    assert not out.exists() and _leftovers(tmp_path) == []


def _zero_first_tokens(graph: onnx.GraphProto) -> None:
    """Make a biLM graph's layers zero at every sentence's first position: a package that drops
    some tokens' vectors while its mask stays right."""
    from onnx import TensorProto, helper

    for node in graph.node:
        node.output[:] = ["raw_layers" if o == C.LAYERS else o for o in node.output]
    graph.initializer.extend(
        [
            helper.make_tensor("t_axis", TensorProto.INT64, [1], [2]),
            helper.make_tensor("zero", TensorProto.INT64, [], [0]),
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
            helper.make_tensor("last_axis", TensorProto.INT64, [1], [1]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Shape", ["raw_layers"], ["shape"]),
            helper.make_node("Gather", ["shape", "t_axis"], ["t"]),
            helper.make_node("Squeeze", ["t"], ["t_scalar"]),
            helper.make_node("Range", ["zero", "t_scalar", "one"], ["positions"]),
            helper.make_node("Greater", ["positions", "zero"], ["kept"]),
            helper.make_node("Cast", ["kept"], ["keep"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["keep", "last_axis"], ["keep_column"]),  # (T, 1)
            helper.make_node("Mul", ["raw_layers", "keep_column"], [C.LAYERS]),
        ]
    )


def test_the_conformance_check_fails_an_export_that_zeroes_some_tokens(tmp_path, tiny_weights, monkeypatch):
    """A zero vector against a non-zero one scores cosine 0, not 1: the int8 mean-cosine bar
    catches the dropped tokens in the conformance sentences, and nothing is written."""
    build = onnx_graph.build_bilm

    def tampered(model, *args, **kwargs):
        built = build(model, *args, **kwargs)
        _zero_first_tokens(built.graph)
        return built

    monkeypatch.setattr(onnx_graph, "build_bilm", tampered)
    out = tmp_path / "pkg"
    with pytest.raises(ParityError) as info:
        export_package(*tiny_weights, out, precision="int8", progress=False)
    assert "conformance sentence 'one token', state zero, layer 0: mean cosine 0.000000 < 0.99" in info.value.failures
    assert all(f.startswith("conformance sentence ") and ": mean cosine " in f for f in info.value.failures)
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("tamper", [False, True])
def test_the_int8_parity_gate_fails_a_package_that_zeroes_some_tokens(tmp_path, exported, tiny_model, tamper):
    """The gate itself on the same tamper, applied to an exported int8 package (re-hashed): it
    fails on mean cosine with a min cosine of exactly 0; untampered, the same package passes."""
    package = tmp_path / "pkg"
    shutil.copytree(exported("tiny", "int8"), package)
    if tamper:
        manifest = manifest_of(package)
        bilm = package / manifest["graphs"]["bilm"]["file"]
        graph = onnx.load(bilm)
        _zero_first_tokens(graph.graph)
        onnx.save(graph, bilm)
        manifest["files"][bilm.name].update(
            sha256=hashlib.sha256(bilm.read_bytes()).hexdigest(), bytes=bilm.stat().st_size
        )
        (package / C.MANIFEST_FILE).write_text(json.dumps(manifest))
    report = parity.check_parity(tiny_model, package, "int8", raise_on_failure=False)
    worst = report.worst()
    if not tamper:
        assert report.passed and worst["mean_cosine"] >= 0.99 and worst["min_cosine"] > 0.9
        return
    assert not report.passed and worst["min_cosine"] == 0.0 and worst["mean_cosine"] < 0.99
    assert report.failures and all(": mean cosine " in f for f in report.failures)


def test_an_existing_package_is_kept_when_the_new_one_fails(tmp_path, tiny_weights, monkeypatch):
    out = tmp_path / "pkg"
    export_package(*tiny_weights, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setitem(parity.PARITY_TOLERANCES, "int8", Tolerance(mean_cosine=1.5))
    with pytest.raises(ParityError):
        export_package(*tiny_weights, out, precision="int8", force=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_force_replaces_a_package_once_the_new_one_is_verified(tmp_path, tiny_weights):
    out = tmp_path / "pkg"
    export_package(*tiny_weights, out, progress=False)
    with pytest.raises(FileExistsError, match="not empty.*force"):
        export_package(*tiny_weights, out, precision="int8", progress=False)
    export_package(*tiny_weights, out, precision="int8", force=True, progress=False)
    assert manifest_of(out)["precision"]["name"] == "int8"
    assert _leftovers(tmp_path) == []


def test_force_never_deletes_a_directory_that_is_not_a_package(tmp_path, tiny_weights):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="no elmo-onnx package"):
        export_package(*tiny_weights, out, force=True, progress=False)
    assert (out / "notes.txt").read_text() == "precious"


def test_an_empty_output_directory_is_used(tmp_path, tiny_weights):
    out = tmp_path / "empty"
    out.mkdir()
    export_package(*tiny_weights, out, progress=False)
    assert (out / C.MANIFEST_FILE).is_file()


def test_missing_files_are_named(tmp_path, tiny_weights):
    options, weights = tiny_weights
    with pytest.raises(FileNotFoundError, match="options file not found"):
        export_package(tmp_path / "nope.json", weights, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        export_package(options, tmp_path / "nope.hdf5", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_mismatched_options_list_every_bad_dataset(tmp_path, tiny_weights):
    options, weights = tiny_weights
    data = json.loads(Path(options).read_text())
    data["lstm"]["dim"] = 32
    wrong = tmp_path / "options.json"
    wrong.write_text(json.dumps(data))
    with pytest.raises(WeightFileError, match=r"W_0.*has shape \(32, 256\), expected \(32, 128\)"):
        export_package(wrong, weights, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_is_a_clear_error(tmp_path, tiny_weights):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot write the package"):
        export_package(*tiny_weights, blocker / "out", progress=False)
    with pytest.raises(FileExistsError, match="not a directory"):
        export_package(*tiny_weights, blocker, progress=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_a_read_only_parent_is_a_clear_error(tmp_path, tiny_weights):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot write the package"):
            export_package(*tiny_weights, parent / "out", progress=False)
    finally:
        parent.chmod(0o700)


def test_bad_settings_name_the_allowed_values():
    with pytest.raises(ValueError, match="fp32, fp16, int8, int4"):
        ExportSettings(precision="int3")
    with pytest.raises(ValueError, match="warm, zero"):
        ExportSettings(initial_state="hot")
    with pytest.raises(ValueError, match="opset is 9"):
        ExportSettings(opset=9)


def test_int4_records_its_calibration_and_a_text_of_ones_own_changes_the_rounding(exported, tmp_path, tiny_weights):
    built_in = exported("tiny", "int4")
    calibration = manifest_of(built_in)["precision"]["calibration"]
    sentences, description = load_calibration_sentences()
    assert calibration == description and calibration["text"] == CALIBRATION_SOURCE
    assert calibration["tokens"] == sum(map(len, sentences)) > 1000
    own = tmp_path / "own.txt"
    own.write_text("Ein kleiner Text auf Deutsch .\nZwei Sätze , nicht mehr .\n", encoding="utf-8")
    package = export_package(*tiny_weights, tmp_path / "own", precision="int4", calibration=own, progress=False)
    assert manifest_of(package)["precision"]["calibration"] == {
        "text": "own.txt",
        "sha256": hashlib.sha256(own.read_bytes()).hexdigest(),
        "sentences": 2,
        "tokens": 12,
    }
    assert manifest_of(package)["parity"]["passed"]

    def bilm_bytes(directory):  # the graph, and its weights wherever they are stored
        return [p.read_bytes() for p in sorted(directory.glob(f"{C.BILM_FILE}*"))]

    assert bilm_bytes(package) != bilm_bytes(built_in)


def test_a_bad_calibration_text_is_named_before_anything_is_exported(tmp_path, tiny_weights):
    with pytest.raises(ValueError, match="calibration text is for int4 with GPTQ rounding; this export is int8"):
        ExportSettings(precision="int8", calibration=tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="calibration text .*missing.txt: no such file"):
        ExportSettings(precision="int4", calibration=tmp_path / "missing.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait .\n".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    for path, problem in [(latin1, "not UTF-8 text"), (empty, "no sentences")]:
        with pytest.raises(ValueError, match=f"calibration text .*{path.name}: {problem}"):
            export_package(*tiny_weights, tmp_path / "out", precision="int4", calibration=path, progress=False)
        assert not (tmp_path / "out").exists()


def test_validation_lists_every_spec_mismatch(tmp_path, tiny_model):
    graph = onnx_graph.build_bilm(tiny_model)
    graph.graph.output[0].name = "all_layers"
    next(n for n in graph.graph.node if C.LAYERS in n.output).output[0] = "all_layers"
    graph.graph.input[2].type.tensor_type.shape.dim[1].dim_value = 3
    path = tmp_path / "bilm.onnx"
    onnx.save(graph, path)
    with pytest.raises(GraphValidationError) as info:
        validate_graph(path, graph_specs(tiny_model.options)["bilm"])
    message = str(info.value)
    assert "outputs are ['all_layers', 'final_h', 'final_c']" in message
    assert "input 'initial_h'" in message
