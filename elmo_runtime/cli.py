"""`elmo-embed`: embed a text file, one sentence per line, into HDF5 (AllenNLP's layout) or NPZ.

    elmo-embed PACKAGE INPUT OUTPUT [--all|--top|--average] [--batch-size N] [--device ...]

The output reads like the one AllenNLP's `allennlp elmo` command writes, so downstream
scripts read it unchanged: one float32 dataset per input line, keyed by its 0-based line
number as a string ("0", "1", ...), shaped `(L + 1, T, dim)` with --all and `(T, dim)` with
--top or --average; and a dataset `sentence_to_index` of shape (1,) holding one string, the
JSON of {sentence text: key} (the text is the line stripped of surrounding whitespace; a
sentence repeated maps to its last line, as in AllenNLP). With --format npz the same keys are
`.npy` members of a zip file and `sentence_to_index` is a 0-d unicode array.

The input is streamed: memory follows the batch budget, not the file (only the
`sentence_to_index` texts are kept; --forget-sentences drops them). Output goes to a temporary
file beside OUTPUT, renamed to OUTPUT only once complete, so a crash never leaves a truncated
OUTPUT.

Input rules: UTF-8 (a BOM is allowed); lines end with "\\n" (a "\\r" before it is dropped).
An empty or blank line, or one that has no tokens, is an error naming the line, as in
AllenNLP, unless --allow-empty-lines embeds it as a 0-token dataset. An empty file is an
error. Without --tokenized each line is raw text, tokenized by `elmo_runtime.tokenize`; with
it, tokens are the line's whitespace-separated words (`str.split()`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import zipfile
from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np

from elmo_runtime.embedder import Elmo
from elmo_runtime.runner import DEVICES
from elmo_runtime.tokenize import tokenize

log = logging.getLogger(__name__)

FORMATS = ("hdf5", "npz")
OUTPUT_LAYERS = ("all", "top", "average")
SENTENCE_TO_INDEX = "sentence_to_index"


class InputFileError(ValueError):
    """An input file that cannot be embedded; the message names the file and line."""


def embed_file(package: str | Path | Elmo, input: str | Path, output: str | Path, *, layers: str = "all",
               format: str = "hdf5", tokenized: bool = False, batch_tokens: int | None = None,
               batch_size: int | None = None, device: str = "auto", threads: int | None = None,
               state: str | None = None, force: bool = False, allow_empty_lines: bool = False,
               forget_sentences: bool = False, progress: bool | None = None) -> int:
    """Embed every line of `input` into `output`; what `elmo-embed` runs.

    Args:
        package: a package directory, or an `Elmo` to reuse (then device/threads are ignored).
        input: a UTF-8 text file, one sentence per line ("-": standard input).
        output: the HDF5 or NPZ file to write.
        layers: "all" -> `(L + 1, T, dim)` per sentence; "top" or "average" -> `(T, dim)`.
        format: "hdf5" (AllenNLP's layout) or "npz".
        tokenized: lines are already tokenized (split on whitespace) instead of raw text.
        batch_tokens, batch_size, state: as for `Elmo.embed` (None: the defaults there).
        device, threads: as for `Elmo`.
        force: overwrite an existing `output`.
        allow_empty_lines: embed empty lines as 0 tokens instead of refusing them.
        forget_sentences: leave out `sentence_to_index` (AllenNLP's --forget-sentences).
        progress: show a progress bar on stderr (None: only when stderr is a terminal).

    Returns:
        The number of sentences written.

    Raises:
        FileNotFoundError: no such input file, package or output directory.
        FileExistsError: `output` exists and `force` is False.
        InputFileError: invalid UTF-8, an empty line (unless allowed) or an empty file; the
            message names the line. No output is left behind.
        ValueError, TypeError, PackageError: bad settings or package (see `Elmo`).
    """
    if layers not in OUTPUT_LAYERS:
        raise ValueError(f"layers is {layers!r}; choose one of {', '.join(OUTPUT_LAYERS)}")
    if format not in FORMATS:
        raise ValueError(f"format is {format!r}; choose one of {', '.join(FORMATS)}")
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(f"output {output} is a directory; give a file name")
    if output.exists() and not force:
        raise FileExistsError(f"output {output} exists; pass --force (force=True) to overwrite it")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output directory {output.parent} does not exist")
    if str(input) != "-" and not Path(input).is_file():
        raise FileNotFoundError(f"input file not found: {input}")
    elmo = package if isinstance(package, Elmo) else Elmo(package, device=device, threads=threads)

    texts: deque[str] = deque()  # sentences read but not yet written, oldest first

    def sentences() -> Iterator[list[str]]:
        for number, text in _read_lines(input):
            tokens = text.split() if tokenized else tokenize(text)
            if not tokens and not allow_empty_lines:
                what = "is empty" if not text else "has no tokens"
                raise InputFileError(f"{input}:{number}: line {what}; remove it or pass --allow-empty-lines "
                                     "(allow_empty_lines=True) to embed it as 0 tokens")
            texts.append(text)
            yield tokens

    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    count = 0
    try:
        writer = (_Hdf5Writer if format == "hdf5" else _NpzWriter)(tmp)
        try:
            sentence_to_index: dict[str, str] = {}
            with _progress_bar(input, progress) as bar:
                for vectors in elmo.embed_iter(sentences(), layers=layers, state=state,
                                               batch_tokens=batch_tokens, batch_size=batch_size):
                    key = str(count)
                    writer.add(key, vectors)
                    text = texts.popleft()
                    if not forget_sentences:
                        sentence_to_index[text] = key
                    count += 1
                    bar.update(1)
            if count == 0:
                raise InputFileError(f"{input} is empty: there are no sentences to embed")
            if not forget_sentences:
                writer.add_sentence_to_index(json.dumps(sentence_to_index))
        finally:
            writer.close()
        if output.exists() and not force:  # appeared while we worked
            raise FileExistsError(f"output {output} exists; pass --force (force=True) to overwrite it")
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %d sentences to %s", count, output)
    return count


def _read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """`(line number from 1, text stripped of surrounding whitespace)`, decoding strictly."""
    stream = sys.stdin.buffer if str(path) == "-" else open(path, "rb")
    try:
        for number, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputFileError(
                    f"{path}:{number}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} at column {e.start + 1})"
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            yield number, line.strip()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _progress_bar(path: str | Path, enabled: bool | None):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    total = None
    if enabled and str(path) != "-":
        with open(path, "rb") as f:  # counting lines is cheap next to embedding them
            total, last = 0, b"\n"
            for block in iter(lambda: f.read(1 << 20), b""):
                total += block.count(b"\n")
                last = block[-1:]
            total += last != b"\n"
    return tqdm(total=total, unit=" sentences", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


class _Hdf5Writer:
    def __init__(self, path: Path):
        import h5py

        self._h5py = h5py
        self._file = h5py.File(path, "w")

    def add(self, key: str, array: np.ndarray) -> None:
        self._file.create_dataset(key, array.shape, dtype="float32", data=array)

    def add_sentence_to_index(self, text: str) -> None:
        # AllenNLP: a (1,) dataset of variable-length str holding json.dumps(sentence_to_index).
        dataset = self._file.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=self._h5py.special_dtype(vlen=str))
        dataset[0] = text

    def close(self) -> None:
        self._file.close()


class _NpzWriter:
    """`numpy.savez` layout, written one member at a time."""

    def __init__(self, path: Path):
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add(self, key: str, array: np.ndarray) -> None:
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, array, allow_pickle=False)

    def add_sentence_to_index(self, text: str) -> None:
        self.add(SENTENCE_TO_INDEX, np.array(text))  # 0-d unicode: loads without pickle

    def close(self) -> None:
        self._zip.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elmo-embed",
        description="Embed a text file (one sentence per line) with an ELMo package into HDF5 "
                    "(AllenNLP's `elmo` command layout) or NPZ.",
    )
    parser.add_argument("package", help="model package directory (written by elmo-export)")
    parser.add_argument("input", help="UTF-8 text file, one sentence per line ('-': standard input)")
    parser.add_argument("output", help="HDF5 (or --format npz) file to write")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", dest="layers", action="store_const", const="all",
                       help="all layers, (L+1, T, dim) per sentence (default)")
    which.add_argument("--top", dest="layers", action="store_const", const="top",
                       help="the top layer, (T, dim)")
    which.add_argument("--average", dest="layers", action="store_const", const="average",
                       help="the mean of all layers, (T, dim)")
    parser.set_defaults(layers="all")
    parser.add_argument("--format", choices=FORMATS, default="hdf5", help="output format (default hdf5)")
    parser.add_argument("--tokenized", action="store_true",
                        help="lines are tokenized already: split on whitespace, not tokenized")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="at most N sentences per batch (default: only the token budget limits)")
    parser.add_argument("--batch-tokens", type=int, default=None, metavar="N",
                        help="token positions per batch, padding included (default 512 on CPU, 4096 on CUDA)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default auto: CUDA if usable, else CPU")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads per session")
    parser.add_argument("--state", choices=("warm", "zero"), default=None,
                        help="initial LSTM state of every sentence (default: the package's)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    parser.add_argument("--allow-empty-lines", action="store_true",
                        help="embed empty lines as 0 tokens instead of refusing them")
    parser.add_argument("--forget-sentences", action="store_true",
                        help="do not write the sentence_to_index dataset")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (it shows only on a terminal anyway)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    quiet = args.pop("quiet")
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="elmo-embed: %(message)s")
    try:
        embed_file(**args)
    except KeyboardInterrupt:
        print("elmo-embed: interrupted; no output written", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        print(f"elmo-embed: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
