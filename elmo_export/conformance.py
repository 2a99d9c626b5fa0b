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
from elmo_runtime.tokenize import tokenize

log = logging.getLogger(__name__)

SENTENCES_FILE = "conformance_sentences.json"


def load_builtin() -> dict:
    """The built-in conformance data: `sentences`, and the `time_chunks`, `stream` and `tokenizer` cases."""
    return json.loads(resources.files("elmo_export").joinpath("data", SENTENCES_FILE).read_text(encoding="utf-8"))


def load_sentences() -> list[dict]:
    """The built-in conformance sentences: dicts with `name`, `why` and `tokens`."""
    return load_builtin()["sentences"]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def write_conformance(
    model: ElmoBiLm,
    directory: Path,
    graphs: dict[str, C.GraphSpec],
    precision: str,
    warm: tuple[np.ndarray, np.ndarray] | None,
) -> Path:
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
        entries.append(_sentence_entry(model, sentence, (token_embedder, bilm), states, modes))

    builtin = load_builtin()
    sessions = (token_embedder, bilm)
    # The carrying rules in the package's default state only (warm where there is one: a start
    # state that is not zeros catches more): the zero state is the sentences' business, and the
    # shipped package stays small.
    default = {mode: states[mode] for mode in (("warm",) if "warm" in states else ("zero",))}
    chunks = _time_chunks_case(model, sessions, default, builtin["time_chunks"], modes)
    stream = _stream_case(model, sessions, default, builtin["stream"], modes)
    _check_against_reference(modes, precision, model)
    cases = {"time_chunks": chunks, "stream": stream, "tokenizer": _tokenizer_cases(builtin["tokenizer"])}
    return _write_document(directory, precision, entries, cases)


def _sentence_entry(
    model: ElmoBiLm,
    sentence: dict,
    sessions: tuple,
    states: dict[str, tuple[np.ndarray, np.ndarray]],
    modes: dict[str, list],
) -> dict:
    """One sentence's entry: its ids and, per start state, the graphs' output; the comparison of
    each output with the reference is appended to `modes[state]`."""
    o = model.options
    token_embedder, bilm = sessions
    tokens = sentence["tokens"]
    ids = model.scheme.encode(tokens)  # char_ids (T, W); word_ids (T,) with a word table
    expected = {}
    for mode, (h, c) in states.items():
        if not tokens:  # the empty-sentence rule: not run, 0 positions
            expected[mode] = encode_array(np.zeros((o.n_layers + 1, 0, 2 * o.projection_dim), np.float32))
            continue
        emb, mask = token_embedder.run(None, {name: value[None] for name, value in ids.items()})
        feeds = {
            C.TOKEN_EMBEDDINGS: emb,
            C.MASK: mask,
            C.INITIAL_H: h[:, :, None],
            C.INITIAL_C: c[:, :, None],
            C.SENTENCE_EDGES: np.asarray(C.WHOLE_SENTENCES, np.int64),
        }
        layers = bilm.run([C.LAYERS], feeds)[0][:, 0]  # (L + 1, T, 2P)
        expected[mode] = encode_array(layers)
        with torch.no_grad():
            start = LstmState(torch.from_numpy(h[:, :, None]), torch.from_numpy(c[:, :, None]))
            ref = model.run_tokens([tokens], start)
        modes[mode].append((sentence["name"], compare(layers, ref.layers.numpy()[:, 0])))
    return {
        "name": sentence["name"],
        "why": sentence["why"],
        "tokens": tokens,
        **{name: value.tolist() for name, value in ids.items()},
        "expected": expected,
    }


def _write_document(directory: Path, precision: str, entries: list[dict], cases: dict) -> Path:
    """`conformance.json`: the sentences with their expected outputs, the format 3 cases (time
    chunks, a stream, tokenizer texts), and the tolerance another runtime must meet."""
    tolerance = CONFORMANCE_TOLERANCES[precision]
    document = {
        "kind": KIND,
        "format_version": C.FORMAT_VERSION,
        "precision": precision,
        "producer": {"elmo-onnx": _version("elmo-onnx"), "onnxruntime": ort.__version__, "execution_provider": "CPU"},
        "how": (
            "each sentence alone (a batch of one, no padding), char ids as listed, from the state named; "
            "expected: this package's layers `(n_layers + 1, tokens, 2 * projection_dim)` "
            "in ONNX Runtime at export"
        ),
        "arrays": ARRAY_ENCODING,
        "tolerance": {"max_abs": tolerance.max_abs, "min_cosine": tolerance.min_cosine},
        "sentences": entries,
        **cases,
    }
    path = directory / C.CONFORMANCE_FILE
    # ensure_ascii: lone surrogates are written as \\ud800 escapes, which every JSON parser reads back.
    path.write_text(json.dumps(document, ensure_ascii=True, indent=1) + "\n", encoding="utf-8")
    return path


def _check_against_reference(modes: dict, precision: str, model: ElmoBiLm) -> None:
    """Each sentence's expected layers within the precision's parity tolerance of the reference."""
    tolerance = tolerance_for(precision, model.options)
    failures = [
        f"conformance sentence {name!r}, state {mode}, layer {k}: {violation}"
        for mode, rows in modes.items()
        for name, figures in rows
        for k, (max_abs, mean_cos, min_cos) in enumerate(zip(*figures))
        for violation in tolerance.violations(float(max_abs), float(mean_cos), float(min_cos))
    ]
    if failures:
        raise ParityError(ParityReport(precision, tolerance, 0, 0, 1, "conformance sentences", [], failures))


Sessions = tuple[ort.InferenceSession, ort.InferenceSession]


def _bilm_run(
    model: ElmoBiLm,
    sessions: Sessions,
    batch: list[list[str]],
    h: np.ndarray,
    c: np.ndarray,
    edges: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both graphs on a padded batch (an all-padding row for an empty sentence; one padding
    position when every row is empty): `layers (L + 1, B, T, 2P)`, `final_h`, `final_c`."""
    ids = model.scheme.encode_batch(batch)
    if ids[C.CHAR_IDS].shape[1] == 0:  # the graphs need T >= 1
        ids = {name: np.zeros((len(batch), 1, *value.shape[2:]), value.dtype) for name, value in ids.items()}
    emb, mask = sessions[0].run(None, ids)
    edges = np.asarray(C.WHOLE_SENTENCES if edges is None else edges, np.int64)
    feeds = {C.TOKEN_EMBEDDINGS: emb, C.MASK: mask, C.INITIAL_H: h, C.INITIAL_C: c, C.SENTENCE_EDGES: edges}
    return tuple(sessions[1].run([C.LAYERS, C.FINAL_H, C.FINAL_C], feeds))


def run_in_time_chunks(
    model: ElmoBiLm, sessions: Sessions, tokens: list[str], size: int, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sentence in chunks of `size` tokens, as docs/package-format.md ("Time chunks") says
    a client does it: call k runs chunk k for the forward direction and chunk K-1-k for the
    backward one, each carrying its own direction's state. `h (L, 2, P)`, `c (L, 2, D)` in;
    `layers (L + 1, n, 2P)` and the sentence's final `h`, `c` (forward from the last chunk,
    backward from the first) out."""
    n, p = len(tokens), model.options.projection_dim
    spans = [(start, min(start + size, n)) for start in range(0, n, size)]
    last = len(spans) - 1
    forward = backward = (h[:, :, None], c[:, :, None])
    out = np.zeros((model.options.n_layers + 1, n, 2 * p), np.float32)
    for k in range(len(spans)):
        (fs, fe), (bs, be) = spans[k], spans[last - k]
        edges = np.array([[k == 0, k == last], [last - k == 0, last - k == last]], np.int64)
        layers, final_h, final_c = _bilm_run(
            model,
            sessions,
            [tokens[fs:fe], tokens[bs:be]],
            np.concatenate([forward[0], backward[0]], axis=2),
            np.concatenate([forward[1], backward[1]], axis=2),
            edges,
        )
        out[:, fs:fe, :p] = layers[:, 0, : fe - fs, :p]
        out[:, bs:be, p:] = layers[:, 1, : be - bs, p:]
        forward, backward = (final_h[:, :, 0:1], final_c[:, :, 0:1]), (final_h[:, :, 1:2], final_c[:, :, 1:2])
    final_h = np.concatenate([forward[0][:, 0:1], backward[0][:, 1:2]], axis=1)[:, :, 0]
    final_c = np.concatenate([forward[1][:, 0:1], backward[1][:, 1:2]], axis=1)[:, :, 0]
    return out, final_h, final_c


def _reference(model: ElmoBiLm, batch: list[list[str]], h: np.ndarray, c: np.ndarray):
    with torch.no_grad():
        return model.run_tokens(batch, LstmState(torch.from_numpy(h), torch.from_numpy(c)))


def _record(modes: dict, mode: str, name: str, got: np.ndarray, want: np.ndarray) -> None:
    """Note one case's figures against the reference for `_check_against_reference`."""
    if got.shape[1] == 0:
        return
    modes[mode].append((name, compare(got, want)))


def _time_chunks_case(model: ElmoBiLm, sessions: Sessions, states: dict, case: dict, modes: dict) -> dict:
    """The time-chunks case: its expected layers and final state per start state, each checked
    against the reference running the sentence whole."""
    tokens, size = case["tokens"], case["chunk_tokens"]
    expected = {}
    for mode, (h, c) in states.items():
        layers, final_h, final_c = run_in_time_chunks(model, sessions, tokens, size, h, c)
        ref = _reference(model, [tokens], h[:, :, None], c[:, :, None])
        _record(modes, mode, case["name"], layers, ref.layers.numpy()[:, 0])
        expected[mode] = {
            "layers": encode_array(layers),
            "final_h": encode_array(final_h),
            "final_c": encode_array(final_c),
        }
    ids = model.scheme.encode(tokens)
    return {
        "name": case["name"],
        "why": case["why"],
        "chunk_tokens": size,
        "tokens": tokens,
        **{name: value.tolist() for name, value in ids.items()},
        "expected": expected,
    }


def _stream_case(model: ElmoBiLm, sessions: Sessions, states: dict, case: dict, modes: dict) -> dict:
    """The carried-stream case: each call's expected layers per row, per start state, as
    `elmo_runtime`'s `ElmoStream` computes them, each call checked against the reference."""
    expected = {}
    for mode, (h0, c0) in states.items():
        carried_h = carried_c = None
        calls = []
        for call_index, batch in enumerate(case["calls"]):
            rows = len(batch)
            h = np.repeat(h0[:, :, None], rows, axis=2)
            c = np.repeat(c0[:, :, None], rows, axis=2)
            if carried_h is not None:
                kept = min(rows, carried_h.shape[2])
                h[:, :, :kept], c[:, :, :kept] = carried_h[:, :, :kept], carried_c[:, :, :kept]
            layers, final_h, final_c = _bilm_run(model, sessions, batch, h, c)
            ref = _reference(model, batch, h, c)
            arrays = [np.ascontiguousarray(layers[:, b, : len(tokens)]) for b, tokens in enumerate(batch)]
            calls.append([encode_array(array) for array in arrays])
            for b, tokens in enumerate(batch):
                _record(
                    modes,
                    mode,
                    f"{case['name']} call {call_index} row {b}",
                    layers[:, b, : len(tokens)],
                    ref.layers.numpy()[:, b, : len(tokens)],
                )
            if carried_h is not None and carried_h.shape[2] > rows:  # rows left out keep their state
                final_h = np.concatenate([final_h, carried_h[:, :, rows:]], axis=2)
                final_c = np.concatenate([final_c, carried_c[:, :, rows:]], axis=2)
            carried_h, carried_c = final_h, final_c
        expected[mode] = calls
    return {"name": case["name"], "why": case["why"], "calls": case["calls"], "expected": expected}


def _tokenizer_cases(case: dict) -> dict:
    """Raw texts with the tokens the Python runtime's tokenizer gives them."""
    return {"why": case["why"], "cases": [{"text": text, "tokens": tokenize(text)} for text in case["texts"]]}
