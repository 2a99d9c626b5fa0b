"""Write a package's conformance vectors at export: edge-case sentences and the package's own outputs.

The expected layers are what this package computes in ONNX Runtime (CPU) at export, each
sentence alone (a batch of one), from the zero state and, in a warm package, the warm state. A
client in any language must reproduce them within the file's tolerance (the reader and checker:
`elmo_runtime.conformance`). Before they are written they are checked against the PyTorch
reference with the precision's parity tolerance, so the file never pins a wrong output.
"""

from __future__ import annotations

import json
import logging
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from elmo_export.model import ElmoBiLm, LstmState
from elmo_export.parity import ParityError, ParityReport, tolerance_for
from elmo_runtime import contract as C
from elmo_runtime.compare import compare
from elmo_runtime.conformance import ARRAY_ENCODING, CONFORMANCE_TOLERANCES, KIND, encode_array
from elmo_runtime.runner import create_session

log = logging.getLogger(__name__)

SENTENCES_FILE = "conformance_sentences.json"



def load_sentences() -> list[dict]:
    """The built-in conformance sentences: dicts with `name`, `why` and `tokens`."""
    text = resources.files("elmo_export").joinpath("data", SENTENCES_FILE).read_text(encoding="utf-8")
    return json.loads(text)["sentences"]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def write_conformance(model: ElmoBiLm, directory: Path, graphs: dict[str, C.GraphSpec], precision: str,
                      warm: tuple[np.ndarray, np.ndarray] | None) -> Path:
    """Run the graphs in `directory` on the built-in sentences and write `conformance.json`.

    Args:
        model: the reference the package was exported from.
        directory: the package directory (graphs saved; the manifest need not exist yet).
        graphs: the graphs' specs (`contract.graph_specs`: their files).
        precision: the package's precision name (picks both tolerances).
        warm: the warm state `h (L, 2, P)`, `c (L, 2, D)`, or None for a zero-state package.

    Returns:
        The file written.

    Raises:
        ParityError: an expected output is not within the parity tolerance of the reference.
    """
    o = model.options
    token_embedder = create_session(directory / graphs["token_embedder"].file, "cpu")
    bilm = create_session(directory / graphs["bilm"].file, "cpu")
    zero = (np.zeros((o.n_layers, 2, o.projection_dim), np.float32), np.zeros((o.n_layers, 2, o.dim), np.float32))
    states = {"zero": zero}
    if warm is not None:
        states["warm"] = tuple(np.asarray(v, np.float32) for v in warm)

    entries, modes = [], {mode: [] for mode in states}
    for sentence in load_sentences():
        tokens = sentence["tokens"]
        ids = model.scheme.encode(tokens)  # char_ids (T, W); word_ids (T,) with a word table
        expected = {}
        for mode, (h, c) in states.items():
            if not tokens:  # the empty-sentence rule: not run, 0 positions
                expected[mode] = encode_array(np.zeros((o.n_layers + 1, 0, 2 * o.projection_dim), np.float32))
                continue
            emb, mask = token_embedder.run(None, {name: value[None] for name, value in ids.items()})
            feeds = {C.TOKEN_EMBEDDINGS: emb, C.MASK: mask, C.INITIAL_H: h[:, :, None], C.INITIAL_C: c[:, :, None]}
            layers = bilm.run([C.LAYERS], feeds)[0][:, 0]  # (L + 1, T, 2P)
            expected[mode] = encode_array(layers)
            with torch.no_grad():
                start = LstmState(torch.from_numpy(h[:, :, None]), torch.from_numpy(c[:, :, None]))
                ref = model.run_tokens([tokens], start)
            modes[mode].append((sentence["name"], compare(layers, ref.layers.numpy()[:, 0])))
        entries.append({"name": sentence["name"], "why": sentence["why"], "tokens": tokens,
                        **{name: value.tolist() for name, value in ids.items()}, "expected": expected})

    _check_against_reference(modes, precision, model)
    return _write_document(directory, precision, entries)


def _write_document(directory: Path, precision: str, entries: list[dict]) -> Path:
    """`conformance.json`: the sentences with their expected outputs, and the tolerance another runtime must meet."""
    tolerance = CONFORMANCE_TOLERANCES[precision]
    document = {
        "kind": KIND,
        "format_version": C.FORMAT_VERSION,
        "precision": precision,
        "producer": {"elmo-onnx": _version("elmo-onnx"), "onnxruntime": ort.__version__, "execution_provider": "CPU"},
        "how": ("each sentence alone (a batch of one, no padding), char ids as listed, from the state named; "
                "expected: this package's layers `(n_layers + 1, tokens, 2 * projection_dim)` "
                "in ONNX Runtime at export"),
        "arrays": ARRAY_ENCODING,
        "tolerance": {"max_abs": tolerance.max_abs, "min_cosine": tolerance.min_cosine},
        "sentences": entries,
    }
    path = directory / C.CONFORMANCE_FILE
    # ensure_ascii: lone surrogates are written as \\ud800 escapes, which every JSON parser reads back.
    path.write_text(json.dumps(document, ensure_ascii=True, indent=1) + "\n", encoding="utf-8")
    return path


def _check_against_reference(modes: dict, precision: str, model: ElmoBiLm) -> None:
    """Each sentence's expected layers within the precision's parity tolerance of the reference."""
    tolerance = tolerance_for(precision, model.options)
    failures = [f"conformance sentence {name!r}, state {mode}, layer {k}: {violation}"
                for mode, rows in modes.items() for name, figures in rows
                for k, (max_abs, mean_cos, min_cos) in enumerate(zip(*figures))
                for violation in tolerance.violations(float(max_abs), float(mean_cos), float(min_cos))]
    if failures:
        raise ParityError(ParityReport(precision, tolerance, 0, 0, 1, "conformance sentences", [], failures))
