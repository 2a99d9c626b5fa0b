"""Embed a text file, one sentence per line, into HDF5 (AllenNLP's layout), NPZ or Parquet: `embed_file`.

`elmo-embed` is its command line. The output reads like the one AllenNLP's `allennlp elmo`
command writes, so downstream scripts read it unchanged: one float32 dataset per input line,
keyed by its 0-based line number as a string ("0", "1", ...), shaped `(L + 1, T, dim)` with
layers="all" and `(T, dim)` with "top" or "average"; and a dataset `sentence_to_index` of shape
(1,) holding one string, the JSON of {sentence text: key} (the text is the line stripped of
surrounding whitespace; a sentence repeated maps to its last line, as in AllenNLP). In NPZ the
same keys are `.npy` members of a zip file and `sentence_to_index` is a 0-d unicode array.
Parquet (the `parquet` extra) has one row per line: `id` (the line number), `tokens` and
`vectors` (`elmo_runtime.corpus.table`'s layout, the one `--engine ray` writes), no `sentence_to_index`.

Compact outputs: dtype="float16" stores every vector in half the bytes; pool="mean" stores one
vector per sentence (the mean over its tokens), `(dim,)` or `(L + 1, dim)` with layers="all".

The input is streamed: memory follows the batch budget, not the file (only the
`sentence_to_index` texts are kept; forget_sentences drops them). Output goes to a temporary
file beside the output (`.OUTPUT.<pid>.<random>.tmp`), renamed onto it only once complete, so a
crash never leaves a truncated output; such files left by killed runs are removed.

Input rules: UTF-8 (a BOM is allowed); lines end with "\\n" (a "\\r" before it is dropped).
An empty or blank line, or one that has no tokens, is an error naming the line, as in
AllenNLP, unless allow_empty_lines embeds it as a 0-token dataset. An empty file is an
error. Unless `tokenized`, each line is raw text, tokenized by the `Elmo`'s tokenizer
(`elmo_runtime.tokenize`, unless the package expects pre-tokenized input: then `tokenized` is
required); tokenized lines are split on whitespace (`str.split()`).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import threading
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from elmo_runtime import scratch
from elmo_runtime.corpus.lines import InputError, count_lines, line_tokens, progress_bar, read_lines
from elmo_runtime.corpus.npz import NpzWriter
from elmo_runtime.corpus.table import DTYPES
from elmo_runtime.embedder import Elmo

log = logging.getLogger(__name__)

FORMATS = ("hdf5", "npz", "parquet")
OUTPUT_LAYERS = ("all", "top", "average")
SENTENCE_TO_INDEX = "sentence_to_index"
TMP_SUFFIX = ".tmp"


def embed_file(
    package: str | Path | Elmo,
    input: str | Path,
    output: str | Path,
    *,
    layers: str = "all",
    format: str = "hdf5",
    tokenized: bool = False,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    state: str | None = None,
    force: bool = False,
    allow_empty_lines: bool = False,
    forget_sentences: bool = False,
    progress: bool | None = None,
    pool: str | None = None,
    dtype: str = "float32",
    verify: bool = True,
    stop: threading.Event | None = None,
) -> int:
    """Embed every line of `input` into `output`; what `elmo-embed` runs (see the module docstring).

    Args:
        package: a package folder or name (see `Elmo`), or an `Elmo` to reuse (device/threads ignored).
        input: a UTF-8 text file or a pipe, one sentence per line ("-": standard input).
        output: the file to write, not "-"; a replaced file keeps its mode, a new one gets the umask's.
        layers: "all" -> `(L + 1, T, dim)` per sentence; "top" or "average" -> `(T, dim)`.
        format, pool, dtype: "hdf5", "npz" or "parquet"; None or "mean"; "float32" or "float16".
        tokenized, allow_empty_lines: lines are whitespace-split tokens; embed empty lines as 0 tokens.
        batch_tokens, batch_size, state, device, threads, verify: as for `Elmo` and `Elmo.embed`.
        force: overwrite an existing `output` (only a regular file or a symlink, never the input).
        forget_sentences: leave out `sentence_to_index` (AllenNLP's --forget-sentences).
        progress, stop: a bar on stderr (None: on a terminal); an event that interrupts the run.

    Returns:
        The number of sentences written.

    Raises:
        FileNotFoundError: no such input file, package or output directory.
        FileExistsError: `output` exists and not `force`; or it is the input or not a regular file.
        InputError: bad UTF-8, an empty line (unless allowed) or file; names the line, writes nothing.
        ValueError, TypeError, PackageError: bad settings or package (see `Elmo`).
    """
    replaced_mode = _check_arguments(input, output, layers, format, force)
    elmo, split = _open_model(package, format, dtype, tokenized, device, threads, verify)
    lines = _Sentences(input, split, allow_empty_lines)
    options = {"layers": layers, "pool": pool, "state": state, "batch_tokens": batch_tokens, "batch_size": batch_size}
    with (
        _replacing(Path(output), input, force, replaced_mode) as tmp,
        _writer(format, tmp, elmo, layers, pool, dtype) as writer,
    ):
        keep_texts = not forget_sentences and format != "parquet"
        count = _embed_into(writer, elmo, lines, options, input, progress, stop, keep_texts, forget_sentences)
    log.info("wrote %d sentences to %s", count, output)
    return count


def _open_model(
    package: str | Path | Elmo, format: str, dtype: str, tokenized: bool, device: str, threads: int | None, verify: bool
) -> tuple[Elmo, Callable]:
    """Check `dtype` and the format's extra, then load the model: -> it and the line splitter."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype is {dtype!r}; choose one of {', '.join(DTYPES)}")
    if format == "parquet":
        from elmo_runtime.corpus.table import require_pyarrow

        require_pyarrow()
    elif format == "hdf5":
        _require_h5py()
    elmo = package if isinstance(package, Elmo) else Elmo(package, device=device, threads=threads, verify=verify)
    split = str.split if tokenized else elmo.tokenizer
    if split is None:
        raise ValueError(
            f"{elmo.manifest.directory}: this package's model expects pre-tokenized input "
            "(ELMoForManyLangs: Universal Dependencies tokens); write one sentence per line with its "
            "tokens separated by spaces and pass --tokenized (tokenized=True)"
        )
    return elmo, split


def _embed_into(
    writer,
    elmo: Elmo,
    lines: _Sentences,
    options: dict,
    input: str | Path,
    progress: bool | None,
    stop: threading.Event | None,
    keep_texts: bool,
    forget_sentences: bool,
) -> int:
    """Embed `lines` into an open writer: -> the number of sentences (none is an InputError)."""
    with _progress_bar(input, progress) as bar:
        vectors = elmo.embed_iter(lines, return_tokens=True, **options)
        count, sentence_to_index = _write_vectors(writer, vectors, lines.texts, keep_texts, bar, stop)
    if count == 0:
        raise InputError(f"{input} is empty: there are no sentences to embed")
    if not forget_sentences:
        writer.add_sentence_to_index(json.dumps(sentence_to_index))
    return count


def _check_arguments(input: str | Path, output: str | Path, layers: str, format: str, force: bool) -> int | None:
    """Refuse bad settings and unusable files before any slow work; the mode of a file `force` replaces."""
    if layers not in OUTPUT_LAYERS:
        raise ValueError(f"layers is {layers!r}; choose one of {', '.join(OUTPUT_LAYERS)}")
    if format not in FORMATS:
        raise ValueError(f"format is {format!r}; choose one of {', '.join(FORMATS)}")
    _check_input(input)
    return _check_output(Path(output), input, force)


def _require_h5py() -> None:
    """HDF5 output needs h5py, an extra: 16 MiB that an app embedding through the API never uses."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        raise ImportError("HDF5 output needs h5py: pip install 'elmo-onnx[hdf5]' (or choose --format npz)") from None


def _check_input(input: str | Path) -> None:
    """Refuse an input that is missing, a directory or a device (a pipe, `<(zcat f.gz)`, is fine)."""
    if str(input) == "-":
        return
    try:
        mode = os.stat(input).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"input file not found: {input}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"input {input} is a directory; give a text file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise InputError(f"input {input} is {_kind(mode)}, not a text file or a pipe")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _is_input(input: str | Path, output: Path) -> bool:
    """Whether `output` is the input file; for `-`, the file redirected to standard input (`- X < X`)."""
    if str(input) != "-":
        return os.path.samefile(input, output)
    try:
        stdin, target = os.fstat(sys.stdin.fileno()), os.stat(output)
    except (OSError, ValueError, AttributeError):  # no stdin (closed, or replaced by an object without a file)
        return False
    return (stdin.st_dev, stdin.st_ino) == (target.st_dev, target.st_ino)


def _check_output(output: Path, input: str | Path, force: bool) -> int | None:
    """Refuse an output we must not replace; the mode of the file `force` replaces, else None.

    Only a regular file (or a symlink, which is replaced, not followed) is ever replaced, and
    never the input itself, even with `force`.
    """
    if str(output) == "-":
        raise ValueError(
            "output '-' (standard output) is not supported: HDF5 and NPZ files are written with "
            "seeks, and every output is renamed into place once complete; give a file name "
            "(./- for a file named '-')"
        )
    st = scratch.existing(output)
    if st is None:
        return None
    if stat.S_ISDIR(st.st_mode) or output.is_dir():
        raise IsADirectoryError(f"output {output} is a directory; give a file name")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise FileExistsError(
            f"output {output} is {_kind(st.st_mode)}, not a regular file; refusing to replace it (even with --force)"
        )
    if output.exists() and _is_input(input, output):
        raise FileExistsError(f"output {output} is the input file; refusing to overwrite it (even with --force)")
    if not force:
        what = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else "exists"
        raise FileExistsError(f"output {output} {what}; pass --force (force=True) to overwrite it")
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


class _Sentences:
    """The tokens of each line of a file, in order, checked.

    `embed_iter` reads ahead of what it yields, so the texts of the lines read but not yet
    written wait in `texts`, oldest first: the i-th vectors out belong to `texts[0]`.
    """

    def __init__(self, path: str | Path, split: Callable[[str], list[str]], allow_empty_lines: bool):
        self.path, self.split, self.allow_empty_lines = path, split, allow_empty_lines
        self.texts: deque[str] = deque()

    def __iter__(self) -> Iterator[list[str]]:
        for number, text in read_lines(self.path):
            tokens = line_tokens(self.split, text, self.path, number, self.allow_empty_lines)
            self.texts.append(text)
            yield tokens


def _write_vectors(
    writer,
    vectors: Iterator[tuple[np.ndarray, list[str]]],
    texts: deque[str],
    keep_texts: bool,
    bar,
    stop: threading.Event | None,
) -> tuple[int, dict[str, str]]:
    """Write each sentence's vectors under its line's 0-based number; -> count and {text: key}
    (empty unless `keep_texts`: with it, only the texts stay in memory, never the vectors).

    `stop` is checked at every sentence: a KeyboardInterrupt that a signal handler raised inside
    a weakref callback (h5py's registry) is printed as "ignored" and lost, and this still stops.
    """
    sentence_to_index: dict[str, str] = {}
    count = 0
    for array, tokens in vectors:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        key = str(count)
        writer.add(key, array, tokens)
        text = texts.popleft()
        if keep_texts:
            sentence_to_index[text] = key
        count += 1
        bar.update(1)
    return count, sentence_to_index


@contextmanager
def _replacing(output: Path, input: str | Path, force: bool, replaced_mode: int | None) -> Iterator[Path]:
    """A temporary file beside `output`, renamed onto it if the block succeeds, deleted if not.

    A crash or an error never leaves a truncated `output`, nor a temporary file; a kill leaves
    one whose name carries the PID, which the next run for `output` removes. The temporary file
    has the umask's mode, or `replaced_mode`, the mode of the file it replaces.
    """
    scratch.remove_stale(output, TMP_SUFFIX)
    try:
        tmp = scratch.create_file(output, TMP_SUFFIX)
        yield tmp
        if os.path.lexists(output):  # again: it may have appeared or changed while we worked
            replaced_mode = _check_output(output, input, force)
        if replaced_mode is not None:
            os.chmod(tmp, replaced_mode)
        os.replace(tmp, output)
    except OSError as e:
        scratch.remove_own(output, TMP_SUFFIX)
        if e.filename is None and e.errno is not None:  # the writers' write errors name no file
            named = OSError(f"cannot write {output}: {e.strerror or e}")
            named.errno = e.errno
            raise named from None
        raise
    except BaseException:
        # By name, not by `tmp`: a signal may come between creating the file and binding the name.
        scratch.remove_own(output, TMP_SUFFIX)
        raise


@contextmanager
def _writer(
    format: str, path: Path, elmo: Elmo, layers: str, pool: str | None, dtype: str
) -> Iterator["_Hdf5Writer | _NpzWriter | _ParquetWriter"]:
    if format == "parquet":
        writer = _ParquetWriter(path, elmo, layers, pool, dtype)
    else:
        writer = (_Hdf5Writer if format == "hdf5" else _NpzWriter)(path, dtype)
    try:
        yield writer
    except BaseException:
        # Not close(): finishing a file that is deleted anyway can fail again (a full disk), and
        # that second error would hide the first (Parquet's said "Operation on closed file").
        writer.abort()
        raise
    writer.close()


def _progress_bar(path: str | Path, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    counted = enabled and str(path) != "-" and os.path.isfile(path)
    return progress_bar(count_lines(path) if counted else None, enabled)


class _Hdf5Writer:
    def __init__(self, path: Path, dtype: str):
        import h5py

        self._h5py = h5py
        # Through a Python file object: a failed write (a full disk) raises OSError here. With
        # h5py's own file driver it surfaces only in destructors, and the process then crashes.
        self._raw = open(path, "w+b")
        self._file = h5py.File(self._raw, "w")
        self._dtype = dtype

    def add(self, key: str, array: np.ndarray, tokens: list[str] | None = None) -> None:
        self._file.create_dataset(key, array.shape, dtype=self._dtype, data=array)

    def add_sentence_to_index(self, text: str) -> None:
        # AllenNLP: a (1,) dataset of variable-length str holding json.dumps(sentence_to_index).
        dataset = self._file.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=self._h5py.special_dtype(vlen=str))
        dataset[0] = text

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._raw.close()

    def abort(self) -> None:
        try:
            self.close()
        except OSError:  # the write that failed (a full disk) fails again
            pass


class _NpzWriter:
    """`numpy.savez` layout, written one member at a time (`elmo_runtime.npz`: memory stays flat)."""

    def __init__(self, path: Path, dtype: str):
        self._npz = NpzWriter(path)
        self._dtype = np.dtype(dtype)

    def add(self, key: str, array: np.ndarray, tokens: list[str] | None = None) -> None:
        if array.dtype.kind == "f":
            array = array.astype(self._dtype, copy=False)
        self._npz.add(key, array)

    def add_sentence_to_index(self, text: str) -> None:
        self.add(SENTENCE_TO_INDEX, np.array(text))  # 0-d unicode: loads without pickle

    def close(self) -> None:
        self._npz.close()

    def abort(self) -> None:
        self._npz.abort()


class _ParquetWriter:
    """One row per line: its number as `id`, its tokens, its vectors (`elmo_runtime.corpus.table`)."""

    def __init__(self, path: Path, elmo: Elmo, layers: str, pool: str | None, dtype: str):
        from elmo_runtime.corpus.table import ParquetWriter

        self._writer = ParquetWriter(
            path, elmo.num_layers, elmo.dim, all_layers=layers == "all", pooled=pool == "mean", dtype=dtype
        )

    def add(self, key: str, array: np.ndarray, tokens: list[str]) -> None:
        self._writer.add(int(key), tokens, array)

    def add_sentence_to_index(self, text: str) -> None:
        """Parquet rows carry their tokens and line number; the texts are not stored."""

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.discard()
