"""Models served as one ZIP archive: NLPL's ZIPs of both families, by file or by name.

The NLPL vector repository serves two kinds of ELMo ZIPs:

- bilm-tf format (LTG's own models, read by `simple_elmo`): `options.json` and `model.hdf5` at
  the root, optionally `vocab.txt` (the LM's output vocabulary: not needed for embeddings) and
  NLPL's `meta.json` (recorded in the manifest: some models were trained on lemmas);
- ELMoForManyLangs (entries 136-179): a HIT model directory (`manylangs`).

By name: `models/archives.json`, checked on load by the same schema as the official catalog
(`schema`), names ELMoForManyLangs' 44 languages and NLPL's NorELMo: the NLPL repository ZIP,
the language, the tokenization the model expects and the licence as the publishers state it. No
digest is pinned (none could be computed where the catalog was written): a download is checked
by opening it as a model archive, and its sha256 is recorded in the cache and in every package
exported from it. A named archive is downloaded once into the cache (`official`'s folder and
rules, offline mode included).

A ZIP is extracted into a temporary directory (its names sanitised by `zipfile`) for as long as
its loader runs; the manifest records the archive's sha256.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import elmo_export.sources.bilm_tf as bilm_tf
import elmo_export.sources.manylangs as manylangs
from elmo_export.sources.base import Loader, models_file
from elmo_export.sources.official import model_files
from elmo_export.sources.schema import parse_models
from elmo_runtime.jsonfile import read_json
from elmo_runtime.package import sha256_of

log = logging.getLogger(__name__)

ARCHIVES_FILENAME = "archives.json"
ARCHIVE_FILE = "model.zip"
FAMILIES = (manylangs.FAMILY, bilm_tf.FAMILY)


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
    """`models/archives.json` (`base.MODELS_DIRS`). Raises FileNotFoundError naming where it looked."""
    return models_file(ARCHIVES_FILENAME, "archive catalog")


def load_archives(path: str | Path | None = None) -> dict[str, ArchiveModel]:
    """Read and check an archive catalog: the shipped `models/archives.json` when `path` is None.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or an entry that does not fit the schema (naming the file, model and field).
    """
    path = archives_path() if path is None else Path(path)
    return parse_models(read_json(path, "archive catalog"), ArchiveModel, str(path))


def find_archive(name: str, archives: Mapping[str, ArchiveModel] | None = None) -> ArchiveModel | None:
    """The entry called `name`, or None if there is none.

    Raises:
        FileNotFoundError, ValueError: the shipped catalog is missing or broken (`load_archives`).
    """
    archives = load_archives() if archives is None else archives
    return archives.get(name)


def _verify_archive(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a ZIP archive")
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    if bad is not None:
        raise ValueError(f"{path}: member {bad!r} is corrupt")


def fetch_archive(
    model: str | ArchiveModel,
    cache_dir: str | Path | None = None,
    *,
    progress: bool = True,
    force: bool = False,
    offline: bool | None = None,
    retries: int = 3,
    timeout_s: float = 60.0,
) -> Path:
    """Make sure a model's ZIP is in the cache (`<cache>/<name>/model.zip`), verified; download it if not.

    The arguments and errors are `official.fetch_model`'s.
    """
    if isinstance(model, str):
        found = find_archive(model)
        if found is None:
            raise ValueError(f"unknown archive model {model!r}")
        model = found
    fetching = {"offline": offline, "force": force, "progress": progress, "retries": retries, "timeout_s": timeout_s}
    hint = f"To use a ZIP you already have, pass it instead: elmo-export path/to/{model.nlpl_id}.zip"
    files = model_files(
        model.name, cache_dir, hint, lambda d: f"Delete it (or the folder {d}) and fetch again.", fetching
    )
    return files.ensure(ARCHIVE_FILE, model.url, sha256=model.sha256, verify=_verify_archive)


def is_archive(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and zipfile.is_zipfile(p)


def _model_root(directory: Path) -> Path:
    """The directory holding the model: the archive's root, or its only subdirectory."""
    entries = [p for p in directory.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return directory


def directory_loader(directory: Path) -> Loader | None:
    """The loader of a model directory of either family, or None if it is neither's."""
    if manylangs.is_manylangs_dir(directory):
        return manylangs.directory_loader(directory)
    if bilm_tf.is_model_dir(directory):
        return bilm_tf.directory_loader(directory)
    return None


# What a model ZIP of either family holds that a loader reads: options and architecture JSON,
# HDF5 weights, ELMoForManyLangs' pickles and dictionaries, NLPL's vocabulary. Nothing else is
# extracted: an archive's other members cost no disk.
MODEL_SUFFIXES = (".json", ".hdf5", ".h5", ".pkl", ".dic", ".txt")
# Weights are floats, which deflate barely shrinks: a model's files are at most a few times its
# ZIP. More than this would be a member built to fill the disk (a ZIP bomb).
EXTRACT_RATIO, EXTRACT_SLACK = 4, 64 << 20


def _extract_model_files(archive: zipfile.ZipFile, path: Path, into: Path) -> None:
    """Extract the members a loader may read, within `EXTRACT_RATIO` times the ZIP's size.

    zipfile drops absolute paths and '..' components; each member's declared size is checked
    before anything is written (zipfile stops a member at its declared size).
    """
    wanted = [i for i in archive.infolist() if not i.is_dir() and i.filename.lower().endswith(MODEL_SUFFIXES)]
    budget = EXTRACT_RATIO * path.stat().st_size + EXTRACT_SLACK
    total = sum(i.file_size for i in wanted)
    if total > budget:
        biggest = max(wanted, key=lambda i: i.file_size)
        raise ValueError(
            f"{path}: its model files would take {total} bytes unpacked ({biggest.filename!r} alone "
            f"{biggest.file_size}), more than {EXTRACT_RATIO} times the archive; refusing to extract it"
        )
    skipped = len(archive.infolist()) - len(wanted)
    if skipped:
        log.info("%s: %d member(s) no loader reads were not extracted", path, skipped)
    for info in wanted:
        archive.extract(info, into)


def archive_loader(path: str | Path) -> Loader:
    """The loader of a model ZIP of either family: it extracts the ZIP into a temporary directory,
    loads the model from there and removes the directory.

    The loader raises ValueError where the ZIP is corrupt or holds neither family's files (its
    names are listed).
    """
    path = Path(path)

    def load():
        with tempfile.TemporaryDirectory(prefix="elmo-export-zip-") as tmp:
            try:
                with zipfile.ZipFile(path) as archive:
                    names = archive.namelist()
                    _extract_model_files(archive, path, Path(tmp))
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise ValueError(f"{path}: not a readable ZIP archive ({e})") from None
            inner = directory_loader(_model_root(Path(tmp)))
            if inner is None:
                raise ValueError(
                    f"{path}: holds neither a bilm-tf model (options.json + model.hdf5) nor an ELMoForManyLangs "
                    f"model (config.json, char.dic, word.dic, token_embedder.pkl, encoder.pkl); it holds: "
                    f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}"
                )
            model, source = inner()
        source["archive"] = {"file": path.name, "sha256": sha256_of(path)}
        return model, source

    return Loader(load, f"the model archive {path}")
