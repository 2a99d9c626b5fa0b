"""Where a model's two files come from: a folder, a pair of files, an official name, or the default.

`resolve_model` turns what a user names (`elmo-export`'s MODEL, or --options/--weights) into the
`(options.json, weights.hdf5)` pair that `export.export_package` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from elmo_export import catalog, download
from elmo_runtime import contract as C

log = logging.getLogger(__name__)


class ModelSourceError(ValueError):
    """No usable model where one was named (the message says what was found and what to pass)."""


def _official_names() -> list[str]:
    """The official catalog's model names, or [] where the catalog is missing or broken."""
    try:
        return list(catalog.load_catalog())
    except (OSError, ValueError):  # the message this serves must still be given
        return []


def how_to_pass() -> str:
    """How to name a model, for error messages."""
    names = _official_names()
    official = f", or an official model name ({', '.join(names)})" if names else ""
    return (f"pass a model directory holding {C.OPTIONS_FILE} and its weights .hdf5 "
            f"(elmo-export path/to/model -o OUT), or --options FILE --weights FILE{official}")


def files_in_model_dir(directory: Path) -> tuple[Path, Path]:
    """`options.json` and the weights file of a model directory.

    The weights are the directory's only `*.hdf5`, or, where there are several (a training
    run also writes `softmax.hdf5`), the only one named `*weights.hdf5`.

    Raises:
        ModelSourceError: no options.json, or not exactly one weights file (what was found is listed).
    """
    found = sorted(p.name for p in directory.iterdir())
    listing = ", ".join(found) if found else "nothing"
    if not (directory / C.OPTIONS_FILE).is_file():
        raise ModelSourceError(f"model directory {directory} has no {C.OPTIONS_FILE} (found: {listing}); "
                               + how_to_pass())
    weights = sorted(p for p in directory.glob("*.hdf5") if p.is_file())
    if len(weights) > 1:
        named = [p for p in weights if p.name.endswith("weights.hdf5")]
        weights = named if len(named) == 1 else weights
    if len(weights) != 1:
        what = "no .hdf5 file" if not weights else f"{len(weights)} .hdf5 files ({', '.join(p.name for p in weights)})"
        raise ModelSourceError(
            f"model directory {directory} must hold exactly one weights .hdf5 file, found {what} "
            f"(all files: {listing}); name the files with --options FILE --weights FILE"
        )
    return directory / C.OPTIONS_FILE, weights[0]


def default_model_dir(models_dirs: tuple[Path, ...] | None = None) -> Path:
    """The project's default model: the one `default*/` directory under `catalog.MODELS_DIRS`.

    Raises:
        ModelSourceError: there is none yet (or several), with how to pass a model instead.
    """
    models_dirs = catalog.MODELS_DIRS if models_dirs is None else models_dirs
    for models_dir in models_dirs:
        candidates = sorted(p for p in models_dir.glob("default*") if p.is_dir()) if models_dir.is_dir() else []
        if len(candidates) > 1:
            raise ModelSourceError(f"no MODEL given, and {models_dir} holds several default models "
                                   f"({', '.join(p.name for p in candidates)}); name one of them as MODEL")
        if candidates:
            return candidates[0]
    looked = " and ".join(f"{d}/default*/" for d in models_dirs)
    raise ModelSourceError(f"no MODEL given, and there is no default model yet (none in {looked}); " + how_to_pass())


def resolve_model(model: str | None = None, options: str | Path | None = None, weights: str | Path | None = None,
                  progress: bool = True) -> tuple[Path, Path]:
    """The `(options.json, weights.hdf5)` that a model name or folder, or a pair of files, stand for.

    `model` is a directory (see `files_in_model_dir`) or an official model name, which is
    downloaded into the cache (`download.fetch_model`); none of the three: the project's
    default model (`default_model_dir`).

    Raises:
        ModelSourceError: contradictory or incomplete arguments, or no model found.
        ValueError, OSError, download.DownloadError: from the catalog or the download of an
            official model.
    """
    if options is not None or weights is not None:
        if model is not None:
            raise ModelSourceError(f"give either MODEL ({model}) or --options/--weights, not both")
        if options is None or weights is None:
            raise ModelSourceError("--options and --weights go together: pass both files")
        return Path(options), Path(weights)
    if model is None:
        directory = default_model_dir()
        log.info("exporting the default model %s", directory)
        return files_in_model_dir(directory)
    path = Path(model)
    if path.is_dir():
        return files_in_model_dir(path)
    if path.exists():
        raise ModelSourceError(f"MODEL {model} is a file, not a model directory; {how_to_pass()}")
    try:
        entry = catalog.get_model(model)
    except ValueError as e:
        raise ModelSourceError(f"no such model directory: {model}, nor is it an official model name ({e}); "
                               + how_to_pass()) from None
    log.info("fetching the official model %s (%s)", entry.name, entry.allennlp_name)
    options_path, weights_path = download.fetch_model(entry.name, progress=progress)
    return Path(options_path), Path(weights_path)
