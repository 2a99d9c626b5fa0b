"""The official pretrained ELMo models: their catalog (`models/catalog.json`) and their download.

The catalog is data, not code: one JSON file, one frozen `CatalogModel` per entry, checked on
load by `schema` (the file, the model and the field named in every error). It is looked for in
the project's models/ folder (`base.MODELS_DIRS`): `elmo_export/models/` where an installed
wheel puts it, else `<repository>/models/` for a source checkout or an editable install.

`fetch_model` brings an official model's `options.json` + `weights.hdf5` into a persistent,
verified cache. The transfer, the cache folder and its record are `elmo_runtime.fetch.download`'s
(resumable, verified before the final name appears, offline mode); this module adds what an
official model is: its catalog entry, and the checks that its files are what the catalog
describes (options parsed and matched to the catalog's architecture, every weights dataset's
shape checked against the options, the pinned sha256 where the catalog has one).

Where files go (first that is set wins): the `cache_dir` argument; `$ELMO_ONNX_CACHE/models`;
`$XDG_CACHE_HOME/elmo-onnx/models`, else `~/.cache/elmo-onnx/models`. Each model gets its own
folder, `<cache_dir>/<name>/`, holding `options.json`, `weights.hdf5` (so the folder itself can
be passed wherever local files are accepted) and `sha256.json`, the digests recorded when each
file was downloaded and verified. Where the catalog lists mirrors for a model (copies of
AllenNLP's S3 files on the Hugging Face Hub), a file that cannot be downloaded or does not verify
from the model's own URL is tried from each mirror in order.

This module imports neither torch nor h5py until a download is verified: listing models stays cheap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from elmo_export.sources.base import models_file
from elmo_export.sources.schema import check_model_name, parse_models
from elmo_runtime import contract as C
from elmo_runtime.fetch.download import CachedFiles, cache_root, resolve_offline
from elmo_runtime.jsonfile import read_json

log = logging.getLogger(__name__)

CATALOG_FILENAME = "catalog.json"
_LOCAL_FILES_HINT = (
    "To use files you already have, pass them instead: "
    "`elmo-export --options OPTIONS.json --weights WEIGHTS.hdf5`, "
    "or a directory holding options.json and one .hdf5 file."
)


def _positive(**kwargs: Any) -> Any:
    return field(metadata={"min": 1}, **kwargs)


@dataclass(frozen=True)
class Architecture:
    """The shape of a biLM, as AllenNLP's model names spell it (`2x4096_512_2048cnn_2xhighway`)."""

    lstm_dim: int = _positive()  # D, cells per LSTM layer and direction
    projection_dim: int = _positive()  # P, each direction's output; embeddings are 2P wide
    n_layers: int = _positive()
    n_highway: int = field(metadata={"min": 0})
    cnn_filters: int = _positive()  # F, char CNN filters of all widths together

    @property
    def output_dim(self) -> int:
        """Width of each ELMo layer's embedding: both directions' projections side by side."""
        return 2 * self.projection_dim

    def mismatches(self, options: Any) -> list[str]:
        """How an `elmo_export.model.ElmoOptions` differs from this summary (empty: it matches).

        Duck-typed so that this module does not import torch.
        """
        pairs = {
            "lstm_dim": options.dim,
            "projection_dim": options.projection_dim,
            "n_layers": options.n_layers,
            "n_highway": options.n_highway,
            "cnn_filters": options.n_filters,
        }
        return [
            f"{name} is {found} in the options, {getattr(self, name)} in the catalog"
            for name, found in pairs.items()
            if found != getattr(self, name)
        ]


@dataclass(frozen=True)
class Mirror:
    """Another place serving the same two files (e.g. a Hugging Face Hub copy of AllenNLP's S3 files).

    A download tries the model's own URLs first, then each mirror in order; every copy must pass
    the same checks (structure, and the pinned sha256 where there is one).
    """

    options_url: str = field(metadata={"kind": "url"})
    weights_url: str = field(metadata={"kind": "url"})
    note: str = ""  # who hosts it, at which revision


@dataclass(frozen=True)
class CatalogModel:
    """One official model: where its files live and what it is."""

    name: str  # the catalog key, e.g. "original-5.5b"
    allennlp_name: str  # AllenNLP's name, e.g. "2x4096_512_2048cnn_2xhighway_5.5B"
    description: str
    options_url: str = field(metadata={"kind": "url"})
    weights_url: str = field(metadata={"kind": "url"})
    architecture: Architecture
    parameters_millions: float = field(metadata={"min": 0.001})  # as AllenNLP publishes it
    training_data: str
    license: str  # SPDX identifier
    homepage: str = field(metadata={"kind": "url"})
    # Pinned digests, where known: a download must then match them as well as verify.
    options_sha256: str | None = field(default=None, metadata={"kind": "sha256"})
    weights_sha256: str | None = field(default=None, metadata={"kind": "sha256"})
    mirrors: tuple[Mirror, ...] = ()  # fallbacks, tried in order when the URLs above fail

    def urls(self, which: str) -> list[str]:
        """Where file `which` ("options" or "weights") can be downloaded from, in the order to try."""
        return [getattr(self, f"{which}_url"), *(getattr(m, f"{which}_url") for m in self.mirrors)]

    def __post_init__(self) -> None:
        # Checked here as well as on load: the name becomes a directory under the cache.
        check_model_name(self.name)


def parse_catalog(data: Any, source: str = "catalog") -> dict[str, CatalogModel]:
    """Check a parsed catalog (`{"schema_version": 1, "models": {name: entry}}`) and build it.

    Raises:
        ValueError: a wrong schema version, or any entry that does not fit the schema.
    """
    return parse_models(data, CatalogModel, source)


def official_names() -> list[str]:
    """The official catalog's model names, or [] where the catalog is missing or broken (for
    messages that must still be given; loading the catalog itself names what is wrong)."""
    try:
        return list(load_catalog())
    except (OSError, ValueError):
        return []


def default_catalog_path() -> Path:
    """The shipped catalog file.

    Raises:
        FileNotFoundError: neither location of `base.MODELS_DIRS` holds it (both are named).
    """
    return models_file(CATALOG_FILENAME, "model catalog")


def load_catalog(path: str | Path | None = None) -> dict[str, CatalogModel]:
    """Read and check a catalog file: the shipped `models/catalog.json` when `path` is None.

    Returns:
        The models by name, in the file's order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or an entry that does not fit the schema (naming model and field).
    """
    path = default_catalog_path() if path is None else Path(path)
    catalog = parse_models(read_json(path, "catalog file"), CatalogModel, source=str(path))
    log.debug("read %d models from %s", len(catalog), path)
    return catalog


def get_model(name: str, catalog: Mapping[str, CatalogModel] | None = None) -> CatalogModel:
    """One model by name, from `catalog` or the shipped one.

    Raises:
        TypeError: `name` is not a string.
        ValueError: an unknown name (the known names are listed).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__} {name!r}")
    models = load_catalog() if catalog is None else catalog
    if name not in models:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(models)}")
    return models[name]


def default_cache_dir() -> Path:
    """The folder holding one sub-folder per model (see the module docstring for the order)."""
    return cache_root() / "models"


def model_cache_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """`<cache_dir>/<name>/`, where one model's files live."""
    check_model_name(name)
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / name


def model_files(
    name: str, cache_dir: str | Path | None, hint: str, how_to_fix: Callable[[Path], str], fetching: dict
) -> CachedFiles:
    """A model's cache folder as `CachedFiles`: what `fetch_model` and `archives.fetch_archive` download into.

    Args:
        hint, how_to_fix: what the errors add (`how_to_fix` is given the folder).
        fetching: `offline` (None reads `ELMO_ONNX_OFFLINE`), `force`, `progress`, `retries`, `timeout_s`.
    """
    directory = model_cache_dir(name, cache_dir)
    options = {**fetching, "offline": resolve_offline(fetching.get("offline"))}
    return CachedFiles(directory, f"model {name!r}", hint=hint, how_to_fix=how_to_fix(directory), **options)


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
    model = _catalog_model(name, catalog)
    fetching = {"offline": offline, "force": force, "progress": progress, "retries": retries, "timeout_s": timeout_s}
    fetch = model_files(
        model.name, cache_dir, _LOCAL_FILES_HINT, lambda directory: _how_to_fix(model, directory), fetching
    )
    # The model's own URLs first, then its mirrors: each copy must pass the same checks.
    options_path = fetch.ensure(
        C.OPTIONS_FILE,
        model.urls("options"),
        sha256=model.options_sha256,
        verify=lambda path: _verify_options(model, path),
    )
    weights_path = fetch.ensure(
        C.WEIGHTS_FILE,
        model.urls("weights"),
        sha256=model.weights_sha256,
        verify=lambda path: _verify_weights(options_path, path),
    )
    return options_path, weights_path


def _catalog_model(name: str | CatalogModel, catalog: Mapping[str, CatalogModel] | str | Path | None) -> CatalogModel:
    """The model `name` names in `catalog` (a mapping, a catalog file, or None: the shipped one)."""
    if isinstance(name, CatalogModel):
        return name
    models = load_catalog(catalog) if isinstance(catalog, (str, Path)) else catalog
    return get_model(name, models)


def _how_to_fix(model: CatalogModel, directory: Path) -> str:
    """What to do about a corrupt cached file of `model`."""
    return (
        f"Delete it (or the folder {directory}) and fetch again, or call "
        f"fetch_model({model.name!r}, force=True) to download it again over the cached copy."
    )


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
