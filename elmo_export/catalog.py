"""The official pretrained ELMo models, by name: data in `models/catalog.json`, checked on load.

The catalog is data, not code (one JSON file, one frozen dataclass per entry). Its schema is the
two dataclasses below: every field's type and allowed range is read from them, so a field added
here is checked without a second list to keep in step. A missing, unknown or ill-typed field
raises `ValueError` naming the file, the model and the field.

Where the file is looked for, first hit wins (`MODELS_DIRS`, the project's `models/` folder):

1. `elmo_export/models/catalog.json`, where an installed wheel puts it;
2. `<repository>/models/catalog.json`, for a source checkout or an editable install.

This module imports neither torch nor h5py: listing models stays cheap.
"""

from __future__ import annotations

import logging
import re
import types
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from elmo_runtime.jsonfile import read_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CATALOG_FILENAME = "catalog.json"
# The project's models/ folder (the catalog and the shipped default model), first hit wins: an
# installed wheel puts it at elmo_export/models, a checkout has it beside the package.
MODELS_DIRS = (Path(__file__).resolve().parent / "models", Path(__file__).resolve().parents[1] / "models")

# Names become cache directory names: no separators, no leading dot, nothing to escape.
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def check_model_name(name: str, source: str = "") -> str:
    """`name` if it can name a model (and its cache folder). Raises ValueError if not."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"{source + ': ' if source else ''}model name {name!r} is not allowed: use lower-case letters, "
            "digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


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

    @classmethod
    def from_dict(cls, name: str, data: Any, source: str = "catalog") -> "CatalogModel":
        """Check one catalog entry against the schema and build it.

        Raises:
            ValueError: a missing, unknown, ill-typed or out-of-range field, naming the model.
        """
        check_model_name(name, source)
        return _build(cls, data, f"{source}: model {name!r}", "", preset={"name": name})


def _type_name(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint))
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return "object"
    return getattr(hint, "__name__", str(hint))


def _check_value(hint: Any, value: Any, metadata: Mapping, where: str, path: str) -> Any:
    """Check one JSON value against a field's type hint and metadata; return the typed value."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [a for a in options if a is not type(None)]
        return _check_value(inner, value, metadata, where, path)

    def bad(expected: str) -> ValueError:
        return ValueError(
            f"{where}: field {path!r} is {value!r} ({type(value).__name__}), expected {expected}"
        )

    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _build(hint, value, where, f"{path}.")
    if origin is tuple:  # `tuple[X, ...]`: a JSON list of X
        if not isinstance(value, list):
            raise bad("a list")
        return tuple(_check_value(get_args(hint)[0], item, {}, where, f"{path}[{k}]") for k, item in enumerate(value))
    if hint is int:
        if type(value) is not int:  # bool is an int subclass: not accepted
            raise bad("an integer")
    elif hint is float:
        if type(value) not in (int, float):
            raise bad("a number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
    else:  # a type the schema does not know yet: a programming error, not a user's
        raise TypeError(f"catalog schema: no check for type {hint!r} of field {path!r}")

    if "min" in metadata and value < metadata["min"]:
        raise bad(f"at least {metadata['min']}")
    kind = metadata.get("kind")
    if kind == "url":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise bad("an http:// or https:// URL")
    elif kind == "sha256" and not _SHA256_PATTERN.match(value):
        raise bad("64 lower-case hex digits (a sha256)")
    return value


def _build(cls: type, data: Any, where: str, prefix: str, preset: Mapping | None = None) -> Any:
    """Build dataclass `cls` from a JSON object, checking each field the dataclass declares."""
    preset = dict(preset or {})
    if not isinstance(data, dict):
        name = prefix.rstrip(".") or "entry"
        raise ValueError(f"{where}: {name} is {type(data).__name__}, expected an object")
    hints = get_type_hints(cls)
    declared = [f for f in fields(cls) if f.name not in preset]
    unknown = sorted(set(data) - {f.name for f in declared})
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {', '.join(repr(prefix + u) for u in unknown)}; "
            f"allowed: {', '.join(prefix + f.name for f in declared)}"
        )
    values = dict(preset)
    for f in declared:
        path = prefix + f.name
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"{where}: missing field {path!r} ({_type_name(hints[f.name])})")
            continue
        values[f.name] = _check_value(hints[f.name], data[f.name], f.metadata, where, path)
    return cls(**values)


def parse_catalog(data: Any, source: str = "catalog") -> dict[str, CatalogModel]:
    """Check a parsed catalog (`{"schema_version": 1, "models": {name: entry}}`) and build it.

    Returns:
        The models by name, in the file's order.

    Raises:
        ValueError: a wrong schema version, or any entry that does not fit the schema.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: the catalog is {type(data).__name__}, expected an object")
    unknown = sorted(set(data) - {"schema_version", "models"})
    if unknown:
        raise ValueError(
            f"{source}: unknown top-level field(s) {', '.join(map(repr, unknown))}; "
            "allowed: schema_version, models"
        )
    version = data.get("schema_version")
    if version is None:
        raise ValueError(f"{source}: missing field 'schema_version' (expected {SCHEMA_VERSION})")
    if type(version) is not int:
        raise ValueError(f"{source}: schema_version is {version!r}, expected the integer {SCHEMA_VERSION}")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{source}: schema_version {version} is not supported: this elmo-onnx reads "
            f"schema_version {SCHEMA_VERSION} (a newer catalog needs a newer elmo-onnx)"
        )
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ValueError(f"{source}: 'models' is {models!r}, expected a non-empty object of models by name")
    return {name: CatalogModel.from_dict(name, entry, source) for name, entry in models.items()}


def catalog_candidates() -> list[Path]:
    """Where the catalog is looked for, in order (see the module docstring)."""
    return [directory / CATALOG_FILENAME for directory in MODELS_DIRS]


def default_catalog_path() -> Path:
    """The shipped catalog file.

    Raises:
        FileNotFoundError: neither location holds it (both are named).
    """
    candidates = catalog_candidates()
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "the model catalog is missing: looked for "
        + " and ".join(str(c) for c in candidates)
        + " (a broken install? reinstall elmo-onnx)"
    )


def load_catalog(path: str | Path | None = None) -> dict[str, CatalogModel]:
    """Read and check a catalog file: the shipped `models/catalog.json` when `path` is None.

    Returns:
        The models by name, in the file's order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or an entry that does not fit the schema (naming model and field).
    """
    path = default_catalog_path() if path is None else Path(path)
    catalog = parse_catalog(read_json(path, "catalog file"), source=str(path))
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
