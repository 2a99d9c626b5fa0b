"""Read and check a model package's manifest (`elmo.json`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elmo_runtime import contract as C


class PackageError(ValueError):
    """A model package that is missing files, corrupt, or from an unknown format version."""


@dataclass(frozen=True)
class Manifest:
    """What the runtime needs from `elmo.json`; `data` keeps the whole document."""

    directory: Path
    format_version: int
    precision: str
    n_layers: int
    projection_dim: int
    dim: int
    token_embedder_file: Path
    bilm_file: Path
    initial_state_mode: str
    warm_h: np.ndarray | None  # (L, 2, P)
    warm_c: np.ndarray | None  # (L, 2, D)
    data: dict

    @property
    def output_dim(self) -> int:
        return 2 * self.projection_dim


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _field(data: dict, path: str, kind: type | tuple, source: Path):
    node = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise PackageError(f"{source}: missing field {path!r}")
        node = node[key]
    if isinstance(node, bool) and kind is not bool or not isinstance(node, kind):
        raise PackageError(f"{source}: field {path!r} is {type(node).__name__}, expected {kind}")
    return node


def load_manifest(package_dir: str | Path, verify_files: bool = False) -> Manifest:
    """Read and check the manifest of the package in `package_dir`.

    Args:
        package_dir: the package directory (holding `elmo.json`).
        verify_files: also recompute every file's sha256 against the manifest (slow on big
            packages; sizes are always checked).

    Raises:
        FileNotFoundError: no such directory or no manifest in it.
        PackageError: the manifest is corrupt, from a newer format, or names missing or
            altered files.
    """
    directory = Path(package_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"model package not found: {directory} is not a directory")
    source = directory / C.MANIFEST_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{directory} is not an elmo-onnx model package: it has no {C.MANIFEST_FILE}")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackageError(f"{source}: corrupt manifest, not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise PackageError(f"{source}: corrupt manifest, expected a JSON object")

    version = _field(data, "format_version", int, source)
    if version > C.FORMAT_VERSION:
        raise PackageError(
            f"{source}: package format version {version} is newer than this runtime reads "
            f"({C.FORMAT_VERSION}); upgrade elmo-onnx"
        )
    if version < 1:
        raise PackageError(f"{source}: invalid format_version {version}")

    files = _field(data, "files", dict, source)
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise PackageError(f"{directory}: file {name!r} listed in the manifest is missing")
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if size is not None and path.stat().st_size != size:
            raise PackageError(
                f"{directory}: file {name!r} has {path.stat().st_size} bytes, the manifest says {size} (corrupt or truncated)"
            )
        if verify_files and isinstance(entry, dict) and entry.get("sha256") and sha256_of(path) != entry["sha256"]:
            raise PackageError(f"{directory}: file {name!r} does not match its sha256 in the manifest (corrupt)")

    graphs = {}
    for graph in ("token_embedder", "bilm"):
        name = _field(data, f"graphs.{graph}.file", str, source)
        if not (directory / name).is_file():
            raise PackageError(f"{directory}: graph file {name!r} ({graph}) is missing")
        graphs[graph] = directory / name

    n_layers = _field(data, "architecture.lstm.n_layers", int, source)
    projection_dim = _field(data, "architecture.lstm.projection_dim", int, source)
    dim = _field(data, "architecture.lstm.dim", int, source)
    mode = _field(data, "initial_state.mode", str, source)
    warm_h = warm_c = None
    if mode == "warm":
        try:
            warm_h = np.asarray(_field(data, "initial_state.h", list, source), dtype=np.float32)
            warm_c = np.asarray(_field(data, "initial_state.c", list, source), dtype=np.float32)
        except ValueError as e:
            if isinstance(e, PackageError):
                raise
            raise PackageError(f"{source}: initial_state.h/c are not numeric arrays ({e})") from None
        if warm_h.shape != (n_layers, 2, projection_dim) or warm_c.shape != (n_layers, 2, dim):
            raise PackageError(
                f"{source}: warm initial state has shapes h {warm_h.shape}, c {warm_c.shape}; "
                f"expected {(n_layers, 2, projection_dim)} and {(n_layers, 2, dim)}"
            )
    elif mode != "zero":
        raise PackageError(f"{source}: initial_state.mode is {mode!r}, expected 'warm' or 'zero'")

    precision = data.get("precision")
    precision_name = precision.get("name") if isinstance(precision, dict) else precision
    if not isinstance(precision_name, str):
        raise PackageError(f"{source}: missing field 'precision.name'")
    return Manifest(directory, version, precision_name, n_layers, projection_dim, dim,
                    graphs["token_embedder"], graphs["bilm"], mode, warm_h, warm_c, data)
