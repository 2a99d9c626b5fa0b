"""The schema of the project's catalogs (`models/catalog.json`, `models/archives.json`): data, checked.

A catalog is `{"schema_version": 1, "models": {name: entry}}`; each entry's schema is a frozen
dataclass: every field's type and allowed range is read from it (`metadata`: `min`, `kind` url or
sha256), so a field added there is checked without a second list to keep in step. A missing,
unknown or ill-typed field raises `ValueError` naming the file, the model and the field.

This module imports neither torch nor h5py: listing models stays cheap.
"""

from __future__ import annotations

import re
import types
from dataclasses import MISSING, fields
from typing import Any, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

SCHEMA_VERSION = 1
# Names become cache directory names: no separators, no leading dot, nothing to escape.
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
Entry = TypeVar("Entry")


def check_model_name(name: str, source: str = "") -> str:
    """`name` if it can name a model (and its cache folder). Raises ValueError if not."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"{source + ': ' if source else ''}model name {name!r} is not allowed: use lower-case letters, "
            "digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


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
        return ValueError(f"{where}: field {path!r} is {value!r} ({type(value).__name__}), expected {expected}")

    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return build(hint, value, where, f"{path}.")
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


def build(cls: type, data: Any, where: str, prefix: str, preset: Mapping | None = None) -> Any:
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


def parse_models(data: Any, schema: type[Entry], source: str = "catalog") -> dict[str, Entry]:
    """Check a parsed catalog (`{"schema_version": 1, "models": {name: entry}}`) and build its
    entries as `schema` (a dataclass with a `name` field, which is the entry's key).

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
            f"{source}: unknown top-level field(s) {', '.join(map(repr, unknown))}; allowed: schema_version, models"
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
    return {
        check_model_name(name, source): build(schema, entry, f"{source}: model {name!r}", "", preset={"name": name})
        for name, entry in models.items()
    }
