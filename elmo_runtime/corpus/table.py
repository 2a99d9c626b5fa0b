"""The engine-neutral batch function: an Arrow table of sentences in, a table of vectors out.

    from elmo_runtime.corpus.table import TableEmbedder
    embed = TableEmbedder("elmo-int8", layers="top", dtype="float16", threads=1)
    out = embed(pa.table({"id": [7, 8], "text": ["The cat sat.", "Hi!"]}))   # id, tokens, vectors

Every engine calls this: the Ray Data workers (`elmo_runtime.corpus.ray`, `.job`), a Spark
`mapInPandas` function (see docs/corpus.md), single-process `elmo-embed --format parquet`. One
instance holds one model; the caller sets its thread count, so a worker pool can split the
cores between its members.

Columns in: `id` (any Arrow type, copied through) and `text`, either a string (raw text,
tokenized by the `Elmo`'s tokenizer, `elmo_runtime.tokenize` unless the package's model expects
pre-tokenized input, or split on whitespace with `tokenized=True`) or a list of strings
(tokens). Columns out: `id`, `tokens` (list of strings; left out for sentence vectors) and
`vectors`, whose type follows the settings (`vector_type`):

| layers | pool | `vectors` per row | numpy shape (`to_numpy`) |
| --- | --- | --- | --- |
| "top", "average", an int | None | `list<fixed_size_list<dtype>[dim]>` | `(T, dim)` |
| "all" | None | `list<fixed_size_list<fixed_size_list<dtype>[dim]>[L + 1]>` | `(L + 1, T, dim)` |
| "top", "average", an int | "mean" | `fixed_size_list<dtype>[dim]` | `(dim,)` |
| "all" | "mean" | `fixed_size_list<fixed_size_list<dtype>[dim]>[L + 1]` | `(L + 1, dim)` |

Token-level vectors are stored token by token (`(T, L + 1, dim)` in memory for "all"), so a
row's tokens and vectors line up; `to_numpy` gives back `Elmo.embed`'s shapes.

pyarrow is not a dependency of the base runtime: it comes with the `parquet` (or `ray`) extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from elmo_runtime.embedder import Elmo, Layers
from elmo_runtime.tokenize import TokenizerError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")
EXTRA_HINT = "pip install 'elmo-onnx[parquet]'"


def require_pyarrow():
    """Import pyarrow, or fail with one line naming the extra that installs it."""
    try:
        import pyarrow
    except ImportError:
        raise ImportError(f"Arrow tables and Parquet output need pyarrow: {EXTRA_HINT}") from None
    return pyarrow


class TableEmbedder:
    """One ELMo model that turns Arrow tables of sentences into tables of vectors.

    Args:
        package: a package directory, or an `Elmo` to reuse.
        layers: "all", "top", "average" or a layer index (as for `Elmo.embed`; weights lists
            are not offered, the table's type must not depend on a list's values).
        pool: None (one vector per token) or "mean" (one vector per sentence).
        dtype: "float32" or "float16" (half the bytes; vectors are computed in float32 and
            rounded once).
        tokenized: a string `text` is tokens separated by whitespace, not raw text.
        threads: ONNX Runtime intra-op threads for this instance (None: one per core).
        state, batch_tokens: as for `Elmo.embed`.
        device, verify: as for `Elmo`.

    Raises:
        ImportError: pyarrow is not installed (the message names the extra).
        ValueError: a bad `layers`, `pool`, `dtype` or `state`.
    """

    def __init__(
        self,
        package: str | Path | Elmo,
        *,
        layers: Layers = "all",
        pool: str | None = None,
        dtype: str = "float32",
        tokenized: bool = False,
        threads: int | None = None,
        state: str | None = None,
        batch_tokens: int | None = None,
        device: str = "auto",
        verify: bool = True,
    ):
        self._pa = require_pyarrow()
        if dtype not in DTYPES:
            raise ValueError(f"dtype is {dtype!r}; choose one of {', '.join(DTYPES)}")
        if isinstance(layers, (list, tuple, np.ndarray)):
            raise ValueError(
                "layers must be 'all', 'top', 'average' or a layer index for tables; "
                "mix the layers of layers='all' output yourself"
            )
        self.elmo = (
            package
            if isinstance(package, Elmo)
            else Elmo(package, device=device, threads=threads, batch_tokens=batch_tokens, verify=verify)
        )
        # Check the settings once, on an empty call, so a bad value fails here and not per batch.
        self.elmo.embed([], layers=layers, pool=pool, state=state)
        self.layers, self.pool, self.dtype, self.tokenized = layers, pool, dtype, tokenized
        self.state, self.batch_tokens = state, batch_tokens

    @property
    def vector_type(self) -> "pa.DataType":
        """The Arrow type of the `vectors` column (see the module's table)."""
        return vector_type(self.elmo.num_layers, self.elmo.dim, self.layers == "all", self.pool == "mean", self.dtype)

    def output_schema(self, id_type: "pa.DataType") -> "pa.Schema":
        """The output table's schema for ids of Arrow type `id_type` (ids keep their type)."""
        pa = self._pa
        fields = [pa.field("id", id_type)]
        if self.pool is None:
            fields.append(pa.field("tokens", pa.list_(pa.string())))
        fields.append(pa.field("vectors", self.vector_type))
        return pa.schema(fields)

    def __call__(self, table: "pa.Table | pa.RecordBatch") -> "pa.Table":
        """Embed every row of `table`; rows come out in the order they went in.

        Args:
            table: columns `id` and `text` (others are ignored).

        Returns:
            A table `id`, `tokens` (token-level vectors only), `vectors`.

        Raises:
            ValueError: a missing column, or a null or ill-typed `text` (the message names the
                row's id).
        """
        pa = self._pa
        ids, token_lists = self._token_lists(table)
        vectors = self.elmo.embed(token_lists, layers=self.layers, pool=self.pool, state=self.state)
        columns = {"id": ids}
        if self.pool is None:
            columns["tokens"] = pa.array(token_lists, type=pa.list_(pa.string()))
        columns["vectors"] = _vector_array(
            pa, vectors, self.vector_type, np.dtype(self.dtype), self.layers == "all", self.pool == "mean"
        )
        return pa.table(columns, schema=self.output_schema(ids.type))

    def iter_rows(self, table: "pa.Table | pa.RecordBatch") -> Iterator[tuple[object, list[str], np.ndarray]]:
        """`(id, tokens, vectors)` for each row of `table`, in order, embedded lazily (`Elmo.embed_iter`):
        memory follows the batch budget, not the table. What a `ParquetWriter` takes.

        Raises:
            ValueError: as `__call__`, before any row is embedded.
        """
        ids, token_lists = self._token_lists(table)
        vectors = self.elmo.embed_iter(token_lists, layers=self.layers, pool=self.pool, state=self.state)
        return zip(ids.to_pylist(), token_lists, vectors)

    def _token_lists(self, table: "pa.Table | pa.RecordBatch") -> tuple["pa.ChunkedArray", list[list[str]]]:
        """The `id` column and each row's tokens, checked."""
        missing = [c for c in ("id", "text") if c not in table.column_names]
        if missing:
            raise ValueError(
                f"the table has no {' or '.join(map(repr, missing))} column "
                f"(columns: {', '.join(table.column_names) or 'none'})"
            )
        ids = table.column("id")
        split = str.split if self.tokenized else self.elmo.tokenizer
        return ids, _token_lists(table.column("text"), ids, split, self.elmo.manifest.directory)


def pretokenized_message(package) -> str:
    """What to do with raw text for a package whose model expects pre-tokenized input."""
    return (
        f"{package}: this package's model expects pre-tokenized input (ELMoForManyLangs: Universal Dependencies "
        "tokens); give 'text' as lists of tokens, or as tokens separated by whitespace with tokenized=True "
        "(elmo-embed --tokenized)"
    )


def vector_type(num_layers: int, dim: int, all_layers: bool, pooled: bool, dtype: str = "float32") -> "pa.DataType":
    """The Arrow type of a `vectors` column (see the module's table)."""
    pa = require_pyarrow()
    item = pa.list_(pa.from_numpy_dtype(np.dtype(dtype)), dim)
    if all_layers:
        item = pa.list_(item, num_layers)
    return item if pooled else pa.list_(item)


def to_numpy(vectors: "pa.ChunkedArray | pa.Array") -> list[np.ndarray]:
    """A `vectors` column back to one array per row, in `Elmo.embed`'s shapes.

    Token-level all-layer rows, stored `(T, L + 1, dim)`, come back `(L + 1, T, dim)`.
    """
    pa = require_pyarrow()
    if isinstance(vectors, pa.ChunkedArray):
        return [row for chunk in vectors.chunks for row in to_numpy(chunk)]
    pooled = pa.types.is_fixed_size_list(vectors.type)
    item = vectors.type if pooled else vectors.type.value_type
    shape, values = [], vectors if pooled else vectors.flatten()
    while pa.types.is_fixed_size_list(item):
        shape.append(item.list_size)
        item = item.value_type
        values = values.flatten()
    flat = values.to_numpy(zero_copy_only=False).reshape(-1, *shape)  # (rows or tokens, [L + 1,] dim)
    if pooled:
        return list(flat)
    offsets = vectors.offsets.to_numpy() - vectors.offsets[0].as_py()
    rows = [flat[offsets[i] : offsets[i + 1]] for i in range(len(vectors))]
    return [row.transpose(1, 0, 2) if row.ndim == 3 else row for row in rows]


def _token_lists(text: "pa.ChunkedArray", ids: "pa.ChunkedArray", split_text, package) -> list[list[str]]:
    """Each row's tokens: string rows through `split_text` (None: the package takes tokens only)."""
    pa = require_pyarrow()
    kind = text.type
    if pa.types.is_large_string(kind) or pa.types.is_string(kind) or pa.types.is_string_view(kind):
        if split_text is None:
            raise ValueError(pretokenized_message(package))
        split = split_text
    elif (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
        pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)
    ):
        split = list
    else:
        raise ValueError(f"column 'text' is {kind}; expected strings (raw text) or lists of strings (tokens)")
    values = text.to_pylist()
    out = []
    for row, value in enumerate(values):
        if value is None or (split is list and any(t is None for t in value)):
            raise ValueError(
                f"row with id {ids[row].as_py()!r}: 'text' is null"
                if value is None
                else f"row with id {ids[row].as_py()!r}: a token in 'text' is null"
            )
        try:
            out.append(split(value))
        except TokenizerError as e:
            raise ValueError(f"row with id {ids[row].as_py()!r}: {e}") from None
    return out


def _vector_array(
    pa, vectors: list[np.ndarray], type_: "pa.DataType", dtype: np.dtype, all_layers: bool, pooled: bool
) -> "pa.Array":
    """Per-row arrays -> one Arrow array of `type_`, built from a single flat buffer."""
    if pooled:
        flat = np.stack(vectors).astype(dtype, copy=False) if vectors else np.zeros(0, dtype)  # (B, [L + 1,] dim)
        return _nest(pa, flat.reshape(-1), type_)
    # Token level: rows (L + 1, T, dim) -> tokens one after the other, (sum T, L + 1, dim).
    rows = [v.transpose(1, 0, 2) if all_layers else v for v in vectors]
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    if not rows:
        flat = np.zeros(0, dtype)
    else:  # one row (a long sentence alone in a row group) needs no copy to be made contiguous
        joined = np.ascontiguousarray(rows[0]) if len(rows) == 1 else np.concatenate(rows)
        flat = joined.astype(dtype, copy=False).reshape(-1)
    return pa.ListArray.from_arrays(pa.array(offsets), _nest(pa, flat, type_.value_type), type=type_)


def _nest(pa, flat: np.ndarray, type_: "pa.DataType") -> "pa.Array":
    sizes = []
    item = type_
    while pa.types.is_fixed_size_list(item):
        sizes.append(item.list_size)
        item = item.value_type
    array = pa.array(flat)
    for size in reversed(sizes):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array


# Parquet writer options for every file of vectors. No dictionary encoding: a dictionary-encoded
# column chunk keeps its data pages in memory until the chunk ends (its dictionary page is
# written first), and pyarrow's default dictionary-encodes the floats: one 200k-token sentence
# took 7.2 GB to write (35 times its vectors). Plain pages go to the file as they fill.
PARQUET_OPTIONS = {"use_dictionary": False}
# Vector values (floats) buffered before a row group is written: the writer's memory follows
# this, not a count of rows, so 256 long sentences cannot pile up. A single sentence holding
# more is its own row group (a row never spans two); writing it takes about 4x its bytes, for
# pyarrow keeps a repeated column's record in one page, with its levels (measured).
VALUES_PER_GROUP = 1 << 21


class ParquetWriter:
    """Rows of `(id, tokens, vectors)` into one Parquet file, a row group at a time.

    The file has `TableEmbedder`'s columns (`tokens` only for token-level vectors); what
    `elmo-embed --format parquet` and the `--engine ray` workers write.

    Args:
        path: the file to write (the caller renames it into place when complete).
        num_layers, dim: the package's output layers (L + 1) and vector width.
        all_layers: rows are `(L + 1, T, dim)` (or `(L + 1, dim)` pooled), not `(T, dim)`.
        pooled: one vector per sentence, not per token.
        dtype: "float32" or "float16".
        rows_per_group, values_per_group: a row group is written once this many rows, or rows
            holding this many vector values, are buffered (memory follows the second).
        id_type: the Arrow type of `id` (None: int64).
        metadata: key-value metadata stored in the file's schema.
    """

    def __init__(
        self,
        path: str | Path,
        num_layers: int,
        dim: int,
        *,
        all_layers: bool,
        pooled: bool,
        dtype: str = "float32",
        rows_per_group: int = 256,
        values_per_group: int = VALUES_PER_GROUP,
        id_type: "pa.DataType | None" = None,
        metadata: dict[str, str] | None = None,
    ):
        pa = require_pyarrow()
        import pyarrow.parquet as pq

        if dtype not in DTYPES:
            raise ValueError(f"dtype is {dtype!r}; choose one of {', '.join(DTYPES)}")
        self._pa, self._dtype = pa, np.dtype(dtype)
        self._all, self._pooled = all_layers, pooled
        self._max_rows, self._max_values = rows_per_group, values_per_group
        self._type = vector_type(num_layers, dim, all_layers, pooled, dtype)
        fields = [pa.field("id", pa.int64() if id_type is None else id_type)]
        if not pooled:
            fields.append(pa.field("tokens", pa.list_(pa.string())))
        self._schema = pa.schema([*fields, pa.field("vectors", self._type)], metadata=metadata)
        self._writer = pq.ParquetWriter(path, self._schema, **PARQUET_OPTIONS)
        self._rows: list[tuple[object, list[str], np.ndarray]] = []
        self._values = 0
        self.tokens = 0  # tokens written so far

    def add(self, id: object, tokens: list[str], vectors: np.ndarray) -> None:
        self._rows.append((id, tokens, vectors))
        self._values += vectors.size
        self.tokens += len(tokens)
        if len(self._rows) >= self._max_rows or self._values >= self._max_values:
            self._flush()

    def close(self) -> None:
        if self._rows:
            self._flush()
        self._writer.close()

    def discard(self) -> None:
        """Close the file without writing the rows still buffered (after a failure; the caller
        deletes the file). A second failure of the same kind (a full disk) is not raised."""
        self._rows = []
        try:
            self._writer.close()
        except OSError:
            pass

    def _flush(self) -> None:
        pa = self._pa
        rows, self._rows, self._values = self._rows, [], 0
        ids, tokens, vectors = zip(*rows)
        del rows
        columns = [pa.array(ids, self._schema.field("id").type)]
        if not self._pooled:
            columns.append(pa.array(tokens, pa.list_(pa.string())))
        columns.append(_vector_array(pa, list(vectors), self._type, self._dtype, self._all, self._pooled))
        del vectors
        self._writer.write_table(pa.Table.from_arrays(columns, schema=self._schema))
