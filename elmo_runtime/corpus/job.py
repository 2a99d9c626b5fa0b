"""The resumable Parquet job of `elmo-embed --engine ray`: `embed_to_parquet`.

Stable ids, a Parquet folder written chunk by chunk by Ray Data workers (`ChunkWorker`),
resumed after a failure with every id exactly once. The Ray adapter it runs on is
`elmo_runtime.corpus.ray`.

Needs the `ray` extra (`pip install 'elmo-onnx[ray]'`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from elmo_runtime import scratch
from elmo_runtime.corpus.chunks import Chunk, InputError, plan_chunks, read_chunk
from elmo_runtime.corpus.ray import cluster_cpus, require_ray, worker_cpus
from elmo_runtime.corpus.table import TableEmbedder, pretokenized_message, require_pyarrow

log = logging.getLogger(__name__)

# Rows the chunk workers embed (and write as one row group) at a time: bounds their memory.
ROWS_PER_WRITE = 128
MANIFEST = "_elmo.json"
PLAN = "_plan.json"
TMP_SUFFIX = ".tmp"  # files being written: `scratch`'s names, `.NAME.<pid>.<random>.tmp`
OLD_SUFFIX = ".old"  # a replaced output folder, between two renames
# What a chunk worker reports as data rather than raising, most specific first.
CHUNK_ERRORS = (InputError, OSError, ValueError)
# The name of the threads that pull a dataset's results while it is iterated (Ray 2.60): see
# `_closing_rows`.
RAY_DATA_THREAD = "iter_threaded"


@dataclass
class JobReport:
    """What `embed_to_parquet` did."""

    output: Path
    rows: int  # rows in the output
    tokens: int  # tokens embedded by this run
    parts: int  # part files in the output
    resumed_parts: int  # of those, found done from an earlier run
    seconds: float
    workers: dict[str, int] = field(default_factory=dict)  # "host:pid" -> rows embedded by this run


def embed_to_parquet(package: str | Path, input: str | Path, output: str | Path, *, workers: int | None = None,
                     threads: int = 1, address: str | None = None, num_cpus: int | None = None,
                     layers: str = "all", pool: str | None = None, dtype: str = "float32", tokenized: bool = False,
                     state: str | None = None, batch_tokens: int | None = None, allow_empty_lines: bool = False,
                     chunk_rows: int | None = None, force: bool = False, progress: bool | None = None,
                     verify: bool = True, stop: threading.Event | None = None) -> JobReport:
    """Embed a corpus into a Parquet folder on a Ray cluster; what `elmo-embed --engine ray` runs.

    The input is cut into chunks (`elmo_runtime.corpus.chunks`); each worker reads a chunk, embeds
    it and writes it as one part file, named by the chunk's first id, to a temporary file
    (`.part-....parquet.<pid>.<random>.tmp`) it renames when complete. The parts gather in
    `.OUTPUT.partial` beside OUTPUT (created with its plan in one rename), renamed to OUTPUT
    once every chunk is done. Run again after a failure or an interrupt (a crash, a bad line
    fixed, SIGTERM), the job skips the chunks whose part exists: each id ends up in the output
    exactly once. Temporary files of killed workers are removed by the driver before it starts
    workers and after they stop; the finished parts are kept for the re-run.

    Args:
        package: a package directory every node can read.
        input: a text file, a folder or glob of text files, or Parquet files with a `text`
            column (see `elmo_runtime.corpus.chunks` for the ids). Every node must see the same path.
            Not "-": the workers read the files themselves.
        output: the folder to write (on storage every node sees); not "-", not INPUT, not
            inside an INPUT folder, and holding no input file.
        workers: model workers (None: the cluster's CPUs divided by `threads`).
        threads: ONNX Runtime threads per worker.
        address: a running cluster's address (None: start a local one on this machine's
            cores, or use the cluster `ray.init` already joined).
        num_cpus: the CPUs of a local cluster started here (None: all of this machine's).
        layers, pool, dtype, tokenized, state, batch_tokens: as for `TableEmbedder`.
        allow_empty_lines: embed blank text lines as 0 tokens instead of failing on them.
        chunk_rows: rows per chunk (None: see `plan_chunks`; a resumed job keeps its own).
        force: replace an existing OUTPUT (only a folder this function wrote; its mode is
            kept), and start over instead of resuming a partial one.
        progress: a progress bar on stderr (None: only on a terminal; INFO logs either way).
        verify: check the package's sha256 sums in every worker (see `Elmo`).
        stop: an event that interrupts the job (KeyboardInterrupt; OUTPUT not written, the
            finished parts kept) when set; the command line sets it on SIGINT or SIGTERM.

    Returns:
        A `JobReport`.

    Raises:
        FileExistsError: OUTPUT exists and `force` is False, or is something `force` will
            not replace (a file, a link, a folder that is not an output of this command); or
            it overlaps INPUT.
        InputError: bad input (the message names the file and line); the finished chunks stay
            for a re-run.
        ValueError: bad settings, or a partial output made with other settings or another input.
    """
    output = Path(output)
    if str(input) == "-":
        raise ValueError("input '-' (standard input) does not work with --engine ray: the workers read the input "
                         "files themselves; give a file, a folder or a glob")
    replaced_mode = _check_output(output, force)
    require_pyarrow()
    ray = require_ray()
    started = time.perf_counter()
    settings = {"layers": layers, "pool": pool, "dtype": dtype, "tokenized": tokenized, "state": state,
                "batch_tokens": batch_tokens}
    embedder = TableEmbedder(package, threads=threads, device="cpu", verify=verify, **settings)  # bad settings fail first
    partial = output.parent / f".{output.name}.partial"
    scratch.remove_stale(partial, TMP_SUFFIX)
    scratch.remove_stale(output, OLD_SUFFIX)
    stored = None if force else _read_plan(partial)
    chunks, chunk_rows = plan_chunks(input, stored["chunk_rows"] if stored is not None else chunk_rows)
    _check_apart(input, chunks, output, partial)
    if not tokenized and embedder.elmo.tokenizer is None and any(c.format == "text" for c in chunks):
        raise ValueError(pretokenized_message(embedder.elmo.manifest.directory))  # before any worker starts
    del embedder
    plan = {"package": str(Path(package).resolve()), "settings": settings, "allow_empty_lines": allow_empty_lines,
            "chunk_rows": chunk_rows, "chunks": [[c.path, c.first_id, c.rows] for c in chunks]}
    if stored is not None and stored != plan:
        raise ValueError(f"{partial} holds an interrupted run with other settings or another input; pass "
                         "--force (force=True) to discard it and start over")
    if stored is None:
        if os.path.lexists(partial):  # only with force: _read_plan refuses it otherwise
            _remove(partial)
        _create_partial(partial, plan)
    _remove_scratch(partial)
    done = {c.name for c in chunks if (partial / c.name).is_file()}
    todo = [c for c in chunks if c.name not in done]
    if done:
        log.info("resuming %s: %d of %d parts done", partial, len(done), len(chunks))
    report = JobReport(output, 0, 0, len(chunks), len(done), 0.0)
    try:
        if todo:
            _run_chunks(ray, package, todo, partial, workers, threads, (address, num_cpus), settings,
                        allow_empty_lines, progress, report, verify, stop)
    except KeyboardInterrupt:
        log.warning("interrupted: the finished parts stay in %s; run the same command again to finish the rest",
                    partial)
        raise
    finally:
        _remove_scratch(partial)  # what workers stopped mid-part left
    report.rows = sum(c.rows for c in chunks)
    report.seconds = time.perf_counter() - started
    _write_json(partial / MANIFEST, {
        "format": "elmo-onnx parquet folder", "version": 1, "package": plan["package"], "settings": settings,
        "input": str(input), "rows": report.rows, "resumed_parts": report.resumed_parts,
        "workers": report.workers, "parts": [{"file": c.name, "path": c.path, "first_id": c.first_id,
                                                             "rows": c.rows} for c in chunks]})
    _replace(partial, output, force, replaced_mode)
    log.info("wrote %d sentences in %d parts to %s (%.1f s)", report.rows, report.parts, output, report.seconds)
    return report


class ChunkWorker:
    """A Ray Data worker of `embed_to_parquet`: reads, embeds and writes whole chunks.

    Called with a batch of chunk descriptions; returns one summary row per chunk (tiny: the
    vectors go straight to storage, never through the object store or the driver).
    """

    def __init__(self, package: str, folder: str, threads: int, settings: dict, allow_empty_lines: bool,
                 verify: bool = True):
        self._embed = TableEmbedder(package, threads=threads, device="cpu", verify=verify, **settings)
        self._folder = Path(folder)
        self._settings = settings
        self._allow_empty = allow_empty_lines
        self._worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        summary = {"part": [], "rows": [], "tokens": [], "worker": [], "error": []}
        for fields in zip(*(batch[k] for k in Chunk.__dataclass_fields__)):
            chunk = Chunk(*(v.item() if hasattr(v, "item") else v for v in fields))
            try:
                tokens, error = self._write(chunk), ""
            except (InputError, ValueError, OSError) as e:
                # Sent back as data: Ray would deliver the exception wrapped in its traceback.
                kind = next(k.__name__ for k in CHUNK_ERRORS if isinstance(e, k))
                tokens, error = 0, f"{kind}: {e}"
            for key, value in (("part", chunk.name), ("rows", chunk.rows), ("tokens", tokens),
                               ("worker", self._worker), ("error", error)):
                summary[key].append(value)
        return summary

    def _write(self, chunk: Chunk) -> int:
        """Embed one chunk into its part file; returns the tokens embedded."""
        import pyarrow.parquet as pq

        table = read_chunk(chunk, tokenized=self._settings["tokenized"], allow_empty_lines=self._allow_empty)
        part = self._folder / chunk.name
        tokens, writer, tmp = 0, None, None
        try:
            tmp = scratch.create_file(part, TMP_SUFFIX)  # the umask's mode, as the driver's files
            for start in range(0, table.num_rows, ROWS_PER_WRITE):
                out = self._embed(table.slice(start, ROWS_PER_WRITE))
                out = out.replace_schema_metadata({"elmo.worker": self._worker})
                if writer is None:
                    writer = pq.ParquetWriter(tmp, out.schema)
                writer.write_table(out)
                if "tokens" in out.column_names:
                    tokens += sum(len(t) for t in out.column("tokens").to_pylist())
            writer.close()
            os.replace(tmp, part)  # a part is there complete or not at all
        except BaseException as e:
            if writer is not None:
                try:
                    writer.close()
                except OSError:  # the write that failed (a full disk) fails again
                    pass
            scratch.remove_own(part, TMP_SUFFIX)
            if isinstance(e, OSError) and e.filename is None:  # pyarrow's write errors name no file
                raise OSError(f"cannot write {part}: {e.strerror or e}") from None
            raise
        return tokens


def _run_chunks(ray, package, todo: list[Chunk], partial: Path, workers, threads, cluster, settings,
                allow_empty_lines, progress, report: JobReport, verify: bool, stop: threading.Event | None) -> None:
    from ray.data import ActorPoolStrategy, DataContext

    address, num_cpus = cluster
    if address is not None and num_cpus is not None:
        raise ValueError("num_cpus (--num-cpus) is for a local cluster; a running cluster (--address) has its own")
    started_here = not ray.is_initialized()
    if started_here:
        # Ray's own log lines stay out of the way of ours (its workers' errors still surface).
        # ray.init makes SIGTERM exit at once (sys.exit): the caller's handler comes back, so that
        # SIGTERM, like Ctrl-C, reaches the cleanup below and the caller's message.
        handlers = _signal_handlers()
        try:
            ray.init(address=address, num_cpus=num_cpus, logging_level=logging.WARNING, log_to_driver=False,
                     include_dashboard=False)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    try:
        cpus = cluster_cpus(ray)
        workers = workers or max(1, int(cpus // threads))
        context = DataContext.get_current()
        context.enable_progress_bars = False  # ours counts sentences, not blocks
        ds = ray.data.from_items([c.to_dict() for c in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(ChunkWorker, fn_constructor_args=(str(package), str(partial), threads, settings,
                                                               allow_empty_lines, verify),
                            batch_size=1, compute=ActorPoolStrategy(size=workers), num_cpus=worker_cpus(cpus, workers))
        total_rows = sum(c.rows for c in todo)
        log.info("embedding %d sentences in %d chunks on %d workers (%.2f CPUs reserved each, %d threads)",
                 total_rows, len(todo), workers, worker_cpus(cpus, workers), threads)
        rows = iter(ds.iter_rows())
        with _progress_bar(total_rows, progress) as bar, _closing_rows(rows):
            done, next_log = 0, 0.1
            for row in rows:
                if stop is not None and stop.is_set():  # a signal whose KeyboardInterrupt was lost
                    raise KeyboardInterrupt
                if row["error"]:
                    _raise_chunk_error(row["error"], partial)
                report.tokens += int(row["tokens"])
                report.workers[row["worker"]] = report.workers.get(row["worker"], 0) + int(row["rows"])
                done += int(row["rows"])
                bar.update(int(row["rows"]))
                if done / total_rows >= next_log:
                    log.info("%d of %d sentences (%.0f%%)", done, total_rows, 100 * done / total_rows)
                    next_log += 0.1
    finally:
        if started_here:
            ray.shutdown()


@contextlib.contextmanager
def _closing_rows(rows: Iterator[dict], wait: float = 10.0) -> Iterator[None]:
    """Stop Ray Data's iteration over `rows` before the caller shuts Ray down.

    Left half-way (a bad chunk, an interrupt), the iteration's threads go on calling into Ray
    for a moment: the one that pulls the results shuts the executor down itself when the last
    chunk is done, and frees its blocks' references as it returns. If `ray.shutdown()` comes
    first, Ray ends the whole process ("The core worker has already been shutdown. ... The
    process will exit", exit 1) before the caller's one-line error is printed: seen once in
    15 runs of `tests/test_ray.py::test_failed_job_resumes`. So the iterator is closed here,
    and its pulling threads (RAY_DATA_THREAD; not those of another iteration running already)
    get `wait` seconds to return.
    """
    others = set(threading.enumerate())
    try:
        yield
    finally:
        rows.close()
        deadline = time.monotonic() + wait
        for thread in set(threading.enumerate()) - others:
            if thread.name == RAY_DATA_THREAD:
                thread.join(max(0.0, deadline - time.monotonic()))


def _progress_bar(total: int, enabled: bool | None):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, unit=" sentences", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _raise_chunk_error(error: str, partial: Path) -> None:
    """Raise what a `ChunkWorker` sent back ("Kind: message") as that kind, in one line."""
    kind, message = error.split(": ", 1)
    raise {k.__name__: k for k in CHUNK_ERRORS}.get(kind, ValueError)(
        f"{message} (the finished parts are kept in {partial}: fix the problem and run the same command again "
        "to finish the rest)")


def _signal_handlers() -> dict:
    """The Python handlers of SIGINT and SIGTERM now (none outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: h for s in (signal.SIGINT, signal.SIGTERM) if (h := signal.getsignal(s)) is not None}


def _check_output(output: Path, force: bool) -> int | None:
    """Refuse an OUTPUT this job must not write or replace; the mode of the folder `force` replaces.

    Only a real folder holding this function's manifest is ever replaced: never a file, a
    link, a FIFO or device, or any other folder, even with `force`.
    """
    if str(output) == "-":
        raise ValueError("output '-' (standard output) does not work with --engine ray: OUTPUT is a folder")
    st = scratch.existing(output)
    if st is None:
        return None
    if not (stat.S_ISDIR(st.st_mode) and (output / MANIFEST).is_file()):
        raise FileExistsError(f"output {output} exists and is not a Parquet folder written by elmo-embed; refusing "
                              "to replace it (even with --force): remove it yourself or choose another OUTPUT")
    if not force:
        raise FileExistsError(f"output {output} exists; pass --force (force=True) to overwrite it")
    return stat.S_IMODE(st.st_mode)


def _check_apart(input: str | Path, chunks: list[Chunk], output: Path, partial: Path) -> None:
    """Refuse an OUTPUT that is INPUT, holds an input file or lies in an INPUT folder.

    The job replaces OUTPUT and deletes `partial` with `force`: neither may hold input; and
    parts written inside an input folder would be read as input by the next run.
    """
    places = [output.resolve(), partial.resolve()]
    for path in {Path(c.path) for c in chunks}:
        for place in places:
            if path == place or place in path.parents:
                raise FileExistsError(f"output {output} holds the input file {path}; refusing to write it "
                                      "(even with --force): choose another OUTPUT")
    source = Path(input)
    if source.is_dir() and (source.resolve() == places[0] or source.resolve() in places[0].parents):
        raise FileExistsError(f"output {output} is inside the input folder {input}: its parts would be read as input "
                              "on the next run; choose an OUTPUT outside it")


def _create_partial(partial: Path, plan: dict) -> None:
    """`partial` with its plan, made in one rename: a partial folder always has its plan."""
    tmp = scratch.create_dir(partial, TMP_SUFFIX)
    try:
        _write_json(tmp / PLAN, plan)
        os.rename(tmp, partial)
    except BaseException:
        scratch.remove_own(partial, TMP_SUFFIX)
        raise


def _remove_scratch(partial: Path) -> list[Path]:
    """Remove the temporary files in `partial` (of workers killed mid-part: a dead worker's PID
    may belong to another machine, so this runs only while no worker of the job is running)."""
    removed = []
    for path in partial.glob(f".*{TMP_SUFFIX}") if partial.is_dir() else ():
        try:
            path.unlink()
        except OSError as e:
            log.warning("could not remove %s: %s", path, e)
            continue
        removed.append(path)
    if removed:
        log.info("removed %d temporary files of stopped workers from %s", len(removed), partial)
    return removed


def _remove(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _replace(partial: Path, output: Path, force: bool, replaced_mode: int | None) -> None:
    """Rename `partial` to `output`, replacing the old output folder (whose mode it takes) if any.

    An interrupt between the two renames puts the old output back.
    """
    if os.path.lexists(output):  # again: it may have appeared or changed while we worked
        replaced_mode = _check_output(output, force)
    if replaced_mode is not None:
        os.chmod(partial, replaced_mode)
    if not os.path.lexists(output):
        os.rename(partial, output)
    else:
        old = scratch.create_dir(output, OLD_SUFFIX)
        os.rename(output, old)  # onto the empty folder just made
        try:
            os.rename(partial, output)
        except BaseException:
            os.rename(old, output)
            raise
        shutil.rmtree(old)
    (output / PLAN).unlink(missing_ok=True)


def _read_plan(partial: Path) -> dict | None:
    """The plan of an interrupted run in `partial`; None when there is none."""
    if not os.path.lexists(partial):
        return None
    if partial.is_symlink() or not partial.is_dir():
        raise FileExistsError(f"{partial} is in the way (not a folder); remove it or pass --force (force=True)")
    try:
        return json.loads((partial / PLAN).read_text())
    except FileNotFoundError:
        raise FileExistsError(f"{partial} is not an interrupted run of elmo-embed (it has no {PLAN}); remove it or "
                              "pass --force (force=True)") from None


def _write_json(path: Path, data: dict) -> None:
    tmp = scratch.create_file(path, TMP_SUFFIX)
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except BaseException:
        scratch.remove_own(path, TMP_SUFFIX)
        raise
