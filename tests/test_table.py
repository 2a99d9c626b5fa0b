"""The engine-neutral batch function and the corpus chunk plan (no cluster needed)."""

import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from elmo_runtime.corpus.chunks import InputError, plan_chunks, read_chunk  # noqa: E402
from elmo_runtime.corpus.table import TableEmbedder, to_numpy  # noqa: E402

SENTENCES = ["The cat sat on the mat .", "Hi !", "", "ELMo vectors depend on context , they say ."]


@pytest.mark.parametrize("layers", ["all", "top", "average", 1])
@pytest.mark.parametrize("pool", [None, "mean"])
def test_table_equals_embed(elmo, layers, pool):
    embed = TableEmbedder(elmo, layers=layers, pool=pool)
    out = embed(pa.table({"id": [30, 10, 20, 40], "text": SENTENCES}))
    assert out.column("id").to_pylist() == [30, 10, 20, 40]
    assert ("tokens" in out.column_names) == (pool is None)
    expected = elmo.embed(SENTENCES, layers=layers, pool=pool)
    got = to_numpy(out.column("vectors"))
    for g, e in zip(got, expected):
        assert g.dtype == np.float32 and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


def test_float16_and_pretokenized(elmo):
    tokens = [["The", "cat", "sat", "."], ["Hi", "!"]]
    out = TableEmbedder(elmo, layers="top", dtype="float16")(pa.table({"id": ["a", "b"], "text": tokens}))
    assert out.schema.field("vectors").type == pa.list_(pa.list_(pa.float16(), elmo.dim))
    assert out.column("tokens").to_pylist() == tokens
    for g, e in zip(to_numpy(out.column("vectors")), elmo.embed(tokens, layers="top")):
        assert g.dtype == np.float16
        np.testing.assert_array_equal(g, e.astype(np.float16))
    split = TableEmbedder(elmo, layers="top", tokenized=True)(pa.table({"id": [1], "text": ["Hi !"]}))
    assert split.column("tokens").to_pylist() == [["Hi", "!"]]


def test_bad_tables_name_the_row(elmo):
    embed = TableEmbedder(elmo, layers="top")
    with pytest.raises(ValueError, match=r"row with id 'b': 'text' is null"):
        embed(pa.table({"id": ["a", "b"], "text": ["x", None]}))
    with pytest.raises(ValueError, match=r"no 'id' column \(columns: text\)"):
        embed(pa.table({"text": ["x"]}))
    with pytest.raises(ValueError, match=r"column 'text' is int64"):
        embed(pa.table({"id": [1], "text": [5]}))
    with pytest.raises(ValueError, match=r"dtype is 'int8'"):
        TableEmbedder(elmo, dtype="int8")


def test_runtime_imports_without_pyarrow(tiny_package):
    """pyarrow is an extra: the runtime loads without it, and the batch function names the extra."""
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from elmo_runtime import Elmo\n"
        f"Elmo({str(tiny_package)!r}, device='cpu').embed(['Hi !'])\n"
        "from elmo_runtime.corpus.table import TableEmbedder\n"
        f"TableEmbedder({str(tiny_package)!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: Arrow tables and Parquet output need pyarrow: pip install 'elmo-onnx[parquet]'"
    )


def test_chunks_have_stable_ids(tmp_path):
    (tmp_path / "b.txt").write_text("one\ntwo\nthree")  # no final newline
    (tmp_path / "a.txt").write_text("\ufeffzero\n\n" + "x\n" * 40)
    (tmp_path / "_skip.txt").write_text("not input\n")
    chunks, rows = plan_chunks(tmp_path)
    assert rows == 16
    assert [(c.path.rsplit("/", 1)[1], c.first_id, c.rows, c.line) for c in chunks] == [
        ("a.txt", 0, 16, 1),
        ("a.txt", 16, 16, 17),
        ("a.txt", 32, 10, 33),
        ("b.txt", 42, 3, 1),
    ]
    assert plan_chunks(str(tmp_path / "[ab].txt"))[0] == chunks
    table = read_chunk(chunks[0], allow_empty_lines=True)
    assert table.column("id").to_pylist() == list(range(16))
    assert table.column("text").to_pylist()[:3] == ["zero", "", "x"]
    assert read_chunk(chunks[3]).column("text").to_pylist() == ["one", "two", "three"]
    with pytest.raises(InputError, match=r"a\.txt:2: line is empty"):
        read_chunk(chunks[0])


def test_chunks_of_parquet(tmp_path):
    for n, first in ((50, 0), (30, 50)):
        pq.write_table(
            pa.table(
                {
                    "id": [f"s{i}" for i in range(first, first + n)],
                    "text": [f"sentence {i}" for i in range(first, first + n)],
                }
            ),
            tmp_path / f"part{first}.parquet",
            row_group_size=7,
        )
    chunks, _ = plan_chunks(tmp_path, chunk_rows=20)
    ids = [i for c in chunks for i in read_chunk(c).column("id").to_pylist()]
    assert ids == [f"s{i}" for i in range(80)]
    pq.write_table(pa.table({"words": ["x"]}), tmp_path / "zz.parquet")
    with pytest.raises(InputError, match=r"zz\.parquet has no 'text' column \(columns: words\)"):
        plan_chunks(tmp_path)
    (tmp_path / "notes.txt").write_text("x\n")
    with pytest.raises(InputError, match="mixes Parquet files"):
        plan_chunks(tmp_path)


@pytest.mark.parametrize("format", ["hdf5", "npz", "parquet"])
def test_elmo_embed_compact_outputs(elmo, tiny_package, tmp_path, format):
    """elmo-embed, single process: float16 and sentence vectors in every format, Parquet too."""
    from elmo_runtime.cli import main

    lines = ["The cat sat on the mat .", "Hi !", "ELMo vectors depend on context ."]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / f"out.{format}"
    assert (
        main(
            [
                str(tiny_package),
                str(tmp_path / "in.txt"),
                str(out),
                "--format",
                format,
                "--top",
                "--dtype",
                "float16",
                "--sentence-vectors",
            ]
        )
        == 0
    )
    if format == "hdf5":
        import h5py

        with h5py.File(out) as f:
            got = [f[str(i)][()] for i in range(3)]
    elif format == "npz":
        with np.load(out) as f:
            got = [f[str(i)] for i in range(3)]
    else:
        table = pq.read_table(out)
        assert table.column("id").to_pylist() == [0, 1, 2] and "tokens" not in table.column_names
        got = to_numpy(table.column("vectors"))
    for g, e in zip(got, elmo.embed(lines, layers="top", pool="mean")):
        assert g.dtype == np.float16 and g.shape == (elmo.dim,)
        np.testing.assert_array_equal(g, e.astype(np.float16))


def test_elmo_embed_parquet_tokens(elmo, tiny_package, tmp_path):
    from elmo_runtime.cli import main

    lines = ["The cat sat .", "Hi !"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    assert main([str(tiny_package), str(tmp_path / "in.txt"), str(tmp_path / "v.parquet"), "--format", "parquet"]) == 0
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column("tokens").to_pylist() == [["The", "cat", "sat", "."], ["Hi", "!"]]
    for g, e in zip(to_numpy(table.column("vectors")), elmo.embed(lines)):
        np.testing.assert_array_equal(g, e)  # (L + 1, T, dim)
