"""bilm-tf models: `options.json` + a weights `.hdf5` (the official TF layout), as files or a folder.

The official models, the project's default model, the models a user trains with bilm-tf and
NLPL's bilm-tf ZIPs (read by simple_elmo) all come in this layout; `weights.load_reference`
reads it.
"""

from __future__ import annotations

from pathlib import Path

from elmo_export.sources.base import Loader, ModelSourceError, listing, read_nlpl_meta
from elmo_runtime import contract as C
from elmo_runtime.package import sha256_of

FAMILY = "bilm-tf"
NLPL_WEIGHTS = "model.hdf5"  # the weights' name in NLPL's ZIPs


def is_model_dir(directory: Path) -> bool:
    """Whether `directory` holds a bilm-tf model (its `options.json`)."""
    return (directory / C.OPTIONS_FILE).is_file()


def model_files(directory: Path) -> tuple[Path, Path]:
    """`options.json` and the weights of a bilm-tf model directory.

    The weights are `model.hdf5` (NLPL's name), else the directory's only `*.hdf5`, or, where
    there are several (a training run also writes `softmax.hdf5`), the only `*weights.hdf5`.

    Raises:
        ModelSourceError: no options.json, or not exactly one weights file (what was found is listed).
    """
    if not is_model_dir(directory):
        raise ModelSourceError(f"model directory {directory} has no {C.OPTIONS_FILE} (found: {listing(directory)})")
    if (directory / NLPL_WEIGHTS).is_file():
        return directory / C.OPTIONS_FILE, directory / NLPL_WEIGHTS
    weights = sorted(p for p in directory.glob("*.hdf5") if p.is_file())
    if len(weights) > 1:
        named = [p for p in weights if p.name.endswith("weights.hdf5")]
        weights = named if len(named) == 1 else weights
    if len(weights) != 1:
        what = "no .hdf5 file" if not weights else f"{len(weights)} .hdf5 files ({', '.join(p.name for p in weights)})"
        raise ModelSourceError(
            f"model directory {directory} must hold exactly one weights .hdf5 file, found {what} "
            f"(all files: {listing(directory)}); name the files with --options FILE --weights FILE"
        )
    return directory / C.OPTIONS_FILE, weights[0]


def files_loader(
    options: str | Path,
    weights: str | Path,
    description: str | None = None,
    folder: Path | None = None,
    license: str | None = None,
    license_url: str | None = None,
) -> Loader:
    """The loader of an `options.json` + weights pair; `folder`: the model folder they came from,
    whose NLPL `meta.json` (if any) is recorded; `license`: as a catalog states it (`Loader`)."""
    options_path, weights_path = Path(options), Path(weights)

    def load():
        from elmo_export.weights import load_reference  # imported here: it pulls in torch and h5py

        model = load_reference(options_path, weights_path)  # first: its errors name a missing file
        source = {
            "options_file": options_path.name,
            "options_sha256": sha256_of(options_path),
            "weights_file": weights_path.name,
            "weights_sha256": sha256_of(weights_path),
        }
        meta = read_nlpl_meta(folder) if folder is not None else None
        if meta is not None:
            source["meta"] = meta
        return model, source

    return Loader(
        load,
        description or f"{options_path} + {weights_path}",
        (options_path, weights_path),
        license,
        license_url,
        folder if folder is not None else options_path.parent,
    )


def directory_loader(directory: Path) -> Loader:
    """The loader of a bilm-tf model directory (`model_files`)."""
    return files_loader(*model_files(directory), description=f"the model directory {directory}", folder=directory)
