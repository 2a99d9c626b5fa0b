"""The README's Spark recipe (`mapInPandas` over the batch function), run when Java and pyspark are here.

CI does not install pyspark (a few hundred MB for one optional recipe): there this test skips.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pyspark")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java", allow_module_level=True)

# The README's recipe, with the package path and the input and output folders as arguments.
RECIPE = """
import sys
import pyarrow as pa
from pyspark.sql import SparkSession
from elmo_runtime.corpus.table import TableEmbedder

PACKAGE, SOURCE, TARGET = sys.argv[1:]

def embed(frames):  # one partition: pandas DataFrames (id, text) in, (id, vectors) out
    embedder = TableEmbedder(PACKAGE, layers="top", pool="mean", threads=1)  # loads in well under a second
    for frame in frames:
        yield embedder(pa.Table.from_pandas(frame[["id", "text"]], preserve_index=False)).to_pandas()

spark = SparkSession.builder.master("local[2]").getOrCreate()
(spark.read.parquet(SOURCE)
      .mapInPandas(embed, schema="id long, vectors array<float>")
      .write.parquet(TARGET))
spark.stop()
"""


def test_spark_recipe(elmo, tiny_package, tmp_path):
    texts = [f"sentence number {i} , with words ." for i in range(200)]
    pq.write_table(pa.table({"id": list(range(200)), "text": texts}), tmp_path / "in.parquet")
    result = subprocess.run([sys.executable, "-c", RECIPE, str(tiny_package), str(tmp_path / "in.parquet"),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYSPARK_PYTHON": sys.executable})  # executors need elmo-onnx too
    assert result.returncode == 0, result.stderr[-3000:]
    table = pq.read_table(tmp_path / "out")
    got = dict(zip(table.column("id").to_pylist(), table.column("vectors").to_pylist()))
    assert sorted(got) == list(range(200))
    for i, expected in enumerate(elmo.embed(texts, layers="top", pool="mean")):
        np.testing.assert_allclose(np.asarray(got[i], np.float32), expected, atol=1e-5)
