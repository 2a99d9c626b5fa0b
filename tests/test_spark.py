"""The Spark recipe of docs/corpus.md (`mapInPandas` over the batch function), that very block, run.

The docs runner (tests/test_docs.py) leaves the block to this test: it needs Java and pyspark and
takes a minute. .ci/run installs pyspark (Java 17 is on the machine), so in CI it runs.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyspark")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java", allow_module_level=True)

PAGE = Path(__file__).resolve().parents[1] / "docs" / "corpus.md"
SESSION = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[2]").getOrCreate()
"""


def recipe(package: Path) -> str:
    """The page's Spark block (the one python block calling mapInPandas), on PACKAGE, in a session."""
    blocks = re.findall(r"^```python norun\n(.*?)^```$", PAGE.read_text(encoding="utf-8"), re.S | re.M)
    (block,) = [b for b in blocks if "mapInPandas" in b]
    assert '"/shared/elmo-int8"' in block
    return SESSION + block.replace('"/shared/elmo-int8"', repr(str(package))) + "\nspark.stop()\n"


def test_spark_recipe(elmo, tiny_package, tmp_path):
    texts = [f"sentence number {i} , with words ." for i in range(200)]
    (tmp_path / "corpus").mkdir()
    pq.write_table(pa.table({"id": list(range(200)), "text": texts}), tmp_path / "corpus" / "in.parquet")
    result = subprocess.run(
        [sys.executable, "-c", recipe(tiny_package)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )  # executors need it too
    assert result.returncode == 0, result.stderr[-3000:]
    table = pq.read_table(tmp_path / "vectors")
    got = dict(zip(table.column("id").to_pylist(), table.column("vectors").to_pylist()))
    assert sorted(got) == list(range(200))
    for i, expected in enumerate(elmo.embed(texts, layers="top", pool="mean")):
        np.testing.assert_allclose(np.asarray(got[i], np.float32), expected, atol=1e-5)
