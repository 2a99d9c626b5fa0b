"""What a legacy API was given -> the folder of a package `elmo_runtime` can open.

The shims accept, wherever their original took model files:

* any package form `elmo_runtime.Elmo` opens: a package folder, "default", a catalog name,
  `hf:owner/repo[@revision]`;
* the name of a model the exporter knows (`small`, `medium`, `original`, `original-5.5b`,
  `manylangs-xx`, `norelmo-NNN`): the catalog's package of that model, else exported once;
* AllenNLP's published URLs of the official models (the S3 options/weights URLs that
  `allennlp.commands.elmo.DEFAULT_*`, tutorials and Flair use): the same as the model's name;
* model files that are not a package yet (AllenNLP's `options.json` + `weights.hdf5`, a
  bilm-tf or ELMoForManyLangs folder, an NLPL ZIP): exported once into the cache, under
  `<cache>/compat/<sha256 of the files>-<precision>`, by running `elmo-export` in a child
  process (the runtime itself never imports torch or the exporter). Where the exporter is not
  installed, the error names the `elmo-export` command that makes the package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import posixpath
import re
import reprlib
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import urlsplit

from elmo_runtime import contract as C
from elmo_runtime.package import sha256_of

log = logging.getLogger(__name__)

# AllenNLP's folder and file stem of each official model -> the catalog's model name. The URLs
# are https://<host>/allennlp/models/elmo/<stem>/elmo_<stem>_{options.json,weights.hdf5} on
# either of AllenNLP's two S3 host names.
ALLENNLP_MODELS = {
    "2x1024_128_2048cnn_1xhighway": "small",
    "2x2048_256_2048cnn_1xhighway": "medium",
    "2x4096_512_2048cnn_2xhighway": "original",
    "2x4096_512_2048cnn_2xhighway_5.5B": "original-5.5b",
}
# Models the exporter fetches by name (models/catalog.json and models/archives.json).
EXPORTABLE_PREFIXES = ("manylangs-", "norelmo-")
_URL_FILE = re.compile(r"^elmo_(?P<stem>.+)_(?P<kind>options\.json|weights\.hdf5)$")
EXPORT_INSTALL = 'pip install torch==2.13.0 && pip install "elmo-onnx[export]"'
COMPAT_CACHE = "compat"


def is_url(text: str) -> bool:
    return urlsplit(text).scheme in ("http", "https", "s3")


def model_for_url(url: str) -> str:
    """The catalog's model name for one of AllenNLP's published ELMo URLs.

    Raises:
        ValueError: a URL that is not one of them (the known models and their URLs' form named).
    """
    path = urlsplit(url).path.rstrip("/")
    match = _URL_FILE.match(posixpath.basename(path))
    if match and posixpath.basename(posixpath.dirname(path)) == match["stem"] and match["stem"] in ALLENNLP_MODELS:
        return ALLENNLP_MODELS[match["stem"]]
    known = ", ".join(f"{name} ({stem})" for stem, name in ALLENNLP_MODELS.items())
    raise ValueError(
        f"unknown ELMo URL {url}: the URLs known are AllenNLP's official models {known}, as "
        ".../allennlp/models/elmo/<stem>/elmo_<stem>_options.json or _weights.hdf5; for another "
        "model pass its downloaded options.json and weights.hdf5, or a package"
    )


def pair_package(
    options_file: str | os.PathLike | None,
    weight_file: str | os.PathLike | None,
    *,
    precision: str = "fp32",
    state: str = C.WARM,
    default_weight_file: str | None = None,
) -> Path:
    """AllenNLP's `(options_file, weight_file)` -> a package folder.

    `options_file` may also be any model form `model_package` takes; `weight_file` is then
    None, AllenNLP's default (which a caller who passes only the first argument leaves), or the
    same (for callers such as Flair that need both set).
    `precision` and `state` are what an export makes (a warm package serves both states; a
    caller that only ever uses the zero state asks for "zero", which exports faster).

    Raises:
        ValueError: an unknown URL or name, or URLs of two different models.
        FileNotFoundError: a local file that does not exist (named).
        RuntimeError: the files need exporting and the exporter is not installed (the command
            that makes the package is named), or the export failed.
    """
    if options_file is None:
        raise ValueError(
            "options_file is None: pass AllenNLP's options.json and weights.hdf5 (files or URLs), "
            "or a package (a folder, a name such as 'original', or hf:owner/repo)"
        )
    options = os.fspath(options_file)
    weights = None if weight_file is None else os.fspath(weight_file)
    if is_url(options):
        model = model_for_url(options)
        if weights is not None and model_for_url(weights) != model:
            raise ValueError(
                f"options_file is AllenNLP's {model!r} model but weight_file is "
                f"{model_for_url(weights)!r} ({weights}); pass the pair of one model"
            )
        return model_package(model, precision=precision, state=state)
    options_path = Path(options).expanduser()
    if options_path.is_file() or options.endswith(".json"):
        if weights is None or is_url(weights):
            raise ValueError(
                f"options_file is the file {options} but weight_file is {weights!r}: pass the model's "
                "weights.hdf5 file beside it (or a package instead of both)"
            )
        return _files_package(options_path, Path(weights).expanduser(), precision, state)
    if weights not in (None, default_weight_file, options):
        raise ValueError(
            f"options_file {options!r} is not an options.json file, so it is taken as a package or "
            f"model, and weight_file ({weights}) must be left out (or be the same)"
        )
    return model_package(options, precision=precision, state=state)


def model_package(source: str | os.PathLike, *, precision: str = "fp32", state: str = C.WARM) -> Path:
    """A package form, a model name, or a model folder/ZIP -> a package folder.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unknown name (the accepted forms named).
        RuntimeError: see `pair_package`.
    """
    from elmo_runtime.fetch.catalog import SHIPPED_NAME
    from elmo_runtime.fetch.resolve import HUB_PREFIX, resolve_package

    text = os.fspath(source)
    path = Path(text).expanduser()
    shipped = isinstance(source, str) and text == SHIPPED_NAME  # never a folder of the cwd, as for Elmo()
    if shipped or (path.is_dir() and (path / C.MANIFEST_FILE).is_file()) or text.startswith(HUB_PREFIX):
        return resolve_package(source)
    if path.exists():
        if path.is_file() and path.suffix == ".json":
            raise ValueError(
                f"{path} is an options file: pass it with its weights file, as options_file and weight_file"
            )
        return _export_once([str(path)], _digest_of(path), precision, state, f"the model at {path}")
    if (
        not isinstance(source, str)
        or os.sep in text
        or text.startswith((".", "~"))
        or text.endswith((".json", ".hdf5", ".zip"))
    ):
        raise FileNotFoundError(f"model not found: there is no file or folder {text}")
    try:
        return resolve_package(text)
    except ValueError as unknown:
        entry = _catalog_entry_of_model(text, precision)
        if entry is not None:
            from elmo_runtime.fetch.resolve import fetch_catalog_package

            return fetch_catalog_package(entry)
        if text in ALLENNLP_MODELS.values() or text.startswith(EXPORTABLE_PREFIXES):
            return _export_once([text], text, precision, state, f"model {text!r}")
        raise ValueError(
            f"{unknown} Model names the exporter fetches: {', '.join(ALLENNLP_MODELS.values())}, "
            f"manylangs-<language>, norelmo-<id>."
        ) from None


def _catalog_entry_of_model(model: str, precision: str):
    from elmo_runtime.fetch.catalog import load_catalogs

    entries = [e for e in load_catalogs().values() if e.model == model and e.precision == precision]
    return entries[0] if entries else None


def _files_package(options: Path, weights: Path, precision: str, state: str) -> Path:
    for path, what in ((options, "options file"), (weights, "weight file")):
        if not path.is_file():
            raise FileNotFoundError(f"ELMo {what} not found: {path}")
    key = f"{sha256_of(weights)[:32]}-{sha256_of(options)[:8]}"
    return _export_once(
        ["--options", str(options), "--weights", str(weights)],
        key,
        precision,
        state,
        f"{options.name} + {weights.name}",
    )


def _digest_of(path: Path) -> str:
    """A file's sha256, or a folder's: the sha256 of its files' relative names and sha256s."""
    if path.is_file():
        return sha256_of(path)[:40]
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_of(file)}\n".encode())
    return digest.hexdigest()[:40]


def exporter_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("elmo_export", "torch", "onnx"))


def _export_once(source_args: list[str], key: str, precision: str, state: str, what: str) -> Path:
    """`<cache>/compat/<key>-<precision>[-zero]`, exported by `elmo-export` the first time.

    A warm package serves a caller of the zero state too, so one is used where it exists.
    """
    from elmo_runtime.fetch.download import cache_root

    C.check_state_mode(state)
    warm = cache_root() / COMPAT_CACHE / f"{key}-{precision}"
    out = warm if state == C.WARM else warm.with_name(f"{warm.name}-{state}")
    for existing in (warm, out):
        if (existing / C.MANIFEST_FILE).is_file():
            return existing
    command = [*source_args, "--quantize", precision] + ([] if state == C.WARM else ["--initial-state", state])
    if not exporter_installed():
        raise RuntimeError(
            f"{what} is not an elmo-onnx package yet, and exporting it needs the exporter (torch), which this "
            f"install lacks: run once `elmo-export {shlex.join(command)} -o PACKAGE` where it is installed "
            f"({EXPORT_INSTALL}), then pass PACKAGE instead"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # A warning, shown without any logging set up: the released models take minutes to download and export.
    log.warning(
        "%s is not an elmo-onnx package yet: exporting it once into %s (elmo-export %s)", what, out, shlex.join(command)
    )
    done = subprocess.run(
        [sys.executable, "-m", "elmo_export.cli", *command, "-o", str(out), "--no-progress", "-q"],
        capture_output=True,
        text=True,
    )
    if (out / C.MANIFEST_FILE).is_file():  # also when a concurrent process exported it first
        return out
    reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    raise RuntimeError(f"exporting {what} failed: {reason}")


def token_lists(batch: Iterable[Sequence[str]], what: str = "batch", original: str = "AllenNLP") -> list[list[str]]:
    """`batch` as a list of token lists; TypeError naming the sentence that is not one.

    The originals iterate whatever they get, so a sentence given as a str was embedded
    character by character without a word said; here it is an error that says how to split it.
    """
    if isinstance(batch, (str, bytes)):
        raise TypeError(
            f"{what} is a {type(batch).__name__}, not a list of tokenized sentences: pass "
            f"[{batch[:30]!r}.split()] ({original} would have embedded it character by character)"
        )
    sentences = []
    for i, sentence in enumerate(batch):
        if isinstance(sentence, str):
            raise TypeError(
                f"sentence {i} is a str, not a list of tokens: pass s.split() for s = "
                f"{reprlib.repr(sentence)} ({original} would have embedded its characters one by one; "
                "list(s) does that on purpose)"
            )
        if not isinstance(sentence, (list, tuple)):
            raise TypeError(
                f"sentence {i} is {type(sentence).__name__} {reprlib.repr(sentence)}; expected a list of token strings"
            )
        bad = next((j for j, token in enumerate(sentence) if not isinstance(token, str)), None)
        if bad is not None:
            raise TypeError(
                f"sentence {i}, token {bad} is {type(sentence[bad]).__name__} "
                f"{reprlib.repr(sentence[bad])}; tokens must be str"
            )
        sentences.append(list(sentence))
    return sentences
