"""Corpus input for the cluster engines: files cut into chunks of rows, each with stable ids.

    chunks = plan_chunks("corpus/*.txt")            # text files, a folder, a glob, or Parquet
    table = read_chunk(chunks[0])                   # pyarrow table: id, text

A plan is made on the driver from file sizes and line counts alone (one fast pass over text
files, the footers of Parquet files), so it is the same on every run over the same input: that
is what lets an interrupted job resume chunk by chunk. Files are taken in sorted path order.

Ids: text lines are numbered from 0 across the files in that order (line k of the second file
has id `lines in the first file + k`), blank lines included, so an id never depends on how the
job was cut up or run. A Parquet dataset's own `id` column is used when it has one (copied
through unchanged: its values must be unique); otherwise rows are numbered the same way.
"""

from __future__ import annotations

import glob
import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from elmo_runtime.corpus.lines import InputError, count_lines, decode_lines, line_tokens
from elmo_runtime.corpus.table import require_pyarrow
from elmo_runtime.package import sha256_of

# Rows per chunk: enough chunks for every worker of a small job to get several, few enough
# that a large job's chunks stay a few MiB of text each.
MIN_CHUNK_ROWS = 16
MAX_CHUNK_ROWS = 2000
TARGET_CHUNKS = 64


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive rows of one input file.

    `start` is a byte offset into a text file or a row offset into a Parquet file; `line` is
    the 1-based line (or row) number of the chunk's first row in its file, for messages.
    `digest` binds the chunk to its content: the sha256 of its lines' bytes (text), or of the
    whole file (Parquet, whose rows are not stored apart).
    """

    path: str
    format: str  # "text" or "parquet"
    first_id: int
    rows: int
    start: int
    line: int
    digest: str = ""

    @property
    def name(self) -> str:
        """The chunk's part-file name in an output folder: its first row number, zero-padded."""
        return f"part-{self.first_id:012d}.parquet"

    def to_dict(self) -> dict:
        return asdict(self)


def input_files(input: str | Path) -> tuple[list[Path], str]:
    """The files INPUT names, sorted, and their format: "text" or "parquet".

    INPUT is a file, a folder (every file in it and below, except hidden ones and those whose
    name starts with "_"), or a glob pattern (`**` recurses). A `.parquet` suffix means Parquet.

    Raises:
        FileNotFoundError: nothing matches.
        InputError: Parquet and other files mixed; INPUT is a pipe or a device.
    """
    path = Path(input)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
    elif path.exists():
        raise InputError(
            f"input {input} is not a regular file or a folder (a pipe or a device?): the cluster "
            "engines read their input twice, to plan the chunks and to embed them; give files"
        )
    elif any(ch in str(input) for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(input), recursive=True) if Path(p).is_file())
    else:
        raise FileNotFoundError(f"input not found: {input}")
    if not files:
        raise FileNotFoundError(f"input {input} has no files")
    parquet = [p.suffix == ".parquet" for p in files]
    if any(parquet) and not all(parquet):
        raise InputError(
            f"input {input} mixes Parquet files ({files[parquet.index(True)]}) and other files "
            f"({files[parquet.index(False)]}); give one kind"
        )
    return [p.resolve() for p in files], "parquet" if all(parquet) else "text"


def plan_chunks(input: str | Path, chunk_rows: int | None = None) -> tuple[list[Chunk], int]:
    """Cut INPUT into chunks of at most `chunk_rows` rows.

    Args:
        input: see `input_files`.
        chunk_rows: rows per chunk (None: the total cut into about 64 chunks, within 16..2000;
            a job resumed must use the value it started with, which the output folder keeps).

    Returns:
        `(chunks, chunk_rows)`.

    Raises:
        FileNotFoundError, InputError: see `input_files`; an input with no rows; a Parquet file
            without a `text` column.
    """
    files, kind = input_files(input)
    counts = [_parquet_rows(f) if kind == "parquet" else count_lines(f) for f in files]
    total = sum(counts)
    if total == 0:
        raise InputError(f"input {input} is empty: there are no sentences to embed")
    if chunk_rows is None:
        chunk_rows = min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, math.ceil(total / TARGET_CHUNKS)))
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows is {chunk_rows}; it must be at least 1")
    chunks, first_id = [], 0
    for path, count in zip(files, counts):
        if kind == "text":
            starts = _chunk_offsets(path, chunk_rows)
        else:
            file_digest = sha256_of(path)
            starts = [(row, file_digest) for row in range(0, count, chunk_rows)]
        for row, (start, digest) in zip(range(0, count, chunk_rows), starts):
            chunks.append(Chunk(str(path), kind, first_id + row, min(chunk_rows, count - row), start, row + 1, digest))
        first_id += count
    return chunks, chunk_rows


def read_chunk(chunk: Chunk, tokenized: bool = False, allow_empty_lines: bool = False) -> "pa.Table":  # noqa: F821
    """The chunk's rows as a table with columns `id` and `text`.

    Text lines are decoded as strict UTF-8 (a BOM at the start of a file is dropped) and
    stripped of surrounding whitespace, as `elmo-embed` reads them.

    Raises:
        InputError: invalid UTF-8, or (unless `allow_empty_lines`) a line with no tokens; the
            message names the file and line. A Parquet `text` that is not a string or a list
            of strings.
    """
    pa = require_pyarrow()
    if chunk.format == "parquet":
        return _read_parquet_rows(pa, chunk)
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        raws = [f.readline() for _ in range(chunk.rows)]
    lines = list(decode_lines(raws, chunk.path, chunk.line))
    if chunk.digest and hashlib.sha256(b"".join(raws)).hexdigest() != chunk.digest:
        raise InputError(
            f"{chunk.path}:{chunk.line}..{chunk.line + chunk.rows - 1}: these lines changed after the "
            "job was planned; run the command again once the input stays as it is"
        )
    if not allow_empty_lines:
        from elmo_runtime.tokenize import tokenize

        split = str.split if tokenized else tokenize
        for number, text in lines:
            line_tokens(split, text, chunk.path, number, allow_empty_lines)
    texts = [text for _, text in lines]
    ids = pa.array(range(chunk.first_id, chunk.first_id + chunk.rows), pa.int64())
    return pa.table({"id": ids, "text": pa.array(texts, pa.string())})


def _chunk_offsets(path: Path, chunk_rows: int) -> list[tuple[int, str]]:
    """Byte offset of every `chunk_rows`-th line, from the first, and the sha256 of the chunk's bytes."""
    offsets, position, digests = [], 0, []
    with open(path, "rb") as f:
        for number, raw in enumerate(f):
            if number % chunk_rows == 0:
                offsets.append(position)
                digests.append(hashlib.sha256())
            digests[-1].update(raw)
            position += len(raw)
    return [(offset, digest.hexdigest()) for offset, digest in zip(offsets, digests)]


def _parquet_rows(path: Path) -> int:
    pq = _parquet()
    try:
        meta = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError... for a file that is not Parquet
        raise InputError(f"{path}: not a readable Parquet file ({e})") from None
    if "text" not in meta.schema_arrow.names:
        raise InputError(f"{path} has no 'text' column (columns: {', '.join(meta.schema_arrow.names)})")
    return meta.metadata.num_rows


def _read_parquet_rows(pa, chunk: Chunk) -> "pa.Table":  # noqa: F821
    pq = _parquet()
    file = pq.ParquetFile(chunk.path)
    has_id = "id" in file.schema_arrow.names
    # Only the row groups that hold the chunk's rows are read.
    groups, first, row = [], None, 0
    for g in range(file.num_row_groups):
        n = file.metadata.row_group(g).num_rows
        if row + n > chunk.start and row < chunk.start + chunk.rows:
            groups.append(g)
            first = row if first is None else first
        row += n
    table = file.read_row_groups(groups, columns=["id", "text"] if has_id else ["text"])
    table = table.slice(chunk.start - (first or 0), chunk.rows)
    if has_id:
        if table.column("id").null_count:
            raise InputError(
                f"{chunk.path}: column 'id' has a null in rows {chunk.line}..{chunk.line + chunk.rows - 1}"
            )
        return table.select(["id", "text"])
    ids = pa.array(range(chunk.first_id, chunk.first_id + chunk.rows), pa.int64())
    return pa.table({"id": ids, "text": table.column("text")})


def _parquet():
    require_pyarrow()
    import pyarrow.parquet as pq

    return pq
