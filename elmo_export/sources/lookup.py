"""`resolve`: what a user names (`elmo-export`'s MODEL, or --options/--weights) -> a `Loader`.

Tried in order: a pair of files, the default model, a folder of either family, a ZIP, a name in
the archive catalog, a name in the official catalog; what was found and what to pass is said
where nothing fits.
"""

from __future__ import annotations

import logging
from pathlib import Path

import elmo_export.sources.archives as archives
import elmo_export.sources.base as base
import elmo_export.sources.bilm_tf as bilm_tf
import elmo_export.sources.official as official
from elmo_export.sources.base import Loader, ModelSourceError, listing
from elmo_runtime import contract as C

log = logging.getLogger(__name__)


def how_to_pass() -> str:
    """How to name a model, for error messages."""
    names = official.official_names()
    named = f", or an official model name ({', '.join(names)})" if names else ""
    return (
        f"pass a model directory holding {C.OPTIONS_FILE} and its weights .hdf5 "
        f"(elmo-export path/to/model -o OUT), or --options FILE --weights FILE{named}"
    )


def default_model_dir(models_dirs: tuple[Path, ...] | None = None) -> Path:
    """The project's default model: the one `default*/` directory under `base.MODELS_DIRS`.

    Raises:
        ModelSourceError: there is none yet (or several), with how to pass a model instead.
    """
    models_dirs = base.MODELS_DIRS if models_dirs is None else models_dirs
    for models_dir in models_dirs:
        candidates = sorted(p for p in models_dir.glob("default*") if p.is_dir()) if models_dir.is_dir() else []
        if len(candidates) > 1:
            raise ModelSourceError(
                f"no MODEL given, and {models_dir} holds several default models "
                f"({', '.join(p.name for p in candidates)}); name one of them as MODEL"
            )
        if candidates:
            return candidates[0]
    looked = " and ".join(f"{d}/default*/" for d in models_dirs)
    raise ModelSourceError(f"no MODEL given, and there is no default model yet (none in {looked}); " + how_to_pass())


def resolve(
    model: str | Path | None = None,
    options: str | Path | None = None,
    weights: str | Path | None = None,
    *,
    progress: bool = True,
) -> Loader:
    """The loader of the model that `model`, or the pair `options` + `weights`, names.

    Args:
        model: a model directory of either family (bilm-tf: `options.json` + one weights
            `.hdf5`; ELMoForManyLangs), a model ZIP of either family (as NLPL serves them), the
            name of a model served as a ZIP (`models/archives.json`) or of an official model
            (`models/catalog.json`), downloaded once into the cache; None (and no files): the
            project's default model (`default_model_dir`).
        options, weights: a bilm-tf model's two files, instead of `model`.
        progress: progress bars for a download.

    Raises:
        ModelSourceError: contradictory or incomplete arguments, or no model found.
        FileNotFoundError, ValueError: a catalog is missing or broken (the file is named).
        elmo_runtime.fetch.download.DownloadError: the download of a named model failed.
    """
    if options is not None or weights is not None:
        if model is not None:
            raise ModelSourceError(f"give either MODEL ({model}) or --options/--weights, not both")
        if options is None or weights is None:
            raise ModelSourceError("--options and --weights go together: pass both files")
        return bilm_tf.files_loader(options, weights)
    if model is None:
        directory = default_model_dir()
        log.info("exporting the default model %s", directory)
        return bilm_tf.directory_loader(directory)
    path = Path(model)
    if path.is_dir():
        loader = archives.directory_loader(path)
        if loader is None:
            raise ModelSourceError(
                f"model directory {path} has no {C.OPTIONS_FILE} (found: {listing(path)}); " + how_to_pass()
            )
        return loader
    if archives.is_archive(path):
        return archives.archive_loader(path)
    if path.exists():
        raise ModelSourceError(f"MODEL {model} is a file, not a model directory; {how_to_pass()}")
    return _by_name(str(model), progress)


def _by_name(name: str, progress: bool) -> Loader:
    """A model named in a catalog: the archive catalog's, else the official one's."""
    archive = archives.find_archive(name)
    if archive is not None:
        log.info("fetching %s (downloaded once into the cache)", name)
        return archives.archive_loader(archives.fetch_archive(archive, progress=progress))
    models = official.load_catalog()
    try:
        entry = official.get_model(name, models)
    except ValueError as e:
        raise ModelSourceError(
            f"no such model directory: {name}, nor is it an official model name ({e}); " + how_to_pass()
        ) from None
    log.info("fetching the official model %s (%s)", entry.name, entry.allennlp_name)
    options, weights = official.fetch_model(entry, progress=progress)
    return bilm_tf.files_loader(
        options,
        weights,
        description=f"the official model {entry.name}",
        license=entry.license,
        license_url=entry.homepage,
    )
