"""What every model source shares: the `Loader` a source resolves to, its error, the models folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from elmo_export.model import ElmoBiLm

log = logging.getLogger(__name__)

# The project's models/ folder (the catalogs and the shipped default model), first hit wins: an
# installed wheel puts it at elmo_export/models, a checkout has it beside the package.
MODELS_DIRS = (Path(__file__).resolve().parents[1] / "models", Path(__file__).resolve().parents[2] / "models")
NLPL_META = "meta.json"  # the NLPL repository's description of a model, recorded in the manifest


class ModelSourceError(ValueError):
    """No usable model where one was named (the message says what was found and what to pass)."""


@dataclass(frozen=True)
class Loader:
    """A model source, resolved: calling it builds the reference biLM, in eval mode, and the
    manifest's `source` entry (file names, sha256s, NLPL's `meta.json`).

    It runs after the export has checked its output, so that a bad output fails before any slow
    step; it checks the source's shapes against its options (and those against
    `ElmoOptions.check`'s bounds) before it allocates a model.

    Attributes:
        load: the call itself.
        description: what the source is, for messages.
        files: `(options.json, weights .hdf5)` of a bilm-tf source on disk, else None.
        license: the licence of the weights as a catalog states it (an SPDX id), else None.
        license_url: where that licence is stated.
        folder: a model folder of the user's, where a `LICENSE*` file may say the licence.
    """

    load: Callable[[], tuple[ElmoBiLm, dict]]
    description: str
    files: tuple[Path, Path] | None = None
    license: str | None = None
    license_url: str | None = None
    folder: Path | None = None

    def __call__(self) -> tuple[ElmoBiLm, dict]:
        return self.load()


def models_file(name: str, what: str) -> Path:
    """The file `name` of the project's models/ folder (`MODELS_DIRS`, first hit wins).

    Raises:
        FileNotFoundError: neither location holds it (both are named).
    """
    candidates = [directory / name for directory in MODELS_DIRS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the {what} is missing: looked for "
        + " and ".join(str(c) for c in candidates)
        + " (a broken install? reinstall elmo-onnx)"
    )


def listing(directory: Path) -> str:
    """The names in `directory`, for messages."""
    found = sorted(p.name for p in directory.iterdir())
    return ", ".join(found) if found else "nothing"


def read_nlpl_meta(directory: Path) -> object | None:
    """NLPL's `meta.json` of a model folder (some models were trained on lemmas: it says so), or
    None where there is none; a file that is not JSON is warned about and left out."""
    path = directory / NLPL_META
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        log.warning("%s: not valid JSON; not recorded", path)
        return None
