"""Fetch an official model's `options.json` + `weights.hdf5` into a persistent, verified cache.

The transfer, the cache folder and its record are `elmo_runtime.fetch.download`'s (resumable,
verified before the final name appears, offline mode); this module adds what an official model
is: its catalog entry, and the checks that its files are what the catalog describes (options
parsed and matched to the catalog's architecture, every weights dataset's shape checked against
the options, the pinned sha256 where the catalog has one).

Where files go (first that is set wins): the `cache_dir` argument; `$ELMO_ONNX_CACHE/models`;
`$XDG_CACHE_HOME/elmo-onnx/models`, else `~/.cache/elmo-onnx/models`. Each model gets its own
folder, `<cache_dir>/<name>/`, holding `options.json`, `weights.hdf5` (so the folder itself can
be passed wherever local files are accepted) and `sha256.json`, the digests recorded when each
file was downloaded and verified.

Where the catalog lists mirrors for a model (copies of AllenNLP's S3 files on the Hugging Face
Hub), a file that cannot be downloaded or does not verify from the model's own URL is tried from
each mirror in order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from elmo_export.catalog import CatalogModel, check_model_name, get_model, load_catalog
from elmo_runtime import contract as C
from elmo_runtime.fetch.download import (  # noqa: F401 (re-exported: the exporter's callers use them)
    ENV_CACHE,
    ENV_OFFLINE,
    CachedFiles,
    CorruptCacheError,
    DownloadError,
    cache_root,
    offline_mode,
    resolve_offline,
)

log = logging.getLogger(__name__)

_LOCAL_FILES_HINT = (
    "To use files you already have, pass them instead: "
    "`elmo-export --options OPTIONS.json --weights WEIGHTS.hdf5`, "
    "or a directory holding options.json and one .hdf5 file."
)


def default_cache_dir() -> Path:
    """The folder holding one sub-folder per model (see the module docstring for the order)."""
    return cache_root() / "models"


def model_cache_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """`<cache_dir>/<name>/`, where one model's files live."""
    check_model_name(name)
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / name


def fetch_model(
    name: str | CatalogModel,
    cache_dir: str | Path | None = None,
    *,
    progress: bool = True,
    force: bool = False,
    offline: bool | None = None,
    catalog: Mapping[str, CatalogModel] | str | Path | None = None,
    retries: int = 3,
    timeout_s: float = 60.0,
) -> tuple[Path, Path]:
    """Make sure an official model's two files are in the cache, verified; download what is missing.

    Args:
        name: a catalog name (`"small"`, `"original-5.5b"`, ...) or a `CatalogModel` itself.
        cache_dir: the folder holding one sub-folder per model; default: `default_cache_dir()`.
        progress: draw a tqdm progress bar per file.
        force: download both files again, replacing cached ones (for a corrupt cache).
        offline: use cached files only; `None` reads `ELMO_ONNX_OFFLINE`.
        catalog: the models to look `name` up in, or a catalog file; default: the shipped one.
        retries: attempts per file before giving up (each resumes where the last one stopped).
        timeout_s: seconds without an answer from the server before an attempt fails.

    Returns:
        `(options_path, weights_path)`: `<cache_dir>/<name>/options.json` and `.../weights.hdf5`.

    Raises:
        ValueError: an unknown model name (the known ones are listed), or bad arguments.
        CorruptCacheError: a cached file's sha256 differs from the one recorded at download.
        DownloadError: offline with a file missing, the network or server failed, or a
            downloaded file did not verify (it is deleted; nothing is left under the final name).
    """
    if isinstance(name, CatalogModel):
        model = name
    else:
        models = load_catalog(catalog) if isinstance(catalog, (str, Path)) else catalog
        model = get_model(name, models)
    directory = model_cache_dir(model.name, cache_dir)
    fetch = CachedFiles(
        directory, f"model {model.name!r}", offline=resolve_offline(offline), force=force, progress=progress,
        retries=retries, timeout_s=timeout_s, hint=_LOCAL_FILES_HINT,
        how_to_fix=(f"Delete it (or the folder {directory}) and fetch again, or call "
                    f"fetch_model({model.name!r}, force=True) to download it again over the cached copy."),
    )
    # The model's own URLs first, then its mirrors: each copy must pass the same checks.
    options_path = fetch.ensure(C.OPTIONS_FILE, model.urls("options"), sha256=model.options_sha256,
                                verify=lambda path: _verify_options(model, path))
    weights_path = fetch.ensure(C.WEIGHTS_FILE, model.urls("weights"), sha256=model.weights_sha256,
                                verify=lambda path: _verify_weights(options_path, path))
    return options_path, weights_path


def _verify_options(model: CatalogModel, path: Path) -> None:
    """Parse the options and compare them with the catalog's architecture (ValueError if not)."""
    from elmo_export.model import ElmoOptions  # imported here: it pulls in torch

    options = ElmoOptions.from_file(path)
    problems = model.architecture.mismatches(options)
    if problems:
        raise ValueError(
            f"{path} does not describe model {model.name!r} ({model.allennlp_name}): " + "; ".join(problems)
        )


def _verify_weights(options_path: Path, path: Path) -> None:
    """Every dataset present with the shape the options call for (WeightFileError if not)."""
    from elmo_export.model import ElmoOptions
    from elmo_export.weights import check_weight_file

    check_weight_file(ElmoOptions.from_file(options_path), path, options_source=str(options_path))
