"""Export any ELMo model to a verified ONNX model package (the contract: `elmo_runtime.contract`).

`export(model, out, **settings)` takes a model in any form (`sources.resolve`); every form comes
down to a `Loader`, and `export_reference` does every step in a temporary directory beside the
output, moving the package into place only once it is complete and verified:

1. load the reference (the `Loader`; its errors name missing files and mismatches);
2. build both graphs (`onnx_graph`), in fp16 directly, or fp32 then quantized (`quantize`);
3. save them and validate each (`graph_io`): `onnx.checker.check_model(full_check=True)`
   (with strict shape inference), and the names, dtypes and shapes of `contract.graph_specs`
   (the one export spec);
4. run the reference: the warm initial state (`warmup`) and its outputs on the parity sentences;
5. write the conformance vectors (`conformance`: edge-case sentences with the package's own
   outputs, checked against the reference) and the manifest `elmo.json` (`manifest`), run the
   package in ONNX Runtime against the reference (`parity.check_parity`, which raises
   `ParityError`), and record the parity report and the sha256 of every file in the manifest;
6. rename the directory into place (replacing an old package only with `force`).

A failure at any step removes the temporary directory: no half-written package is left.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from elmo_export import onnx_graph
from elmo_export.calibration import calibration_moments
from elmo_export.conformance import write_conformance
from elmo_export.graph_io import graph_specs, save_graph, validate_graph
from elmo_export.manifest import build_manifest, write_manifest
from elmo_export.model import ElmoBiLm, LstmState
from elmo_export.parity import ReferenceOutputs, check_parity, reference_outputs
from elmo_export.quantize import quantize as quantize_graph
from elmo_export.settings import ExportSettings
from elmo_export.sources import Loader, resolve
from elmo_export.warmup import warm_start
from elmo_runtime import contract as C
from elmo_runtime import scratch
from elmo_runtime.jsonfile import read_json
from elmo_runtime.package import Manifest, PackageError, sha256_of
from elmo_runtime.scratch import OLD_SUFFIX, STAGING_SUFFIX
from elmo_runtime.token_schemes import DictionaryScheme

log = logging.getLogger(__name__)


def export(
    model: str | Path | Loader | None,
    out: str | Path,
    *,
    options: str | Path | None = None,
    weights: str | Path | None = None,
    stop: threading.Event | None = None,
    **settings: Any,
) -> Path:
    """Export a model, named in any form, to a verified model package in `out`.

    Args:
        model: whatever `sources.resolve` takes (a model directory or ZIP of either family, a
            model's name in a catalog, None for the default model), or a `Loader` it returned.
        out: the package directory to create; it must not exist or be empty, unless `force`.
        options, weights: a bilm-tf model's two files, instead of `model`.
        stop: an event that, once set, stops the export before the package is renamed into
            place (KeyboardInterrupt, nothing left at `out`); the command line sets it on
            SIGINT or SIGTERM, whose own KeyboardInterrupt can be lost inside library code.
        settings: `ExportSettings`' fields: `precision` ("fp32", "fp16", "int8", "int4" or
            their settings objects), `initial_state`, `opset`, `force`, `progress`, `calibration`,
            `exact_activations`.

    Returns:
        `out`, holding the package.

    Raises:
        ValueError, TypeError: a bad setting (the allowed values are named).
        sources.ModelSourceError: no model where one was named, or contradictory arguments.
        FileNotFoundError: a model file is missing.
        weights.WeightFileError: the weights do not match the options (every dataset listed).
        elmo_runtime.fetch.download.DownloadError: a named model could not be downloaded.
        FileExistsError: `out` is not empty and `force` is not set (or it is not a package).
        OSError (PermissionError, NotADirectoryError, ...): `out` cannot be written.
        graph_io.GraphValidationError: a built graph fails the checker or the export spec.
        parity.ParityError: the package does not reproduce the reference (every failed check
            listed); nothing is left at `out`.
    """
    export_settings = ExportSettings(**settings)  # first: a bad setting fails before a download
    resolved = isinstance(model, Loader) and options is None and weights is None
    load = model if resolved else resolve(model, options, weights, progress=export_settings.progress)
    return export_reference(load, out, export_settings, stop=stop)


def export_package(
    options: str | Path,
    weights: str | Path,
    out_dir: str | Path,
    *,
    stop: threading.Event | None = None,
    **settings: Any,
) -> Path:
    """Export `options.json` + `weights.hdf5` (the official TF layout) to a verified package in
    `out_dir`: `export(None, out_dir, options=options, weights=weights, ...)`, which documents
    the arguments and errors."""
    return export(None, out_dir, options=options, weights=weights, stop=stop, **settings)


def _check_output(out: Path, force: bool) -> None:
    """Refuse an output we must not replace, before any slow work."""
    if out.name in ("", ".", ".."):
        raise ValueError(
            f"output {str(out)!r} names no directory of its own; give the package directory by "
            f"name (e.g. ../{Path.cwd().name if out.name == '' else 'NAME'})"
        )
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
            raise FileExistsError(
                f"output directory {out} holds a {C.MANIFEST_FILE} that is not an elmo-onnx "
                f"manifest ({e}); refusing to delete its files even with force: choose another "
                "output directory"
            ) from None
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


def export_reference(
    load: Loader, out_dir: str | Path, settings: ExportSettings | None = None, *, stop: threading.Event | None = None
) -> Path:
    """Export the reference biLM that `load()` returns (with its manifest `source` entry).

    Every model source goes through here once resolved: the staging directory, the checks and
    `stop` are those of `export`, which documents the errors. `load` runs after the output is
    checked and the staging directory made, so that a bad output fails before any slow step.
    """
    settings = ExportSettings() if settings is None else settings
    out = Path(out_dir)
    _check_output(out, settings.force)

    started = time.perf_counter()
    try:
        staging = _make_staging_dir(out)  # first: an unwritable output fails before any slow step
        model, source = load()
        o = model.options
        log.info(
            "reference biLM: %.1fM parameters (LSTM %d x %d, projection %d)",
            o.parameter_count() / 1e6,
            o.n_layers,
            o.dim,
            o.projection_dim,
        )
        _export_into(model, settings, source, staging)
        _check_output(out, settings.force)  # again: something may have appeared meanwhile
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        scratch.replace_dir(staging, out)  # an old package there is removed only afterwards
    except BaseException:
        # By name, not by the variable: an interrupt may come between the mkdir and the assignment.
        scratch.remove_own(out, STAGING_SUFFIX)
        raise
    log.info("exported %s (%s) in %.1f s", out, settings.precision.name, time.perf_counter() - started)
    return out


def _build_graphs(model: ElmoBiLm, settings: ExportSettings, directory: Path) -> dict | None:
    """Build, quantize, save and check both graphs; returns the calibration text's description
    where int4 GPTQ calibrated on one."""
    specs = graph_specs(model.options)
    graph_precision = "fp16" if settings.precision.name == "fp16" else "fp32"
    moments, calibration = calibration_moments(model, settings.calibration) if settings.calibrated else (None, None)
    builders = {"token_embedder": onnx_graph.build_token_embedder, "bilm": onnx_graph.build_bilm}
    for name, build in builders.items():
        t = time.perf_counter()
        sources: dict[str, str] = {}
        graph = build(model, graph_precision, settings.graph_opset, sources, settings.exact_activations)
        if settings.quantization is not None:
            by_weight = None if moments is None else {w: moments[p] for w, p in sources.items() if p in moments}
            graph = quantize_graph(graph, settings.quantization, by_weight)
        path = directory / specs[name].file
        save_graph(graph, path)
        del graph
        validate_graph(path, specs[name])
        log.info(
            "built, saved and checked %s (%s, %.1f MB) in %.1f s",
            path.name,
            settings.precision.name,
            path.stat().st_size / 1e6,
            time.perf_counter() - t,
        )
    return calibration


def _warm_state_and_reference(
    model: ElmoBiLm, settings: ExportSettings
) -> tuple[LstmState | None, dict | None, ReferenceOutputs]:
    """The warm state (with its warm-up description) and the reference's parity outputs."""
    state, warmup = warm_start(model, settings.progress) if settings.initial_state == C.WARM else (None, None)
    t = time.perf_counter()
    warm = None if state is None else (state.h.numpy(), state.c.numpy())
    reference = reference_outputs(model, warm, progress=settings.progress)
    log.info("reference parity outputs in %.1f s", time.perf_counter() - t)
    return state, warmup, reference


def _export_into(model: ElmoBiLm, settings: ExportSettings, source: dict, directory: Path) -> None:
    precision = settings.precision.name
    calibration = _build_graphs(model, settings, directory)
    if isinstance(model.scheme, DictionaryScheme):
        model.scheme.write_files(directory)
    state, warmup, reference = _warm_state_and_reference(model, settings)
    t = time.perf_counter()
    write_conformance(model, directory, graph_specs(model.options), precision, reference.warm)
    log.info("conformance vectors written in %.1f s", time.perf_counter() - t)
    manifest = build_manifest(model, settings, source, state, warmup, calibration).replace(
        files={
            f.name: {"sha256": sha256_of(f), "bytes": f.stat().st_size}
            for f in sorted(directory.iterdir())
            if f.name != C.MANIFEST_FILE
        }
    )
    write_manifest(directory, manifest)

    t = time.perf_counter()
    report = check_parity(model, directory, precision, reference=reference, progress=settings.progress)
    worst = report.worst()
    log.info(
        "parity (%s) passed in %.1f s: worst max abs %.2e, mean cosine %.6f, min cosine %.6f",
        precision,
        time.perf_counter() - t,
        worst["max_abs"],
        worst["mean_cosine"],
        worst["min_cosine"],
    )
    log.debug("parity:\n%s", report.table())
    write_manifest(directory, manifest.replace(parity=report.to_dict()))
    _open_to_umask(directory)
