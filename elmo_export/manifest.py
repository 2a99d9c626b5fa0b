"""The manifest an export writes (`elmo.json`, typed as `elmo_runtime.package.Manifest`)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np

from elmo_export.graph_io import graph_specs
from elmo_export.model import ElmoBiLm, LstmState
from elmo_export.settings import ExportSettings
from elmo_runtime import contract as C
from elmo_runtime.package import InitialState, Manifest
from elmo_runtime.token_schemes import DictionaryScheme

INPUT_EXPECTS_UD = (
    "tokens as in Universal Dependencies treebanks (CoNLL 2018 shared task); Chinese "
    "word-segmented. Raw text is not tokenized by default: pass token lists, or choose "
    "a tokenizer (Elmo(..., tokenizer='whitespace'), elmo-embed --tokenized)"
)


def _producer_version() -> str:
    try:
        return metadata.version("elmo-onnx")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_manifest(
    model: ElmoBiLm,
    settings: ExportSettings,
    source: dict,
    state: LstmState | None,
    warmup: dict | None,
    calibration: dict | None = None,
) -> Manifest:
    """The manifest without `files` and `parity` (added once the files are written and checked);
    `calibration`: the calibration text's description (`load_calibration_sentences`), if used."""
    o = model.options
    if state is None:  # stated, not implied: a client reads h and c the same way in both modes
        initial_state = InitialState(
            settings.initial_state,
            np.zeros((o.n_layers, 2, o.projection_dim), np.float32),
            np.zeros((o.n_layers, 2, o.dim), np.float32),
        )
    else:
        initial_state = InitialState(settings.initial_state, state.h.numpy(), state.c.numpy(), warmup)
    described = {k: v for k, v in settings.precision.to_dict().items() if k != "name"}
    if settings.exact_activations:  # unsaid, "onnxruntime": packages exported without it keep their bytes
        described["activation_functions"] = settings.activation_functions
    return Manifest(
        architecture=model.options.to_dict(),
        graphs=graph_specs(model.options),
        precision=settings.precision.name,
        precision_settings=described | ({"calibration": calibration} if calibration else {}),
        opset=settings.graph_opset,
        initial_state=initial_state,
        source=source,
        producer={"name": "elmo-onnx", "version": _producer_version()},
        **token_scheme_entries(model),
    )


def token_scheme_entries(model: ElmoBiLm) -> dict:
    """The manifest fields that say how tokens become ids (`elmo_runtime.token_schemes`).

    Byte-scheme models get `contract.char_constants` at their own width; dictionary models
    (ELMoForManyLangs) name their scheme and describe their dictionaries, shipped beside the
    graphs, and say that they expect pre-tokenized input (`input`, informational).
    """
    scheme = model.scheme
    if not isinstance(scheme, DictionaryScheme):
        return {"chars": scheme.to_manifest()}
    return {"chars": scheme.to_manifest(), "input": {"tokenization": "pretokenized", "expects": INPUT_EXPECTS_UD}}


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """`directory/elmo.json`."""
    (directory / C.MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=1) + "\n", encoding="utf-8")
