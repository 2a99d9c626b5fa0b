"""Files of tokenized sentences: one sentence a line, tokens separated by single spaces.

The exporter's built-in texts (`data/warmup.txt`, `data/parity_sentences.txt`, which allow `#`
comment lines) and the training corpus (`train.txt`, `heldout.txt`) share this format.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path


def parse_sentences(text: str, comments: bool = False) -> list[list[str]]:
    """The sentences of `text`; blank lines skipped, and `#` lines too with `comments`."""
    return [line.split(" ") for line in text.split("\n") if line.strip() and not (comments and line.startswith("#"))]


def read_sentences(path: str | Path, comments: bool = False) -> list[list[str]]:
    """The sentences of a UTF-8 file (see `parse_sentences`)."""
    with Path(path).open(encoding="utf-8") as fin:  # universal newlines, as any text file
        return parse_sentences(fin.read(), comments)


def builtin_sentences(name: str) -> tuple[list[list[str]], str]:
    """A built-in text of `elmo_export/data` (comment lines allowed) and the sha256 of its bytes."""
    raw = resources.files("elmo_export").joinpath("data", name).read_bytes()
    return parse_sentences(raw.decode("utf-8"), comments=True), hashlib.sha256(raw).hexdigest()
