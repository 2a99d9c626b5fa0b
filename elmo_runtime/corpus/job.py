"""The resumable Parquet job of `elmo-embed --engine ray`: `embed_to_parquet`.

Stable ids, a Parquet folder written chunk by chunk by Ray Data workers (`ChunkWorker`),
resumed after a failure with every id exactly once. The Ray adapter it runs on is
`elmo_runtime.corpus.ray`.

The input is cut into chunks (`elmo_runtime.corpus.chunks`); each worker reads a chunk, embeds
it and writes it as one part file, named by the chunk's first id, to a temporary file
(`.part-....parquet.<pid>.<random>.tmp`) it renames when complete. The parts gather in
`.OUTPUT.partial` beside OUTPUT (created with its plan in one rename), renamed to OUTPUT
once every chunk is done. Run again after a failure or an interrupt (a crash, a bad line
fixed, SIGTERM), the job skips the chunks whose part exists: each id ends up in the output
exactly once. Temporary files of killed workers are removed by the driver before it starts
workers and after they stop; the finished parts are kept for the re-run.

Needs the `ray` extra (`pip install 'elmo-onnx[ray]'`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from elmo_runtime import contract as C
from elmo_runtime import scratch
from elmo_runtime.corpus.chunks import Chunk, plan_chunks, read_chunk
from elmo_runtime.corpus.lines import InputError, progress_bar
from elmo_runtime.corpus.ray import cluster_cpus, require_ray, worker_cpus
from elmo_runtime.corpus.table import ParquetWriter, TableEmbedder, pretokenized_message, require_pyarrow
from elmo_runtime.package import sha256_of

log = logging.getLogger(__name__)

MANIFEST = "_elmo.json"
PLAN = "_plan.json"
TMP_SUFFIX = ".tmp"  # files being written: `scratch`'s names, `.NAME.<pid>.<random>.tmp`
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


@dataclass(frozen=True)
class Job:
    """What the chunks of one `embed_to_parquet` run share (see its arguments)."""

    package: str | Path
    partial: Path  # the folder the parts gather in
    plan: dict  # what `_open_job` planned: settings, allow_empty_lines, the package's digest
    verify: bool
    workers: int | None
    threads: int
    address: str | None
    num_cpus: int | None
    progress: bool | None
    stop: threading.Event | None


def embed_to_parquet(
    package: str | Path,
    input: str | Path,
    output: str | Path,
    *,
    workers: int | None = None,
    threads: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
    layers: str = "all",
    pool: str | None = None,
    dtype: str = "float32",
    tokenized: bool = False,
    state: str | None = None,
    batch_tokens: int | None = None,
    allow_empty_lines: bool = False,
    chunk_rows: int | None = None,
    force: bool = False,
    progress: bool | None = None,
    verify: bool = True,
    stop: threading.Event | None = None,
) -> JobReport:
    """Embed a corpus into a Parquet folder on a Ray cluster (see the module docstring); `elmo-embed --engine ray`.

    Args:
        package: a package directory every node can read.
        input: text or Parquet (`text` column) files, a folder or glob every node sees; not "-" (ids: `chunks`).
        output: the folder to write, where every node sees it; not "-", INPUT or inside it.
        workers, threads: model workers (None: the cluster's CPUs / `threads`); ONNX Runtime threads each.
        address, num_cpus: a running cluster (None: `ray.init`'s, or a local one with `num_cpus` CPUs).
        layers, pool, dtype, tokenized, state, batch_tokens: as for `TableEmbedder`.
        allow_empty_lines, chunk_rows: embed blank text lines as 0 tokens instead of failing on them;
            rows per chunk (None: see `plan_chunks`; a resumed job keeps its own).
        force: replace an OUTPUT this function wrote (keeping its mode); start over, not resume.
        progress, verify: a bar on stderr (None: on a terminal); check the package's sha256 sums.
        stop: when set, interrupts the job (KeyboardInterrupt; the finished parts are kept).

    Returns:
        A `JobReport`.

    Raises:
        FileExistsError: OUTPUT exists without `force`, is not this command's folder, or overlaps INPUT.
        InputError: bad input (the message names the file and line); finished chunks stay for a re-run.
        ValueError: bad settings, or a partial output made with other settings or another input.
    """
    output = Path(output)
    replaced_mode, ray = _check_job(input, output, force)
    started = time.perf_counter()
    settings = dict(layers=layers, pool=pool, dtype=dtype, tokenized=tokenized, state=state, batch_tokens=batch_tokens)
    partial, plan, chunks = _plan_job(
        package, input, output, settings, threads, verify, allow_empty_lines, chunk_rows, force
    )
    todo = _parts_to_do(partial, chunks, plan)
    report = JobReport(output, 0, 0, len(chunks), len(chunks) - len(todo), 0.0)
    job = Job(package, partial, plan, verify, workers, threads, address, num_cpus, progress, stop)
    _run_job(ray, job, todo, report)
    report.rows = sum(c.rows for c in chunks)
    report.seconds = time.perf_counter() - started
    _finish(job, settings, input, chunks, report, output, force, replaced_mode)
    return report


def _check_job(input: str | Path, output: Path, force: bool):
    """Refuse standard input and an OUTPUT we may not write; the extras: -> the replaced mode, ray."""
    if str(input) == "-":
        raise ValueError(
            "input '-' (standard input) does not work with --engine ray: the workers read the input "
            "files themselves; give a file, a folder or a glob"
        )
    replaced_mode = _check_output(output, force)
    require_pyarrow()
    return replaced_mode, require_ray()


def _plan_job(
    package: str | Path,
    input: str | Path,
    output: Path,
    settings: dict,
    threads: int,
    verify: bool,
    allow_empty_lines: bool,
    chunk_rows: int | None,
    force: bool,
) -> tuple[Path, dict, list[Chunk]]:
    """Check the settings on a model here, clear stale scratch files, open or resume the plan.

    Returns the folder the parts gather in, the plan and the chunks.
    """
    embedder = TableEmbedder(
        package, threads=threads, device="cpu", verify=verify, **settings
    )  # bad settings fail first
    partial = output.parent / f".{output.name}.partial"
    scratch.remove_stale(partial, TMP_SUFFIX)
    scratch.remove_stale(output, scratch.OLD_SUFFIX)
    plan, chunks = _open_job(embedder, package, input, output, partial, allow_empty_lines, chunk_rows, force)
    del embedder
    _remove_scratch(partial)
    return partial, plan, chunks


def _run_job(ray, job: Job, todo: list[Chunk], report: JobReport) -> None:
    """Run the chunks still to do; whatever happens, remove what stopped workers left."""
    if report.resumed_parts:
        log.info("resuming %s: %d of %d parts done", job.partial, report.resumed_parts, report.parts)
    try:
        if todo:
            _run_chunks(ray, job, todo, report)
    except KeyboardInterrupt:
        log.warning(
            "interrupted: the finished parts stay in %s; run the same command again to finish the rest", job.partial
        )
        raise
    finally:
        _remove_scratch(job.partial)  # what workers stopped mid-part left


def _finish(
    job: Job,
    settings: dict,
    input: str | Path,
    chunks: list[Chunk],
    report: JobReport,
    output: Path,
    force: bool,
    replaced_mode: int | None,
) -> None:
    """Write the folder's manifest (each part's digest replaces its record), then rename it to OUTPUT."""
    partial, plan = job.partial, job.plan
    parts = [
        {
            "file": c.name,
            "path": c.path,
            "first_id": c.first_id,
            "rows": c.rows,
            "source_sha256": c.digest,
            **_committed(partial, c),
        }
        for c in chunks
    ]
    _write_json(
        partial / MANIFEST,
        {
            "format": "elmo-onnx parquet folder",
            "version": 1,
            "package": plan["package"],
            "package_sha256": plan["package_sha256"],
            "settings": settings,
            "input": str(input),
            "rows": report.rows,
            "resumed_parts": report.resumed_parts,
            "workers": report.workers,
            "parts": parts,
        },
    )
    for chunk in chunks:  # their digests are in the manifest now
        _record_path(partial, chunk).unlink()
    _replace(partial, output, force, replaced_mode)
    log.info("wrote %d sentences in %d parts to %s (%.1f s)", report.rows, report.parts, output, report.seconds)


class ChunkWorker:
    """A Ray Data worker of `embed_to_parquet`: reads, embeds and writes whole chunks.

    Called with a batch of chunk descriptions; returns one summary row per chunk (tiny: the
    vectors go straight to storage, never through the object store or the driver).
    """

    def __init__(
        self,
        package: str,
        folder: str,
        threads: int,
        settings: dict,
        allow_empty_lines: bool,
        verify: bool = True,
        plan_id: str = "",
        package_sha256: str | None = None,
    ):
        self._embed = TableEmbedder(package, threads=threads, device="cpu", verify=verify, **settings)
        self._folder = Path(folder)
        self._settings = settings
        self._allow_empty = allow_empty_lines
        self._worker = f"{socket.gethostname()}:{os.getpid()}"
        self._plan_id = plan_id
        # A package replaced at its path after the job was planned would mix two models' vectors.
        found = package_digest(self._embed.elmo)
        self._wrong_package = (
            None
            if package_sha256 in (None, found)
            else (
                f"{self._embed.elmo.manifest.directory} changed after this job was planned (its {C.MANIFEST_FILE} has "
                f"sha256 {found[:12]}..., the plan says {package_sha256[:12]}...); run the command again to plan anew"
            )
        )

    def __call__(self, batch: dict) -> dict:
        summary = {"part": [], "rows": [], "tokens": [], "worker": [], "error": []}
        for fields in zip(*(batch[k] for k in Chunk.__dataclass_fields__)):
            chunk = Chunk(*(v.item() if hasattr(v, "item") else v for v in fields))
            try:
                if self._wrong_package:
                    raise ValueError(self._wrong_package)
                tokens, error = self._write(chunk), ""
            except (InputError, ValueError, OSError) as e:
                # Sent back as data: Ray would deliver the exception wrapped in its traceback.
                kind = next(k.__name__ for k in CHUNK_ERRORS if isinstance(e, k))
                tokens, error = 0, f"{kind}: {e}"
            for key, value in (
                ("part", chunk.name),
                ("rows", chunk.rows),
                ("tokens", tokens),
                ("worker", self._worker),
                ("error", error),
            ):
                summary[key].append(value)
        return summary

    def _write(self, chunk: Chunk) -> int:
        """Embed one chunk into its part file; returns the tokens embedded.

        The rows are embedded and written a batch at a time (`TableEmbedder.iter_rows` into a
        `ParquetWriter`), so a worker's memory follows the token budget, not the chunk.
        """
        table = read_chunk(chunk, tokenized=self._settings["tokenized"], allow_empty_lines=self._allow_empty)
        rows = self._embed.iter_rows(table)
        elmo = self._embed.elmo
        part = self._folder / chunk.name
        writer = None
        try:
            tmp = scratch.create_file(part, TMP_SUFFIX)  # the umask's mode, as the driver's files
            writer = ParquetWriter(
                tmp,
                elmo.num_layers,
                elmo.dim,
                all_layers=self._settings["layers"] == "all",
                pooled=self._settings["pool"] == "mean",
                dtype=self._settings["dtype"],
                id_type=table.column("id").type,
                metadata={"elmo.worker": self._worker},
            )
            for id, tokens, vectors in rows:
                writer.add(id, tokens, vectors)
            writer.close()
            # Read back before it counts: the footer, the rows and the ids; then its digest is
            # recorded, which a resumed job checks before it trusts the part.
            _check_written(tmp, chunk, table.column("id"))
            _write_json(
                _record_path(self._folder, chunk),
                {
                    "plan": self._plan_id,
                    "first_id": chunk.first_id,
                    "rows": chunk.rows,
                    "source": chunk.digest,
                    "bytes": tmp.stat().st_size,
                    "sha256": sha256_of(tmp),
                },
            )
            os.replace(tmp, part)  # a part is there complete or not at all
        except BaseException as e:
            if writer is not None:
                writer.discard()
            scratch.remove_own(part, TMP_SUFFIX)
            if isinstance(e, OSError) and e.filename is None:  # pyarrow's write errors name no file
                raise OSError(f"cannot write {part}: {e.strerror or e}") from None
            raise
        return writer.tokens


def _run_chunks(ray, job: Job, todo: list[Chunk], report: JobReport) -> None:
    from ray.data import ActorPoolStrategy, DataContext

    address, num_cpus, partial = job.address, job.num_cpus, job.partial
    if address is not None and num_cpus is not None:
        raise ValueError("num_cpus (--num-cpus) is for a local cluster; a running cluster (--address) has its own")
    started_here = not ray.is_initialized()
    if started_here:
        _init_ray(ray, address, num_cpus)
    try:
        cpus, threads = cluster_cpus(ray), job.threads
        workers = job.workers or max(1, int(cpus // threads))
        context = DataContext.get_current()
        context.enable_progress_bars = False  # ours counts sentences, not blocks
        ds = ray.data.from_items([c.to_dict() for c in todo], override_num_blocks=len(todo))
        plan = job.plan
        ds = ds.map_batches(
            ChunkWorker,
            fn_constructor_args=(
                str(job.package),
                str(partial),
                threads,
                plan["settings"],
                plan["allow_empty_lines"],
                job.verify,
                _plan_id(plan),
                plan["package_sha256"],
            ),
            batch_size=1,
            compute=ActorPoolStrategy(size=workers),
            num_cpus=worker_cpus(cpus, workers),
        )
        total_rows = sum(c.rows for c in todo)
        log.info(
            "embedding %d sentences in %d chunks on %d workers (%.2f CPUs reserved each, %d threads)",
            total_rows,
            len(todo),
            workers,
            worker_cpus(cpus, workers),
            threads,
        )
        _collect(iter(ds.iter_rows()), job, total_rows, report)
    finally:
        if started_here:
            ray.shutdown()


def _init_ray(ray, address: str | None, num_cpus: int | None) -> None:
    """Start or join a cluster, keeping the caller's signal handlers."""
    # Ray's own log lines stay out of the way of ours (its workers' errors still surface).
    # ray.init makes SIGTERM exit at once (sys.exit): the caller's handler comes back, so that
    # SIGTERM, like Ctrl-C, reaches the cleanup in `_run_chunks` and the caller's message.
    handlers = _signal_handlers()
    try:
        ray.init(
            address=address,
            num_cpus=num_cpus,
            logging_level=logging.WARNING,
            log_to_driver=False,
            include_dashboard=False,
        )
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _collect(rows: Iterator[dict], job: Job, total_rows: int, report: JobReport) -> None:
    """Count the workers' summary rows into `report`, with a progress bar and a log line per 10%."""
    stop, partial = job.stop, job.partial
    with progress_bar(total_rows, job.progress) as bar, _closing_rows(rows):
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


def _raise_chunk_error(error: str, partial: Path) -> None:
    """Raise what a `ChunkWorker` sent back ("Kind: message") as that kind, in one line."""
    kind, message = error.split(": ", 1)
    raise {k.__name__: k for k in CHUNK_ERRORS}.get(kind, ValueError)(
        f"{message} (the finished parts are kept in {partial}: fix the problem and run the same command again "
        "to finish the rest)"
    )


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
        raise FileExistsError(
            f"output {output} exists and is not a Parquet folder written by elmo-embed; refusing "
            "to replace it (even with --force): remove it yourself or choose another OUTPUT"
        )
    if not force:
        raise FileExistsError(f"output {output} exists; pass --force (force=True) to overwrite it")
    scratch.refuse_foreign(output, {MANIFEST, *_listed_parts(output)}, f"a Parquet folder its {MANIFEST} lists")
    return stat.S_IMODE(st.st_mode)


def _listed_parts(output: Path) -> list[str]:
    """The part files a folder's `_elmo.json` lists (FileExistsError if it is not ours)."""
    try:
        data = json.loads((output / MANIFEST).read_text(encoding="utf-8"))
        if data.get("format") != "elmo-onnx parquet folder":
            raise ValueError(f"its format is {data.get('format')!r}")
        return [str(part["file"]) for part in data["parts"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise FileExistsError(
            f"output {output} holds a {MANIFEST} that elmo-embed did not write ({e}); refusing to "
            "replace it (even with --force): remove it yourself or choose another OUTPUT"
        ) from None


def _check_apart(input: str | Path, chunks: list[Chunk], output: Path, partial: Path) -> None:
    """Refuse an OUTPUT that is INPUT, holds an input file or lies in an INPUT folder.

    The job replaces OUTPUT and deletes `partial` with `force`: neither may hold input; and
    parts written inside an input folder would be read as input by the next run.
    """
    places = [output.resolve(), partial.resolve()]
    for path in {Path(c.path) for c in chunks}:
        for place in places:
            if path == place or place in path.parents:
                raise FileExistsError(
                    f"output {output} holds the input file {path}; refusing to write it "
                    "(even with --force): choose another OUTPUT"
                )
    source = Path(input)
    if source.is_dir() and (source.resolve() == places[0] or source.resolve() in places[0].parents):
        raise FileExistsError(
            f"output {output} is inside the input folder {input}: its parts would be read as input "
            "on the next run; choose an OUTPUT outside it"
        )


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


def _replace(partial: Path, output: Path, force: bool, replaced_mode: int | None) -> None:
    """Rename `partial` to `output`, replacing the old output folder (whose mode it takes) if any.

    An interrupt between the two renames puts the old output back.
    """
    if os.path.lexists(output):  # again: it may have appeared or changed while we worked
        replaced_mode = _check_output(output, force)
    if replaced_mode is not None:
        os.chmod(partial, replaced_mode)
    scratch.replace_dir(partial, output)
    (output / PLAN).unlink(missing_ok=True)


def _read_plan(partial: Path) -> dict | None:
    """The plan of an interrupted run in `partial`; None when there is none."""
    if not os.path.lexists(partial):
        return None
    if partial.is_symlink() or not partial.is_dir():
        raise FileExistsError(f"{partial} is in the way (not a folder); remove it or pass --force (force=True)")
    try:
        plan = json.loads((partial / PLAN).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileExistsError(
            f"{partial} is not an interrupted run of elmo-embed (it has no {PLAN}); remove it or "
            "pass --force (force=True)"
        ) from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(
            f"{partial / PLAN}: not a valid plan ({e}); pass --force (force=True) to discard {partial} and start over"
        ) from None
    if not isinstance(plan, dict) or not isinstance(plan.get("chunk_rows"), int):
        raise ValueError(
            f"{partial / PLAN}: not a plan written by elmo-embed; pass --force (force=True) to discard "
            f"{partial} and start over"
        )
    return plan


def package_digest(elmo) -> str:
    """The sha256 of a loaded package's manifest, which lists the sha256 of every other file."""
    return sha256_of(Path(elmo.manifest.directory) / C.MANIFEST_FILE)


def _open_job(
    embedder: TableEmbedder,
    package,
    input,
    output: Path,
    partial: Path,
    allow_empty_lines: bool,
    chunk_rows: int | None,
    force: bool,
) -> tuple[dict, list[Chunk]]:
    """Plan the job and make `partial` hold it, or check the plan of the interrupted run there.

    The plan binds the package's content (its manifest's sha256), not only its path: a package
    replaced since is refused. The input is bound chunk by chunk (`Chunk.digest`, checked with
    each part by `_parts_to_do`): the parts of lines edited since are embedded again, so a
    fixed line does not cost the other parts.
    """
    stored = None if force else _read_plan(partial)
    chunks, chunk_rows = plan_chunks(input, stored["chunk_rows"] if stored is not None else chunk_rows)
    _check_apart(input, chunks, output, partial)
    if not embedder.tokenized and embedder.elmo.tokenizer is None and any(c.format == "text" for c in chunks):
        raise ValueError(pretokenized_message(embedder.elmo.manifest.directory))  # before any worker starts
    settings = {
        "layers": embedder.layers,
        "pool": embedder.pool,
        "dtype": embedder.dtype,
        "tokenized": embedder.tokenized,
        "state": embedder.state,
        "batch_tokens": embedder.batch_tokens,
    }
    plan = {
        "package": str(Path(package).resolve()),
        "package_sha256": package_digest(embedder.elmo),
        "settings": settings,
        "allow_empty_lines": allow_empty_lines,
        "chunk_rows": chunk_rows,
        "chunks": [[c.path, c.first_id, c.rows] for c in chunks],
    }
    if stored is not None and stored != plan:
        raise ValueError(
            f"{partial} holds an interrupted run, but {_plan_change(stored, plan)}; pass --force "
            "(force=True) to discard it and start over"
        )
    if stored is None:
        if os.path.lexists(partial):  # only with force: _read_plan refuses it otherwise
            scratch.remove_path(partial)
        _create_partial(partial, plan)
    return plan, chunks


def _plan_change(stored: dict, plan: dict) -> str:
    """What differs between an interrupted run's plan and this one's, in words."""
    if any(stored.get(key) != plan[key] for key in ("settings", "allow_empty_lines", "chunks")):
        return "with other settings or another input"
    if "package_sha256" not in stored:
        return "made by an older elmo-embed, whose plan does not bind the input's and the package's content"
    if stored.get("package_sha256") != plan["package_sha256"]:
        return f"the package {plan['package']} has changed since (another {C.MANIFEST_FILE}: its vectors would mix)"
    return "with another plan"


def _plan_id(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def _record_path(partial: Path, chunk: Chunk) -> Path:
    """Where a part's commit record is kept until the job ends (hidden: Parquet readers skip it)."""
    return partial / f".{chunk.name}.json"


def _check_written(path: Path, chunk: Chunk, ids) -> None:
    """Refuse a part file whose footer, row count or ids are not what the chunk planned."""
    import pyarrow.parquet as pq

    written = pq.ParquetFile(path)
    if written.metadata.num_rows != chunk.rows:
        raise OSError(f"{path} holds {written.metadata.num_rows} rows after writing, not {chunk.rows}")
    if not written.read(columns=["id"]).column("id").equals(ids):
        raise OSError(f"{path} holds other ids than its chunk after writing")


def _parts_to_do(partial: Path, chunks: list[Chunk], plan: dict) -> list[Chunk]:
    """The chunks whose part is missing or fails its check; a failed part is removed (and logged)."""
    todo, plan_id = [], _plan_id(plan)
    for chunk in chunks:
        part = partial / chunk.name
        if not part.is_file():
            todo.append(chunk)
            continue
        problem = _part_problem(part, _record_path(partial, chunk), chunk, plan_id)
        if problem:
            log.warning("%s %s: embedding that chunk again", part, problem)
            part.unlink()
            _record_path(partial, chunk).unlink(missing_ok=True)
            todo.append(chunk)
    return todo


def _part_problem(part: Path, record_path: Path, chunk: Chunk, plan_id: str) -> str | None:
    """Why a finished part cannot be trusted, or None: its commit record (this plan, these rows,
    its size and sha256) and its Parquet footer (this many rows) must agree with the file."""
    import pyarrow.parquet as pq

    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "has no commit record (a part is recorded as it is written)"
    except (ValueError, RecursionError):
        return f"has a damaged commit record ({record_path.name})"
    if (
        not isinstance(record, dict)
        or record.get("plan") != plan_id
        or record.get("first_id") != chunk.first_id
        or record.get("rows") != chunk.rows
    ):
        return "was recorded for another plan"
    if record.get("source") != chunk.digest:
        lines = f"{chunk.line}..{chunk.line + chunk.rows - 1}"
        return f"was embedded from other input (lines {lines} of {chunk.path} changed)"
    size = part.stat().st_size
    if size != record.get("bytes"):
        return f"has {size} bytes, {record.get('bytes')} when it was written (cut short or replaced)"
    if sha256_of(part) != record.get("sha256"):
        return "does not match the sha256 recorded when it was written (damaged or replaced)"
    try:
        rows = pq.ParquetFile(part).metadata.num_rows
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError... for a file that is not Parquet
        return f"is not a readable Parquet file ({e})"
    return None if rows == chunk.rows else f"holds {rows} rows, the plan says {chunk.rows}"


def _committed(partial: Path, chunk: Chunk) -> dict:
    """A finished part's size and sha256, from its commit record."""
    record = json.loads(_record_path(partial, chunk).read_text(encoding="utf-8"))
    return {"bytes": record["bytes"], "sha256": record["sha256"]}


def _write_json(path: Path, data: dict) -> None:
    tmp = scratch.create_file(path, TMP_SUFFIX)
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except BaseException:
        scratch.remove_own(path, TMP_SUFFIX)
        raise
