"""AllenNLP's `embed_file` input and output: sentence lines in, HDF5 datasets out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Iterable

import numpy as np

from elmo_runtime import scratch

SENTENCE_TO_INDEX = "sentence_to_index"  # the dataset name AllenNLP and elmo-embed write
TMP_SUFFIX = ".tmp"


def read_sentence_lines(input_file: IO[str] | str | os.PathLike) -> tuple[str, list[str]]:
    """`(name, lines stripped)` of an open text file or a path; ValueError naming any blank line."""
    if isinstance(input_file, (str, os.PathLike)):
        name = os.fspath(input_file)
        if not Path(name).is_file():
            raise FileNotFoundError(f"input file not found: {name}")
        with open(name, encoding="utf-8") as f:
            sentences = [line.strip() for line in f]
    else:
        name = getattr(input_file, "name", "input_file")
        sentences = [line.strip() for line in input_file]
    blank = [number for number, line in enumerate(sentences, 1) if not line]
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (" ..." if len(blank) > 10 else "")
        raise ValueError(f"{name}: empty lines at line {shown} (counting from 1); remove them")
    return name, sentences


def write_datasets(output: Path, items: Iterable[tuple[str, np.ndarray]], sentence_to_index: str | None) -> None:
    """One float32 dataset per `(key, array)`, and `sentence_to_index` unless None.

    Written under a hidden name beside `output` and renamed onto it once complete, so a failure
    never leaves a truncated file (nor the hidden one).
    """
    try:
        import h5py
    except ImportError:
        raise ImportError("HDF5 output needs h5py: pip install 'elmo-onnx[hdf5]'") from None
    scratch.existing(output)  # its folder must exist
    scratch.remove_stale(output, TMP_SUFFIX)
    tmp = scratch.create_file(output, TMP_SUFFIX)
    try:
        with h5py.File(tmp, "w") as out:
            for key, array in items:
                out.create_dataset(key, array.shape, dtype="float32", data=array)
            if sentence_to_index is not None:
                dataset = out.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=h5py.special_dtype(vlen=str))
                dataset[0] = sentence_to_index
        os.replace(tmp, output)
    except BaseException:
        scratch.remove_own(output, TMP_SUFFIX)
        raise
