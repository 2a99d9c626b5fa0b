"""Corpora in, vectors out: text files to HDF5/NPZ/Parquet, Arrow tables, and Ray jobs.

`files.embed_file` (what `elmo-embed` runs), `table.TableEmbedder` (the engine-neutral batch
function), `chunks` (a corpus cut into chunks with stable ids), `ray.embed_dataset` (Ray Data)
and `job.embed_to_parquet` (the resumable Parquet job of `elmo-embed --engine ray`).
Needs the extras named by each module (`hdf5`, `parquet`, `ray`); nothing is imported eagerly.
"""
