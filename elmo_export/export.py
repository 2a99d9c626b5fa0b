"""options.json + weights.hdf5 -> a verified ONNX model package (the contract: `elmo_runtime.contract`).

`export_package` does every step in a temporary directory beside the output and moves the
package into place only once it is complete and verified:

1. load the reference (`weights.load_reference`, or another family's loader through
   `export_reference`: `manylangs`, `archives`; their errors name missing files and mismatches);
2. build both graphs (`onnx_graph`), in fp16 directly, or fp32 then quantized (`quantize`);
3. save them and validate each: `onnx.checker.check_model(full_check=True)` (with strict
   shape inference), and the names, dtypes and shapes of `contract.graph_specs` (the one
   export spec);
4. run the reference: the warm initial state (its state after the built-in warm-up text) and
   its outputs on the parity sentences;
5. write the conformance vectors (`conformance`: edge-case sentences with the package's own
   outputs, checked against the reference) and the manifest `elmo.json`, run the package in
   ONNX Runtime against the reference (`parity.check_parity`, which raises `ParityError`),
   and record the parity report and the sha256 of every file in the manifest;
6. rename the directory into place (replacing an old package only with `force`).

A failure at any step removes the temporary directory: no half-written package is left.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Union

import numpy as np
import onnx
import torch
from tqdm.auto import tqdm

from elmo_export import onnx_graph
from elmo_export.calibration import input_moments
from elmo_export.conformance import write_conformance
from elmo_export.model import ElmoBiLm, ElmoOptions, LstmState
from elmo_export.parity import ReferenceOutputs, check_parity, reference_outputs
from elmo_export.quantize import DEFAULT_SETTINGS, Int4Settings, Int8Settings, QuantizationSettings
from elmo_export.quantize import quantize as quantize_graph
from elmo_export.sentences import builtin_sentences, read_sentences
from elmo_export.weights import load_reference
from elmo_runtime import contract as C
from elmo_runtime import scratch
from elmo_runtime.graph_files import external_tensors
from elmo_runtime.jsonfile import read_json
from elmo_runtime.package import STAGING_SUFFIX, InitialState, Manifest, PackageError, sha256_of
from elmo_runtime.token_schemes import DictionaryScheme

log = logging.getLogger(__name__)

WARMUP_TEXT = "warmup.txt"
WARMUP_SOURCE = "elmo_export/data/warmup.txt: Lincoln, the Gettysburg Address (1863, Bliss copy), public domain"
CALIBRATION_TEXT = "calibration.txt"
CALIBRATION_SOURCE = "elmo_export/data/calibration.txt: everyday English written for elmo-onnx"
FP16_SETTINGS = {"weights": "float16", "compute": "float16", "inputs_outputs": "float32"}
OLD_SUFFIX = ".old"  # an old package moved aside while the new one is renamed into place


@dataclass(frozen=True)
class ExportSettings:
    """How to export; `export_package`'s keyword arguments.

    Attributes:
        quantize: "fp32" (or its alias "none"), "fp16", "int8", "int4", or an
            `Int8Settings`/`Int4Settings` for non-default quantization settings.
        initial_state: "warm" (ship the state after the built-in warm-up text) or "zero".
        opset: ONNX opset of the graphs; None: `contract.DEFAULT_OPSET`.
        force: replace an existing package at the output (only once the new one is verified).
        progress: tqdm progress bars for the long steps.
        calibration: int4 (GPTQ) only: a UTF-8 text file of tokenized sentences, one a line, to
            calibrate the rounding on (`calibration.py`); None: the built-in English text.
    """

    quantize: Union[str, Int8Settings, Int4Settings] = "fp32"
    initial_state: str = C.WARM
    opset: int | None = None
    force: bool = False
    progress: bool = True
    calibration: str | Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.quantize, (Int8Settings, Int4Settings)):
            C.precision_name(self.quantize, "quantize")
        C.check_state_mode(self.initial_state, "initial_state")
        if self.opset is not None:
            C.check_opset(self.opset)
        if self.calibration is not None:
            if not self.calibrated:
                raise ValueError(f"a calibration text is for int4 with GPTQ rounding; this export is {self.precision}"
                                 + (" with round to nearest" if self.precision == "int4" else ""))
            if not Path(self.calibration).is_file():  # before any slow step
                raise FileNotFoundError(f"calibration text {self.calibration}: no such file")

    @property
    def calibrated(self) -> bool:
        """Whether the quantizer needs a calibration text (int4 with GPTQ rounding)."""
        q = self.quantization
        return isinstance(q, Int4Settings) and q.rounding == "gptq"

    @property
    def precision(self) -> str:
        """The package's precision name: fp32, fp16, int8 or int4."""
        if isinstance(self.quantize, (Int8Settings, Int4Settings)):
            return self.quantize.name
        return C.precision_name(self.quantize)

    @property
    def quantization(self) -> QuantizationSettings | None:
        if isinstance(self.quantize, (Int8Settings, Int4Settings)):
            return self.quantize
        return DEFAULT_SETTINGS.get(self.precision)

    @property
    def precision_settings(self) -> dict:
        """How the precision is made, as the manifest records it (beside its name)."""
        if self.quantization is not None:
            return {k: v for k, v in self.quantization.to_dict().items() if k != "name"}
        return dict(FP16_SETTINGS) if self.precision == "fp16" else {}

    @property
    def graph_opset(self) -> int:
        return C.DEFAULT_OPSET if self.opset is None else self.opset


def graph_specs(options: ElmoOptions) -> dict[str, C.GraphSpec]:
    """The contract's graph interface for a model's options (`contract.graph_specs`)."""
    return C.graph_specs(options.n_layers, options.projection_dim, options.dim, options.max_characters_per_token,
                         word_ids=options.word_dim > 0)


class GraphValidationError(ValueError):
    """A built graph that fails the ONNX checker, shape inference or the export spec (all listed)."""


def validate_graph(path: Path, spec: C.GraphSpec) -> None:
    """Check a saved graph: ONNX checker (full), strict shape inference, names/dtypes/shapes of the spec.

    Raises:
        GraphValidationError: every problem found, listed.
    """
    problems = []
    try:
        # By path, which works beyond 2 GB; full_check adds strict shape inference, which fails
        # on any inferred shape or type that contradicts a declared one.
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        problems.append(f"ONNX checker / shape inference: {str(e).strip().splitlines()[0]}")
    model = onnx.load(str(path), load_external_data=False)

    def described(values) -> dict:
        out = {}
        for v in values:
            tensor = v.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
            out[v.name] = {"dtype": dtype, "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]}
        return out

    initializers = {i.name for i in model.graph.initializer}
    backed = [v.name for v in model.graph.input if v.name in initializers]
    if backed:  # format 3: a binding must see and feed every input (onnxruntime-node/-web hide these)
        problems.append(f"inputs {backed} are backed by initializers")
    nested = [f"{t.name} ({t.location})" for t in external_tensors(path.read_bytes()) if t.in_subgraph]
    if nested:
        problems.append(f"subgraph tensors stored as external data (format 3 keeps them in the main graph): {nested}")
    for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        got = described(values)
        want = {t.name: t.to_dict() for t in getattr(spec, kind)}
        if list(got) != list(want):
            problems.append(f"{kind} are {list(got)}, the spec says {list(want)}")
        for name in set(got) & set(want):
            if got[name] != want[name]:
                problems.append(f"{kind[:-1]} {name!r} is {got[name]}, the spec says {want[name]}")
    if problems:
        raise GraphValidationError(f"{path.name} is not a valid package graph:\n  " + "\n  ".join(problems))


def save_graph(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save a graph with its weights in `<file>.data` beside it.

    Every subgraph's initializers move to the main graph first (`hoist_subgraph_initializers`),
    so that every external tensor is one a graph loaded from bytes can read (format 3).

    Why external data, always: ONNX Runtime maps an external weights file into memory, where
    weights inside the protobuf are parsed and then copied (on `original` int8 this saves 85 MB
    of peak memory at load); and protobuf cannot hold a graph over 2 GiB at all.

    Returns:
        The files written.
    """
    data = path.with_name(path.name + ".data")
    onnx_graph.hoist_subgraph_initializers(model)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    return [path, data]


def load_calibration_sentences(path: str | Path | None = None) -> tuple[list[list[str]], dict]:
    """int4 GPTQ's calibration text (`path`, or the built-in one) and its manifest description.

    Raises:
        ValueError: the file is not UTF-8 or holds no sentence.
    """
    if path is None:
        sentences, sha = builtin_sentences(CALIBRATION_TEXT)
        name = CALIBRATION_SOURCE
    else:
        name = Path(path).name
        try:
            sentences = read_sentences(path)
        except UnicodeDecodeError as e:
            raise ValueError(f"calibration text {path}: not UTF-8 text (byte {e.start})") from None
        sha = sha256_of(Path(path))
        if not sentences:
            raise ValueError(f"calibration text {path}: no sentences (expected tokens separated by spaces, "
                             f"one sentence a line)")
    return sentences, {"text": name, "sha256": sha, "sentences": len(sentences), "tokens": sum(map(len, sentences))}


def load_warmup_sentences() -> tuple[list[list[str]], str]:
    """The built-in warm-up text: tokenized sentences and the text's sha256."""
    return builtin_sentences(WARMUP_TEXT)


def warm_state(model: ElmoBiLm, sentences: list[list[str]], progress: bool = False) -> LstmState:
    """The reference's state after `sentences`, one per batch of one, state carried throughout.

    Returns:
        `LstmState` with `h (L, 2, P)` and `c (L, 2, D)` (the batch axis dropped).
    """
    state = None
    with torch.no_grad():
        for sentence in tqdm(sentences, desc="warm-up", unit="sentence", disable=None if progress else True, leave=False):
            state = model.run_tokens([sentence], state).state
    return LstmState(state.h[:, :, 0], state.c[:, :, 0])


def _producer_version() -> str:
    try:
        return metadata.version("elmo-onnx")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_output(out: Path, force: bool) -> None:
    """Refuse an output we must not replace, before any slow work."""
    if out.name in ("", ".", ".."):
        raise ValueError(f"output {str(out)!r} names no directory of its own; give the package directory by "
                         f"name (e.g. ../{Path.cwd().name if out.name == '' else 'NAME'})")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} exists and is not a directory; choose another output directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"output directory {out} is not empty; pass force=True (--force) to replace it")
        if not (out / C.MANIFEST_FILE).is_file():
            raise FileExistsError(
                f"output directory {out} is not empty and holds no elmo-onnx package ({C.MANIFEST_FILE}); "
                "refusing to delete its files even with force: choose another output directory"
            )
        source = out / C.MANIFEST_FILE
        try:  # the files need not verify (a damaged package may be re-exported), the manifest must parse
            manifest = Manifest.from_json(read_json(source, "manifest", PackageError), source, out)
        except (PackageError, ValueError, TypeError, RecursionError) as e:
            raise FileExistsError(f"output directory {out} holds a {C.MANIFEST_FILE} that is not an elmo-onnx "
                                  f"manifest ({e}); refusing to delete its files even with force: choose another "
                                  "output directory") from None
        scratch.refuse_foreign(out, {C.MANIFEST_FILE, *manifest.files}, f"the package its {C.MANIFEST_FILE} lists")


def _make_staging_dir(out: Path) -> Path:
    """`.OUT.<pid>.<random>.partial` beside `out`, after removing those of dead exports."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (STAGING_SUFFIX, OLD_SUFFIX):
            scratch.remove_stale(out, suffix)
        return scratch.create_dir(out, STAGING_SUFFIX)
    except OSError as e:
        reason = e.strerror or str(e)
        raise type(e)(e.errno, f"cannot write the package to {out}: {reason} ({e.filename or out.parent})") from None


def _open_to_umask(directory: Path) -> None:
    """Give the package's files the modes a plain `open()` would (onnx writes `.data` files 0600).

    The staging directory was made with mode 0o777 less the umask, so its mode tells the umask.
    """
    allowed = directory.stat().st_mode & 0o777
    for f in directory.iterdir():
        f.chmod(0o666 & allowed)


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished package to `out`; an old package there is removed only afterwards."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = scratch.create_dir(out, OLD_SUFFIX)
            os.replace(out, old / out.name)
        else:
            out.rmdir()
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old / out.name, out)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_manifest(model: ElmoBiLm, settings: ExportSettings, source: dict, state: LstmState | None,
                   warmup: dict | None, calibration: dict | None = None) -> Manifest:
    """The manifest without `files` and `parity` (added once the files are written and checked);
    `calibration`: the calibration text's description (`load_calibration_sentences`), if used."""
    o = model.options
    if state is None:  # stated, not implied: a client reads h and c the same way in both modes
        initial_state = InitialState(settings.initial_state, np.zeros((o.n_layers, 2, o.projection_dim), np.float32),
                                     np.zeros((o.n_layers, 2, o.dim), np.float32))
    else:
        initial_state = InitialState(settings.initial_state, state.h.numpy(), state.c.numpy(), warmup)
    return Manifest(
        architecture=model.options.to_dict(),
        graphs=graph_specs(model.options),
        precision=settings.precision,
        precision_settings=settings.precision_settings | ({"calibration": calibration} if calibration else {}),
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


INPUT_EXPECTS_UD = ("tokens as in Universal Dependencies treebanks (CoNLL 2018 shared task); Chinese "
                    "word-segmented. Raw text is not tokenized by default: pass token lists, or choose "
                    "a tokenizer (Elmo(..., tokenizer='whitespace'), elmo-embed --tokenized)")


def _calibration_moments(model: ElmoBiLm, settings: ExportSettings) -> tuple[dict | None, dict | None]:
    """For int4 GPTQ: the input moments of the reference's weight products on the calibration
    text, by module path, and the text's description; otherwise `(None, None)`."""
    if not settings.calibrated:
        return None, None
    t = time.perf_counter()
    sentences, calibration = load_calibration_sentences(settings.calibration)
    # A highway layer's carry reads the same input as its transform: the graph's one product for
    # both takes the transform's path (`onnx_graph`), so the carry's moments would be a copy.
    paths = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and ".highway_carry." not in name]
    moments = input_moments(model, sentences, paths)
    log.info("calibration: %d sentences (%d tokens) in %.1f s", calibration["sentences"], calibration["tokens"],
             time.perf_counter() - t)
    return moments, calibration


def _warm_state_and_reference(model: ElmoBiLm, settings: ExportSettings
                              ) -> tuple[LstmState | None, dict | None, ReferenceOutputs]:
    """The warm state (with its warm-up description) and the reference's parity outputs."""
    state = warmup = None
    if settings.initial_state == C.WARM:
        t = time.perf_counter()
        sentences, text_sha = load_warmup_sentences()
        state = warm_state(model, sentences, settings.progress)
        warmup = {"source": WARMUP_SOURCE, "sentences": len(sentences), "tokens": sum(map(len, sentences)),
                  "batches": len(sentences), "batch_size": 1, "text_sha256": text_sha}
        log.info("warm state from %d warm-up sentences in %.1f s", len(sentences), time.perf_counter() - t)
    t = time.perf_counter()
    warm = None if state is None else (state.h.numpy(), state.c.numpy())
    reference = reference_outputs(model, warm, progress=settings.progress)
    log.info("reference parity outputs in %.1f s", time.perf_counter() - t)
    return state, warmup, reference


def _write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / C.MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=1) + "\n", encoding="utf-8")


def export_package(
    options: str | Path,
    weights: str | Path,
    out_dir: str | Path,
    *,
    quantize: Union[str, Int8Settings, Int4Settings] = "fp32",
    initial_state: str = C.WARM,
    opset: int | None = None,
    force: bool = False,
    progress: bool = True,
    calibration: str | Path | None = None,
    stop: threading.Event | None = None,
) -> Path:
    """Export `options.json` + `weights.hdf5` to a verified model package in `out_dir`.

    Args:
        options: the model's `options.json`.
        weights: its `weights.hdf5` (official TF layout).
        out_dir: the package directory to create; it must not exist or be empty, unless `force`.
        quantize: "fp32" (alias "none"), "fp16", "int8", "int4", or `Int8Settings`/`Int4Settings`.
        initial_state: "warm" or "zero": the state each row starts from by default.
        opset: ONNX opset; None: `contract.DEFAULT_OPSET`.
        force: replace an existing package in `out_dir`, once the new one is verified.
        progress: tqdm bars for the long steps.
        calibration: int4 only: a tokenized text (one sentence a line) to calibrate GPTQ's
            rounding on; None: the built-in English text.
        stop: an event that, once set, stops the export before the package is renamed into
            place (KeyboardInterrupt, nothing left at `out_dir`); the command line sets it on
            SIGINT or SIGTERM, whose own KeyboardInterrupt can be lost inside library code.

    Returns:
        `out_dir`, holding the package.

    Raises:
        ValueError: a bad setting (the allowed values are named).
        FileNotFoundError: the options or weights file is missing.
        weights.WeightFileError: the weights do not match the options (every dataset listed).
        FileExistsError: `out_dir` is not empty and `force` is not set (or it is not a package).
        OSError (PermissionError, NotADirectoryError, ...): `out_dir` cannot be written.
        GraphValidationError: a built graph fails the checker or the export spec.
        parity.ParityError: the package does not reproduce the reference (every failed check
            listed); nothing is left at `out_dir`.
    """
    settings = ExportSettings(quantize=quantize, initial_state=initial_state, opset=opset, force=force, progress=progress,
                              calibration=calibration)
    return export_reference(bilm_tf_loader(options, weights), out_dir, settings, stop=stop)


def bilm_tf_loader(options: str | Path, weights: str | Path) -> Callable[[], tuple[ElmoBiLm, dict]]:
    """`export_reference`'s loader for `options.json` + `weights.hdf5` (bilm-tf's layout)."""
    options_path, weights_path = Path(options), Path(weights)

    def load() -> tuple[ElmoBiLm, dict]:
        model = load_reference(options_path, weights_path)  # first: its errors name a missing file
        source = {
            "options_file": options_path.name,
            "options_sha256": sha256_of(options_path),
            "weights_file": weights_path.name,
            "weights_sha256": sha256_of(weights_path),
        }
        return model, source

    return load


def export_reference(load: Callable[[], tuple[ElmoBiLm, dict]], out_dir: str | Path,
                     settings: ExportSettings | None = None, *, stop: threading.Event | None = None) -> Path:
    """Export the reference biLM that `load()` returns (with its manifest `source` entry).

    Every model family goes through here once its loader has built the reference: the
    staging directory, the checks and `stop` are those of `export_package`, which documents
    the errors. `load` runs after the output is checked and the staging directory made, so
    that a bad output fails before any slow step; it must check the source's shapes against
    its options (and those against `ElmoOptions.check`'s bounds) before it allocates a model.
    """
    settings = ExportSettings() if settings is None else settings
    out = Path(out_dir)
    _check_output(out, settings.force)

    started = time.perf_counter()
    try:
        staging = _make_staging_dir(out)  # first: an unwritable output fails before any slow step
        model, source = load()
        o = model.options
        log.info("reference biLM: %.1fM parameters (LSTM %d x %d, projection %d)", o.parameter_count() / 1e6,
                 o.n_layers, o.dim, o.projection_dim)
        _export_into(model, settings, source, staging)
        _check_output(out, settings.force)  # again: something may have appeared meanwhile
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        _move_into_place(staging, out)
    except BaseException:
        # By name, not by the variable: an interrupt may come between the mkdir and the assignment.
        scratch.remove_own(out, STAGING_SUFFIX)
        raise
    log.info("exported %s (%s) in %.1f s", out, settings.precision, time.perf_counter() - started)
    return out


def _export_into(model: ElmoBiLm, settings: ExportSettings, source: dict, directory: Path) -> None:
    specs = graph_specs(model.options)
    graph_precision = "fp16" if settings.precision == "fp16" else "fp32"
    moments, calibration = _calibration_moments(model, settings)
    builders = {"token_embedder": onnx_graph.build_token_embedder, "bilm": onnx_graph.build_bilm}
    for name, build in builders.items():
        t = time.perf_counter()
        sources: dict[str, str] = {}
        graph = build(model, graph_precision, settings.graph_opset, sources)
        if settings.quantization is not None:
            by_weight = None if moments is None else {w: moments[p] for w, p in sources.items() if p in moments}
            graph = quantize_graph(graph, settings.quantization, by_weight)
        path = directory / specs[name].file
        save_graph(graph, path)
        del graph
        validate_graph(path, specs[name])
        log.info("built, saved and checked %s (%s, %.1f MB) in %.1f s", path.name, settings.precision,
                 path.stat().st_size / 1e6, time.perf_counter() - t)

    if isinstance(model.scheme, DictionaryScheme):
        model.scheme.write_files(directory)
    state, warmup, reference = _warm_state_and_reference(model, settings)
    t = time.perf_counter()
    write_conformance(model, directory, specs, settings.precision, reference.warm)
    log.info("conformance vectors written in %.1f s", time.perf_counter() - t)
    manifest = build_manifest(model, settings, source, state, warmup, calibration).replace(files={
        f.name: {"sha256": sha256_of(f), "bytes": f.stat().st_size}
        for f in sorted(directory.iterdir()) if f.name != C.MANIFEST_FILE
    })
    _write_manifest(directory, manifest)

    t = time.perf_counter()
    report = check_parity(model, directory, settings.precision, reference=reference, progress=settings.progress)
    worst = report.worst()
    log.info("parity (%s) passed in %.1f s: worst max abs %.2e, mean cosine %.6f, min cosine %.6f",
             settings.precision, time.perf_counter() - t, worst["max_abs"], worst["mean_cosine"], worst["min_cosine"])
    log.debug("parity:\n%s", report.table())
    _write_manifest(directory, manifest.replace(parity=report.to_dict()))
    _open_to_umask(directory)
