"""Model packages by name: one catalog entry per model and precision, each a downloadable archive.

A catalog is a JSON file:

    {"schema_version": 1,
     "packages": {"small-int8": {"model": "small", "precision": "int8",
                                 "url": "https://example.org/elmo/small-int8.zip",
                                 "bytes": 14012345, "sha256": "<64 hex digits>",
                                 "description": "..."}}}

`url` points at a zip archive of the package's files (`elmo_export.publish.archive_package`
writes one and prints its entry); `bytes` and `sha256` are the archive's, so a download is
verified before it is opened, and the package's own manifest then vouches for every file in it.

The project's catalog (`elmo_runtime/catalog.json`) lists only packages that the project really
publishes; a team adds its own catalog files, with the same schema, through `ELMO_ONNX_CATALOG`
(paths separated by `os.pathsep`). A name may appear in one catalog only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from elmo_runtime import contract as C

SCHEMA_VERSION = 1
ENV_CATALOG = "ELMO_ONNX_CATALOG"
PROJECT_CATALOG = Path(__file__).resolve().parents[1] / "catalog.json"
# Reserved: the package shipped inside the runtime.
SHIPPED_NAME = "default"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PackageEntry:
    """One downloadable package: a model at one precision."""

    name: str  # the catalog key, e.g. "small-int8"
    model: str  # the model it was exported from, e.g. "small"
    precision: str  # one of contract.PRECISIONS
    url: str  # http(s) URL of the zip archive
    bytes: int  # the archive's size
    sha256: str  # the archive's digest
    description: str
    catalog: Path  # the file that lists it


def check_entry(name: Any, data: Any, source: Path) -> PackageEntry:
    """One catalog entry checked against the schema (ValueError naming the file, package and field)."""
    where = f"{source}: package {name!r}"
    if not isinstance(name, str) or not _NAME.match(name) or name == SHIPPED_NAME:
        raise ValueError(
            f"{where}: the name is not allowed: use lower-case letters, digits, '.', '_' and '-', "
            f"starting with a letter or digit (and not {SHIPPED_NAME!r}, the shipped package)"
        )
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the entry is {type(data).__name__}, expected an object")
    allowed = ("model", "precision", "url", "bytes", "sha256", "description")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    missing = [key for key in allowed[:5] if key not in data]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")

    def bad(key: str, expected: str) -> ValueError:
        return ValueError(f"{where}: field {key!r} is {data[key]!r}, expected {expected}")

    for key in ("model", "description"):
        if key in data and (not isinstance(data[key], str) or (key == "model" and not data[key].strip())):
            raise bad(key, "a non-empty string" if key == "model" else "a string")
    if data["precision"] not in C.PRECISIONS:
        raise bad("precision", f"one of {', '.join(C.PRECISIONS)}")
    parts = urlsplit(data["url"]) if isinstance(data["url"], str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad("url", "an http:// or https:// URL")
    if type(data["bytes"]) is not int or data["bytes"] < 1:
        raise bad("bytes", "a positive integer")
    if not isinstance(data["sha256"], str) or not _SHA256.match(data["sha256"]):
        raise bad("sha256", "64 lower-case hex digits")
    return PackageEntry(
        name,
        data["model"],
        data["precision"],
        data["url"],
        data["bytes"],
        data["sha256"],
        data.get("description", ""),
        source,
    )


def read_catalog(path: str | Path) -> dict[str, PackageEntry]:
    """The entries of one catalog file, checked against the schema.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, a wrong schema version, or an entry that does not fit (naming the
            file, the package and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"package catalog not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON catalog: {e}") from None
    if not isinstance(data, dict) or set(data) != {"schema_version", "packages"}:
        raise ValueError(f"{path}: expected an object with exactly 'schema_version' and 'packages'")
    if data["schema_version"] != SCHEMA_VERSION or type(data["schema_version"]) is not int:
        raise ValueError(
            f"{path}: schema_version {data['schema_version']!r} is not supported: this elmo-onnx "
            f"reads schema_version {SCHEMA_VERSION}"
        )
    if not isinstance(data["packages"], dict):
        raise ValueError(f"{path}: 'packages' is {type(data['packages']).__name__}, expected an object by name")
    return {name: check_entry(name, entry, path) for name, entry in data["packages"].items()}


def catalog_files() -> list[Path]:
    """The project's catalog, then those `ELMO_ONNX_CATALOG` names, in order."""
    extra = [Path(p).expanduser() for p in os.environ.get(ENV_CATALOG, "").split(os.pathsep) if p.strip()]
    return [PROJECT_CATALOG, *extra]


def load_catalogs(paths: list[str | Path] | None = None) -> dict[str, PackageEntry]:
    """Every package the catalogs list, by name (default: `catalog_files()`).

    Raises:
        FileNotFoundError, ValueError: as `read_catalog`; ValueError also for a name listed by
            two catalogs (both named).
    """
    packages: dict[str, PackageEntry] = {}
    for path in catalog_files() if paths is None else paths:
        for name, entry in read_catalog(path).items():
            if name in packages:
                raise ValueError(
                    f"package {name!r} is listed twice: in {packages[name].catalog} and in {path}; rename one of them"
                )
            packages[name] = entry
    return packages
