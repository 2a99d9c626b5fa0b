"""Model directories and ZIP archives of every family -> `export_reference`'s loader.

The NLPL vector repository serves two kinds of ELMo ZIPs:

- bilm-tf format (LTG's own models, read by `simple_elmo`): `options.json` and `model.hdf5` at
  the root, optionally `vocab.txt` (the LM's output vocabulary: not needed for embeddings) and
  NLPL's `meta.json` (recorded in the manifest: some models were trained on lemmas);
- ELMoForManyLangs (entries 136-179): a HIT model directory (`elmo_export.manylangs`).

A ZIP is extracted into a temporary directory (its names sanitised by `zipfile`) that lives as
long as the export; the manifest records the archive's sha256.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Callable, Iterator

from elmo_export.export import ExportSettings, bilm_tf_loader, export_reference
from elmo_export.manylangs import is_manylangs_dir, load_manylangs
from elmo_export.model import ElmoBiLm
from elmo_runtime.package import sha256_of

log = logging.getLogger(__name__)

Loader = Callable[[], tuple[ElmoBiLm, dict]]
OPTIONS_FILE = "options.json"
NLPL_META = "meta.json"


def is_archive(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and zipfile.is_zipfile(p)


def bilm_tf_files(directory: Path) -> tuple[Path, Path] | None:
    """`options.json` and the weights of a bilm-tf model directory, or None if it is not one.

    The weights: `model.hdf5` (NLPL's name), else the only `*.hdf5`, else the only `*weights.hdf5`.

    Raises:
        ValueError: options.json is there but not exactly one weights file (what was found is listed).
    """
    if not (directory / OPTIONS_FILE).is_file():
        return None
    if (directory / "model.hdf5").is_file():
        return directory / OPTIONS_FILE, directory / "model.hdf5"
    weights = sorted(p for p in directory.glob("*.hdf5") if p.is_file())
    if len(weights) > 1:
        named = [p for p in weights if p.name.endswith("weights.hdf5")]
        weights = named if len(named) == 1 else weights
    if len(weights) != 1:
        found = ", ".join(sorted(p.name for p in directory.iterdir()))
        raise ValueError(f"{directory}: expected one weights .hdf5 beside {OPTIONS_FILE}, found {len(weights)} "
                         f"(all files: {found})")
    return directory / OPTIONS_FILE, weights[0]


def _model_root(directory: Path) -> Path:
    """The directory holding the model: the archive's root, or its only subdirectory."""
    entries = [p for p in directory.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return directory


def loader_for_directory(directory: str | Path) -> Loader | None:
    """The loader of a model directory of any family, or None if it is neither family's."""
    d = Path(directory)
    if is_manylangs_dir(d):
        return lambda: load_manylangs(d)
    files = bilm_tf_files(d)
    if files is None:
        return None
    load = bilm_tf_loader(*files)
    meta = d / NLPL_META

    def load_with_meta() -> tuple[ElmoBiLm, dict]:
        model, source = load()
        if meta.is_file():
            try:
                source["meta"] = json.loads(meta.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                log.warning("%s: not valid JSON; not recorded", meta)
        return model, source

    return load_with_meta


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
        raise ValueError(f"{path}: its model files would take {total} bytes unpacked ({biggest.filename!r} alone "
                         f"{biggest.file_size}), more than {EXTRACT_RATIO} times the archive; refusing to extract it")
    skipped = len(archive.infolist()) - len(wanted)
    if skipped:
        log.info("%s: %d member(s) no loader reads were not extracted", path, skipped)
    for info in wanted:
        archive.extract(info, into)


@contextlib.contextmanager
def archive_loader(path: str | Path) -> Iterator[Loader]:
    """Extract a model ZIP into a temporary directory and yield its loader (valid inside the block).

    Raises:
        ValueError: the ZIP holds neither family's files (its names are listed), or is corrupt.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="elmo-export-zip-") as tmp:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                _extract_model_files(archive, path, Path(tmp))
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ValueError(f"{path}: not a readable ZIP archive ({e})") from None
        root = _model_root(Path(tmp))
        load = loader_for_directory(root)
        if load is None:
            raise ValueError(
                f"{path}: holds neither a bilm-tf model ({OPTIONS_FILE} + model.hdf5) nor an ELMoForManyLangs "
                f"model (config.json, char.dic, word.dic, token_embedder.pkl, encoder.pkl); it holds: "
                f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
        digest = sha256_of(path)

        def load_with_archive() -> tuple[ElmoBiLm, dict]:
            model, source = load()
            source["archive"] = {"file": path.name, "sha256": digest}
            return model, source

        yield load_with_archive


def is_other_family(model: str | Path) -> bool:
    """Whether `elmo-export MODEL` is for this module: a model ZIP (NLPL's bilm-tf or
    ELMoForManyLangs), an ELMoForManyLangs directory, or the name of a model served as a ZIP
    (`models/archives.json`)."""
    from elmo_export.archive_catalog import find_archive

    path = Path(model)
    if path.exists():
        return is_archive(path) or (path.is_dir() and is_manylangs_dir(path))
    return find_archive(str(model)) is not None


def export_other_family(model: str | Path, out_dir: str | Path, settings: ExportSettings, *,
                        stop: threading.Event | None = None) -> Path:
    """Export what `is_other_family` accepts; a name is downloaded once into the cache first.

    `settings` and `stop` as for `export.export_package`.
    """
    from elmo_export.archive_catalog import fetch_archive

    path = Path(model)
    if not path.exists():
        log.info("fetching %s (downloaded once into the cache)", model)
        path = fetch_archive(str(model), progress=settings.progress)
    if is_archive(path):
        with archive_loader(path) as load:
            return export_reference(load, out_dir, settings, stop=stop)
    load = loader_for_directory(path)
    if load is None:
        raise ValueError(f"{path} is neither a bilm-tf nor an ELMoForManyLangs model directory")
    return export_reference(load, out_dir, settings, stop=stop)
