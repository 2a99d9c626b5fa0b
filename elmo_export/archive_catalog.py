"""Models served as one ZIP archive, by name: ELMoForManyLangs' 44 languages and NLPL's NorELMo.

Data in `models/archives.json`, checked on load by the same schema machinery as the official
catalog (`elmo_export.catalog`): one frozen dataclass, each field's type read from it. Entries
name the NLPL repository ZIP, the language, the tokenization the model expects and the licence
as the publishers state it. No digest is pinned (none could be computed where the catalog was
written): a download is checked by opening it as a model archive, and its sha256 is recorded
in the cache and in every package exported from it.

`elmo-export manylangs-fi -o OUT` downloads the archive once into the cache
(`elmo_export.download`'s folder and rules, offline mode included) and exports it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from elmo_export.catalog import SCHEMA_VERSION, _NAME_PATTERN, _build

ARCHIVES_FILENAME = "archives.json"
ARCHIVE_FILE = "model.zip"
FAMILIES = ("elmoformanylangs", "bilm-tf")


@dataclass(frozen=True)
class ArchiveModel:
    """One model served as a single ZIP."""

    name: str  # the catalog key, e.g. "manylangs-fi"
    family: str  # "elmoformanylangs" or "bilm-tf"
    language: str
    language_code: str  # ISO 639
    description: str
    url: str = field(metadata={"kind": "url"})
    nlpl_id: int = field(metadata={"min": 1})  # the NLPL vector repository's ID
    tokenization: str  # what input the model expects
    license: str  # as the publishers state it
    homepage: str = field(metadata={"kind": "url"})
    sha256: str | None = field(default=None, metadata={"kind": "sha256"})

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"model {self.name!r}: family is {self.family!r}; expected one of {', '.join(FAMILIES)}")


def archives_path() -> Path:
    """`models/archives.json`: beside the package when installed, in the checkout otherwise."""
    here = Path(__file__).resolve()
    for candidate in (here.parent / "models" / ARCHIVES_FILENAME, here.parents[1] / "models" / ARCHIVES_FILENAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the archive catalog {ARCHIVES_FILENAME} is missing (a broken install? reinstall elmo-onnx)")


def parse_archives(data: Any, source: str = "archives") -> dict[str, ArchiveModel]:
    """Check a parsed archive catalog and build it (ValueError naming the model and field)."""
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or not isinstance(data.get("models"), dict):
        raise ValueError(f"{source}: expected {{'schema_version': {SCHEMA_VERSION}, 'models': {{name: entry}}}}")
    models = {}
    for name, entry in data["models"].items():
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise ValueError(f"{source}: model name {name!r} is not allowed")
        models[name] = _build(ArchiveModel, entry, f"{source}: model {name!r}", "", preset={"name": name})
    return models


def load_archives(path: str | Path | None = None) -> dict[str, ArchiveModel]:
    path = archives_path() if path is None else Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    return parse_archives(data, str(path))


def find_archive(name: str, archives: Mapping[str, ArchiveModel] | None = None) -> ArchiveModel | None:
    """The entry called `name`, or None."""
    try:
        archives = load_archives() if archives is None else archives
    except (OSError, ValueError):
        return None
    return archives.get(name)


def _verify_archive(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a ZIP archive")
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    if bad is not None:
        raise ValueError(f"{path}: member {bad!r} is corrupt")


def fetch_archive(model: str | ArchiveModel, cache_dir: str | Path | None = None, *, progress: bool = True,
                  force: bool = False, offline: bool | None = None, retries: int = 3,
                  timeout_s: float = 60.0) -> Path:
    """Make sure a model's ZIP is in the cache (`<cache>/<name>/model.zip`), verified; download it if not.

    The arguments and errors are `elmo_export.download.fetch_model`'s.
    """
    from elmo_export.download import model_cache_dir
    from elmo_runtime.fetch.download import CachedFiles, resolve_offline

    if isinstance(model, str):
        found = find_archive(model)
        if found is None:
            raise ValueError(f"unknown archive model {model!r}")
        model = found
    directory = model_cache_dir(model.name, cache_dir)
    files = CachedFiles(directory, f"model {model.name!r}", offline=resolve_offline(offline), force=force,
                        progress=progress, retries=retries, timeout_s=timeout_s,
                        hint=f"To use a ZIP you already have, pass it instead: elmo-export path/to/{model.nlpl_id}.zip",
                        how_to_fix=f"Delete it (or the folder {directory}) and fetch again.")
    return files.ensure(ARCHIVE_FILE, model.url, sha256=model.sha256, verify=_verify_archive)
