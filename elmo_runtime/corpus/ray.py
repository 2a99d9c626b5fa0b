"""ELMo on a Ray cluster with Ray Data: a pool of long-lived workers, each holding one model.

    import ray
    from elmo_runtime.corpus.ray import embed_dataset
    ds = ray.data.read_parquet("corpus/")                    # columns id, text
    embed_dataset(ds, "elmo-int8", layers="top", dtype="float16").write_parquet("vectors/")

`embed_dataset` is `ds.map_batches(TableEmbedder, ...)` with the settings a small cluster needs:
the workers share the CPUs without taking the last one (Ray's read and write tasks need it, or
they never run), and large blocks are cut so that every worker gets some. `embed_to_parquet`
(`elmo-embed ... --engine ray`, `elmo_runtime.corpus.job`) is a whole job on top: stable ids, a
Parquet folder written chunk by chunk, resumed after a failure with every id exactly once.

Needs the `ray` extra (`pip install 'elmo-onnx[ray]'`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elmo_runtime.corpus.table import TableEmbedder

if TYPE_CHECKING:
    import ray.data

RAY_HINT = "pip install 'elmo-onnx[ray]'"
# Rows per block handed to one worker call by `embed_dataset`: small enough to spread a small
# dataset over the pool, big enough that a call is mostly embedding.
ROWS_PER_BLOCK = 256


def require_ray():
    """Import ray, or fail with one line naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(f"the Ray engine needs Ray Data: {RAY_HINT}") from None
    return ray


def worker_cpus(cluster_cpus: float, workers: int) -> float:
    """The CPUs each of `workers` model workers reserves: all but one CPU of the cluster, shared.

    The one left over is for Ray Data's own read, split and write tasks, which reserve a CPU
    each: with every CPU held by a model worker they would wait forever (on 2 CPUs and 2
    workers: 0.5 each). The model's threads are set separately (`threads`): this is Ray's
    bookkeeping, not a limit on the cores a worker uses.
    """
    if workers < 1:
        raise ValueError(f"workers is {workers}; it must be at least 1")
    return max(cluster_cpus - 1, cluster_cpus / 2) / workers


def embed_dataset(
    ds: "ray.data.Dataset",
    package: str | Path,
    *,
    workers: int | None = None,
    threads: int = 1,
    rows_per_block: int = ROWS_PER_BLOCK,
    **settings: Any,
) -> "ray.data.Dataset":
    """Embed a Ray dataset with columns `id` and `text`; lazily, as Ray datasets go.

    Args:
        ds: the sentences (`text`: raw text, or lists of tokens; `id`: any unique key).
        package: a package directory every node can read.
        workers: model workers (None: the cluster's CPUs divided by `threads`).
        threads: ONNX Runtime threads per worker.
        rows_per_block: blocks larger than this are cut (a small file read as one block would
            otherwise keep all but one worker idle).
        **settings: `TableEmbedder`'s `layers`, `pool`, `dtype`, `tokenized`, `state`,
            `batch_tokens`.

    Returns:
        A dataset of `id`, `tokens` (token-level only) and `vectors` (see `elmo_runtime.corpus.table`).
    """
    ray = require_ray()
    from ray.data import ActorPoolStrategy

    cpus = cluster_cpus(ray)
    workers = workers or max(1, int(cpus // threads))
    TableEmbedder(package, threads=threads, device="cpu", **settings)  # bad settings fail here, not in a worker
    return ds.repartition(target_num_rows_per_block=rows_per_block).map_batches(
        TableEmbedder,
        fn_constructor_args=(str(package),),
        fn_constructor_kwargs={"threads": threads, "device": "cpu", **settings},
        batch_size=None,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=workers),
        num_cpus=worker_cpus(cpus, workers),
    )


def cluster_cpus(ray) -> float:
    """The CPUs of the cluster Ray is joined to (starting a local one if none is)."""
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, include_dashboard=False)
    return float(ray.cluster_resources().get("CPU", 1))
