"""NLPL's bilm-tf-format models: a model ZIP exports directly, whatever variation it has.

Each variation NLPL's models may have (char width other than 50, `n_characters` 261, no
`n_highway` or `n_layers` key, no `CNN_proj`, no `W_P_0`, no skip connections) has a synthetic
preset in bilm-tf's exact naming, written as NLPL serves it (a flat ZIP with `options.json`,
`model.hdf5`, `vocab.txt`, `meta.json`). Each exports through `elmo-export ZIP` (whose parity
gate checks the package against the reference), and the reference is checked against an
independent numpy computation of bilm-tf's graph, read straight from the HDF5 file, for every
preset (the variations that change the maths, no projection and no skip connections, among
them).
"""

from __future__ import annotations

import json
import zipfile

import h5py
import numpy as np
import pytest
import torch

from elmo_export.architectures import NLPL_VARIANTS as NLPL_PRESETS
from elmo_export.cli import main as export_main
from elmo_export.synthetic import write_nlpl_zip
from elmo_export.weights import load_reference
from elmo_runtime import Elmo
from elmo_runtime import contract as C
from elmo_runtime.conformance import verify_package

SENTENCES = [
    ["Det", "var", "en", "gang", "."],
    ["Привет", "мир", "очень-очень-длинное-слово-без-пробелов", "!"],
    ["x" * 70],
]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def bilm_tf_numpy(options: dict, weights: h5py.File, tokens: list[str]) -> np.ndarray:
    """bilm-tf's graph for one sentence from a zero state, in numpy: `(L + 1, T, 2 * P)`.

    Written from bilm-tf's `model.py` (UnicodeCharsVocabulary ids, conv2d VALID + max + relu,
    TF highway, optional CNN_proj, LSTMCell with forget_bias 1.0 and optional num_proj,
    ResidualWrapper from the second layer, the backward LM on the reversed sentence).
    """
    cnn, lstm = options["char_cnn"], options["lstm"]
    width = cnn.get("max_characters_per_token", 50)
    n_highway, n_layers = cnn.get("n_highway", 0), lstm.get("n_layers", 1)
    cell_clip, proj_clip = lstm.get("cell_clip"), lstm.get("proj_clip")

    def char_ids(token: str, boundary: int | None = None) -> np.ndarray:
        ids = np.full(width, 260)
        body = [boundary] if boundary is not None else list(token.encode("utf-8")[: width - 2])
        ids[0], ids[1 : len(body) + 1], ids[len(body) + 1] = 258, body, 259
        return ids + 1  # bilm-tf's Batcher adds 1; the embedding gets a zero row 0

    ids = np.stack([char_ids("", 256)] + [char_ids(t) for t in tokens] + [char_ids("", 257)])  # (T+2, C)
    table = np.concatenate([np.zeros((1, weights["char_embed"].shape[1])), weights["char_embed"][...]])
    x = table[ids]  # (T+2, C, E)
    pooled = []
    for i, (w, _) in enumerate(cnn["filters"]):
        kernel, bias = weights[f"CNN/W_cnn_{i}"][0], weights[f"CNN/b_cnn_{i}"][...]  # (w, E, n)
        conv = np.stack([np.einsum("twe,wen->tn", x[:, k : k + w], kernel) for k in range(width - w + 1)], 1) + bias
        pooled.append(np.maximum(conv.max(axis=1), 0.0))
    x = np.concatenate(pooled, axis=-1)
    for k in range(n_highway):
        g = f"CNN_high_{k}"
        carry = _sigmoid(x @ weights[f"{g}/W_carry"][...] + weights[f"{g}/b_carry"][...])
        transform = np.maximum(x @ weights[f"{g}/W_transform"][...] + weights[f"{g}/b_transform"][...], 0.0)
        x = carry * transform + (1.0 - carry) * x
    if "CNN_proj/W_proj" in weights:
        x = x @ weights["CNN_proj/W_proj"][...] + weights["CNN_proj/b_proj"][...]

    def run(direction: int, layer: int, inputs: np.ndarray) -> np.ndarray:
        cell = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"
        w0, b = weights[f"{cell}/W_0"][...], weights[f"{cell}/B"][...]
        wp = weights[f"{cell}/W_P_0"][...] if f"{cell}/W_P_0" in weights else None
        d = b.shape[0] // 4
        h, c, out = np.zeros(w0.shape[0] - inputs.shape[1]), np.zeros(d), []
        for step in inputs:
            i, j, f, o = np.split(np.concatenate([step, h]) @ w0 + b, 4)
            c = _sigmoid(f + 1.0) * c + _sigmoid(i) * np.tanh(j)
            if cell_clip:
                c = np.clip(c, -cell_clip, cell_clip)
            h = _sigmoid(o) * np.tanh(c)
            if wp is not None:  # proj_clip applies only with a projection (TF's LSTMCell)
                h = h @ wp
                if proj_clip:
                    h = np.clip(h, -proj_clip, proj_clip)
            out.append(h)
        return np.stack(out)

    layers, forward_in, backward_in = [np.concatenate([x, x], axis=-1)], x, x[::-1]
    for layer in range(n_layers):
        fwd, bwd = run(0, layer, forward_in), run(1, layer, backward_in)
        if layer > 0 and lstm.get("use_skip_connections"):
            fwd, bwd = fwd + forward_in, bwd + backward_in
        layers.append(np.concatenate([fwd, bwd[::-1]], axis=-1))
        forward_in, backward_in = fwd, bwd
    return np.stack(layers)[:, 1:-1]  # the sentence boundaries dropped


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("nlpl")
    return {name: write_nlpl_zip(name, root / f"{name}.zip", seed=11) for name in NLPL_PRESETS}


@pytest.mark.parametrize("preset", sorted(NLPL_PRESETS))
def test_reference_matches_an_independent_bilm_tf_computation(zips, preset, tmp_path):
    with zipfile.ZipFile(zips[preset]) as z:
        z.extractall(tmp_path)
    options = json.loads((tmp_path / "options.json").read_text())
    model = load_reference(tmp_path / "options.json", tmp_path / "model.hdf5")
    with torch.no_grad():
        got = model.run_tokens(SENTENCES)
    with h5py.File(tmp_path / "model.hdf5", "r") as weights:
        for i, sentence in enumerate(SENTENCES):
            want = bilm_tf_numpy(options, weights, sentence)
            np.testing.assert_allclose(got.layers[:, i, : len(sentence)].numpy(), want, rtol=0, atol=1e-5)


def test_presets_have_the_variations_they_are_named_for(zips, tmp_path):
    def contents(name: str) -> tuple[dict, set[str]]:
        with zipfile.ZipFile(zips[name]) as z:
            z.extract("model.hdf5", tmp_path / name)
            options = json.loads(z.read("options.json"))
        with h5py.File(tmp_path / name / "model.hdf5", "r") as f:
            names = set()
            f.visititems(lambda n, obj: names.add(n) if isinstance(obj, h5py.Dataset) else None)
        return options, names

    options, names = contents("nlpl")
    assert options["char_cnn"]["n_characters"] == 261 and "CNN_proj/W_proj" in names
    assert contents("nlpl-maxchars-64")[0]["char_cnn"]["max_characters_per_token"] == 64
    assert "n_highway" not in contents("nlpl-no-highway-key")[0]["char_cnn"]
    assert "n_layers" not in contents("nlpl-no-layers-key")[0]["lstm"]
    assert not any(n.startswith("CNN_proj") for n in contents("nlpl-no-cnn-proj")[1])
    assert not any(n.endswith("W_P_0") for n in contents("nlpl-no-lstm-proj")[1])
    assert contents("nlpl-no-skip")[0]["lstm"]["use_skip_connections"] is False


@pytest.mark.parametrize("preset", sorted(NLPL_PRESETS))
def test_model_zip_exports_directly_and_runs(zips, preset, tmp_path):
    out = tmp_path / "pkg"
    # A zero initial state: the warm-up adds nothing to what these tests check.
    assert export_main([str(zips[preset]), "-o", str(out), "--initial-state", "zero", "--no-progress", "-q"]) == 0
    manifest = json.loads((out / "elmo.json").read_text(encoding="utf-8"))
    assert manifest["source"]["archive"]["file"] == f"{preset}.zip"
    assert manifest["source"]["meta"]["corpus"][0]["description"] == f"synthetic {preset}"
    width = NLPL_PRESETS[preset]["char_cnn"]["max_characters_per_token"]
    assert manifest["chars"]["max_characters_per_token"] == width
    assert manifest["format_version"] == C.FORMAT_VERSION  # the width is data: a reader follows the graphs
    assert manifest["graphs"]["token_embedder"]["inputs"]["char_ids"]["shape"] == ["batch", "tokens", width]
    # The runtime maps raw text by the package's width and matches the reference.
    with zipfile.ZipFile(zips[preset]) as z:
        z.extractall(tmp_path / "src")
    model = load_reference(tmp_path / "src" / "options.json", tmp_path / "src" / "model.hdf5")
    elmo = Elmo(out, device="cpu")
    got = elmo.embed(SENTENCES, state="zero")
    with torch.no_grad():
        want = model.run_tokens(SENTENCES).layers.numpy()
    for i, g in enumerate(got):
        np.testing.assert_allclose(g, want[:, i, : len(SENTENCES[i])], rtol=0, atol=1e-5)
    # A sentence over the batch budget runs in time chunks (`sentence_edges`), the state carried.
    assert manifest["graphs"]["bilm"]["inputs"][C.SENTENCE_EDGES] == {"dtype": "int64", "shape": ["edge_rows", 2]}
    tokens = [t for sentence in SENTENCES for t in sentence] * 4  # 40 tokens
    chunked = elmo.embed([tokens], state="zero", batch_tokens=12)[0]  # chunks of 4
    with torch.no_grad():
        whole = model.run_tokens([tokens]).layers.numpy()[:, 0]
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)
    # Its conformance vectors, at its width, reproduced by the runtime.
    document = json.loads((out / "conformance.json").read_text(encoding="utf-8"))
    assert {len(row) for s in document["sentences"] for row in s["char_ids"]} == {width}
    report = verify_package(out)
    assert report.passed, report.failures


def test_an_absurd_char_width_fails_before_anything_is_built(tmp_path, capsys):
    archive = write_nlpl_zip("nlpl-maxchars-64", tmp_path / "m.zip")
    with zipfile.ZipFile(archive) as z:
        files = {name: z.read(name) for name in z.namelist()}
    options = json.loads(files["options.json"])
    options["char_cnn"]["max_characters_per_token"] = 10**6
    files["options.json"] = json.dumps(options).encode()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    assert export_main([str(archive), "-o", str(tmp_path / "out"), "--no-progress", "-q"]) == 2
    err = capsys.readouterr().err
    assert "max_characters_per_token is 1000000, above the sane limit" in err and not (tmp_path / "out").exists()
