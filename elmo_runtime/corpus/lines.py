"""Text input, one sentence per line: the one reader, its one error type, and a progress bar.

`elmo-embed` (`files`) and the chunks of a Ray job (`chunks`) read lines alike: strict UTF-8,
a BOM at the start of a file dropped, surrounding whitespace stripped, and a line with no
tokens refused unless asked for; the errors name the file and line the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

from elmo_runtime.tokenize import TokenizerError


class InputError(ValueError):
    """Input that cannot be embedded; the message names the file and line (or row)."""


def decode_lines(raw_lines: Iterable[bytes], path: str | Path, first_number: int = 1) -> Iterator[tuple[int, str]]:
    """`(line number, text stripped of surrounding whitespace)` for each raw line, decoding strictly.

    Args:
        raw_lines: the lines' bytes (a binary file, or a slice of one).
        path: the file, for messages.
        first_number: the line number of the first line (a BOM is dropped only on line 1).

    Raises:
        InputError: a line that is not valid UTF-8 (naming the file, line and column).
    """
    for number, raw in enumerate(raw_lines, first_number):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
                f"{path}:{number}: not valid UTF-8 (byte {raw[e.start : e.start + 1]!r} at column {e.start + 1})"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield number, line.strip()


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """`decode_lines` over a whole file, or standard input for "-"."""
    stream = sys.stdin.buffer if str(path) == "-" else open(path, "rb")
    try:
        yield from decode_lines(stream, path)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def line_tokens(
    split: Callable[[str], list[str]], text: str, path: str | Path, number: int, allow_empty_lines: bool
) -> list[str]:
    """The tokens of one line; a line with no tokens is refused unless `allow_empty_lines`.

    Raises:
        InputError: a line the tokenizer fails on, or with no tokens; naming the file and line
            (and for an empty line, the option that allows it).
    """
    try:
        tokens = split(text)
    except TokenizerError as e:
        raise InputError(f"{path}:{number}: {e}") from None
    if not tokens and not allow_empty_lines:
        what = "is empty" if not text else "has no tokens"
        raise InputError(
            f"{path}:{number}: line {what}; remove it or pass --allow-empty-lines "
            "(allow_empty_lines=True) to embed it as 0 tokens"
        )
    return tokens


def count_lines(path: str | Path) -> int:
    """Lines in a text file (a last line without "\\n" counts); cheap next to embedding them."""
    total, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            total += block.count(b"\n")
            last = block[-1:]
    return total + (last != b"\n")


def progress_bar(total: int | None, enabled: bool | None):
    """A tqdm bar of sentences on stderr (None: shown only on a terminal)."""
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, unit=" sentences", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
