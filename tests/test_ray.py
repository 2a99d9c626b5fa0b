"""`elmo-embed --engine ray` on a real local Ray cluster (2 CPUs, 2 workers).

Each scenario runs the command line in its own process group with a hard timeout, so a hang
fails the test instead of stalling CI (Ray's processes end with the driver that started them).
"""

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from elmo_runtime import scratch  # noqa: E402
from elmo_runtime.corpus.table import to_numpy  # noqa: E402

TIMEOUT = 300
RAY = ("--engine", "ray", "--workers", "2", "--num-cpus", "2")
WORDS = (
    "the a cat dog sat ran on under mat tree quickly slowly , . ! ? Ω naïve 東京 don't co-operate 1,000 U.S. e-mail"
).split()


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def start_elmo_embed(*args: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "elmo_runtime.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"elmo-embed still running after {timeout} s; stderr:\n{err[-3000:]}")
    return proc.returncode, err


def elmo_embed(*args: str) -> tuple[int, str]:
    return finish(start_elmo_embed(*args))


def read_output(folder) -> tuple[pa.Table, dict]:
    manifest = json.loads((folder / "_elmo.json").read_text())
    leftovers = [p.name for p in folder.iterdir() if not p.name.startswith("part-") and p.name != "_elmo.json"]
    assert leftovers == [], f"not part of a finished output: {leftovers}"  # a killed worker's .tmp, _plan.json
    return pq.read_table(folder), manifest


def assert_each_id_once(table: pa.Table, ids) -> None:
    got = table.column("id").to_pylist()
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} ids written twice"
    assert sorted(got) == sorted(ids)


def max_abs_error(table: pa.Table, expected: dict) -> float:
    got = dict(zip(table.column("id").to_pylist(), to_numpy(table.column("vectors"))))
    return max(float(np.abs(got[i] - e).max()) if e.size else 0.0 for i, e in expected.items())


@pytest.mark.ray
def test_parquet_parity(elmo, tiny_package, tmp_path):
    """Several Parquet files with their own ids: each id once, vectors as `Elmo.embed`, 2 workers."""
    texts = sentences(3000, seed=15)
    ids = random.Random(1).sample(range(10**12), len(texts))
    (tmp_path / "in").mkdir()
    for k in range(4):
        pq.write_table(
            pa.table({"id": ids[k::4], "text": texts[k::4]}), tmp_path / "in" / f"{k}.parquet", row_group_size=500
        )
    code, err = elmo_embed(tiny_package, tmp_path / "in", tmp_path / "out", *RAY, "--top")
    assert code == 0, err
    table, manifest = read_output(tmp_path / "out")
    assert_each_id_once(table, ids)
    assert max_abs_error(table, dict(zip(ids, elmo.embed(texts, layers="top")))) <= 1e-5
    assert manifest["rows"] == 3000 and len(manifest["parts"]) > 2
    busy = [worker for worker, rows in manifest["workers"].items() if rows > 0]
    assert len(busy) >= 2, manifest["workers"]


@pytest.mark.ray
def test_parquet_parity_int8(tiny_weights, tmp_path):
    """With a batch-invariant int8 package the cluster's vectors are identical to `Elmo.embed`'s."""
    from elmo_export import export_package
    from elmo_runtime import Elmo

    package = export_package(*tiny_weights, tmp_path / "int8", precision="int8", progress=False)
    elmo = Elmo(package, device="cpu")
    texts = sentences(1000, seed=19)
    alone = [elmo.embed([t], layers="top")[0] for t in texts[:20]]
    # int8 is batch-invariant (#12): what the identical-vectors check below rests on.
    assert all(np.array_equal(a, b) for a, b in zip(alone, elmo.embed(texts[:20], layers="top")))
    (tmp_path / "in").mkdir()
    for k in range(2):
        pq.write_table(pa.table({"text": texts[k::2]}), tmp_path / "in" / f"{k}.parquet")
    code, err = elmo_embed(package, tmp_path / "in", tmp_path / "out", *RAY, "--top")
    assert code == 0, err
    table, _ = read_output(tmp_path / "out")
    order = texts[0::2] + texts[1::2]  # no id column: rows are numbered across the files in order
    assert_each_id_once(table, range(1000))
    got = dict(zip(table.column("id").to_pylist(), to_numpy(table.column("vectors"))))
    assert all(np.array_equal(got[i], e) for i, e in enumerate(elmo.embed(order, layers="top")))


@pytest.mark.ray
def test_worker_killed(elmo, tiny_package, tmp_path):
    """A worker SIGKILLed a third of the way: nothing lost or doubled, a new worker took over."""
    texts = sentences(6000, seed=16)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    partial = tmp_path / ".out.partial"
    proc = start_elmo_embed(tiny_package, tmp_path / "in.txt", tmp_path / "out", *RAY, "--chunk-rows", "60")
    deadline, killed = time.monotonic() + TIMEOUT, None
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        parts = sorted(partial.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime) if partial.is_dir() else []
        if len(parts) >= 100 // 3:
            before = {pq.read_schema(p).metadata[b"elmo.worker"].decode() for p in parts}
            killed = pq.read_schema(parts[-1]).metadata[b"elmo.worker"].decode()
            os.kill(int(killed.rsplit(":", 1)[1]), signal.SIGKILL)
        time.sleep(0.05)
    code, err = finish(proc)
    assert killed is not None, f"the job ended before a third of it was done (exit {code}): {err[-2000:]}"
    assert code == 0, err
    table, manifest = read_output(tmp_path / "out")
    assert_each_id_once(table, range(6000))
    sample = range(0, 6000, 97)
    taken = table.filter(pa.compute.is_in(table.column("id"), pa.array(list(sample))))
    assert max_abs_error(taken, dict(zip(sample, elmo.embed([texts[i] for i in sample])))) <= 1e-5
    replacements = set(manifest["workers"]) - before
    assert replacements, f"no worker started after the kill did any work: {manifest['workers']}"


@pytest.mark.ray
def test_failed_job_resumes(elmo, tiny_package, tmp_path):
    """A job stopped by a bad line, fixed and run again: each id once, done parts not redone."""
    texts = sentences(2000, seed=17)
    folder = tmp_path / "corpus"
    folder.mkdir()
    for k in range(4):
        (folder / f"{k}.txt").write_text("\n".join(texts[500 * k : 500 * (k + 1)]) + "\n")
    good = (folder / "3.txt").read_bytes()
    lines = good.split(b"\n")
    lines[400] = b"caf\xe9" + lines[400][4:]  # latin-1, not UTF-8: line 401 of the last file
    (folder / "3.txt").write_bytes(b"\n".join(lines))
    code, err = elmo_embed(tiny_package, folder, tmp_path / "out", *RAY, "--average")
    assert code == 1
    assert f"{folder / '3.txt'}:401: not valid UTF-8" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    done_before = len(list((tmp_path / ".out.partial").glob("part-*.parquet")))
    assert done_before > 0

    (folder / "3.txt").write_bytes(good)
    code, err = elmo_embed(tiny_package, folder, tmp_path / "out", *RAY, "--average")
    assert code == 0, err
    assert f"{done_before} of" in err  # "resuming ...: N of M parts done"
    table, manifest = read_output(tmp_path / "out")
    assert_each_id_once(table, range(2000))
    assert max_abs_error(table, dict(zip(range(2000), elmo.embed(texts, layers="average")))) <= 1e-5
    assert manifest["resumed_parts"] == done_before
    assert not (tmp_path / ".out.partial").exists()

    code, err = elmo_embed(tiny_package, folder, tmp_path / "out", *RAY, "--average")
    assert code == 1 and "exists; pass --force" in err


@pytest.mark.ray
def test_sigterm_keeps_finished_parts_only_and_resumes(elmo, tiny_package, tmp_path):
    """SIGTERM to the driver: the one-line message, exit 143, no OUTPUT, no temporary file of the
    workers it stopped; the finished parts stay, and the same command finishes the rest."""
    texts = sentences(3000, seed=20)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    partial = tmp_path / ".out.partial"
    args = (tiny_package, tmp_path / "in.txt", tmp_path / "out", *RAY, "--top", "--chunk-rows", "30", "-q")
    proc = start_elmo_embed(*args)
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline and len(list(partial.glob("part-*.parquet"))) < 10:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` or a scheduler does
    code, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "elmo-embed: interrupted (SIGTERM); no output written", err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    records = {p.name for p in partial.glob(".part-*.parquet.json")}
    left = sorted(p.name for p in partial.iterdir() if p.name not in records)
    assert left[0] == "_plan.json" and all(name.startswith("part-") for name in left[1:]), left
    assert records >= {f".{name}.json" for name in left[1:]}  # each part with the record of its commit
    done_before = len(left) - 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".out.partial"] == []

    # What a worker SIGKILLed mid-part leaves (on another machine, its PID means nothing here).
    (partial / f".part-000000002970.parquet.{os.getpid()}.0123abcd.tmp").write_bytes(b"half")
    code, err = elmo_embed(*args[:-1])
    assert code == 0, err
    assert f"{done_before} of 100 parts done" in err
    table, manifest = read_output(tmp_path / "out")
    assert_each_id_once(table, range(3000))
    assert manifest["resumed_parts"] == done_before
    sample = range(0, 3000, 101)
    taken = table.filter(pa.compute.is_in(table.column("id"), pa.array(list(sample))))
    assert max_abs_error(taken, dict(zip(sample, elmo.embed([texts[i] for i in sample], layers="top")))) <= 1e-5


STOPPED_EARLY_SCRIPT = """
import sys, threading, ray
from elmo_runtime.corpus.job import RAY_DATA_THREAD, embed_to_parquet
from elmo_runtime.corpus.chunks import InputError
package, source, target = sys.argv[1:]
shutdown = ray.shutdown
def noting_shutdown(*args, **kwargs):
    print("alive at ray.shutdown:", [t.name for t in threading.enumerate() if t.name == RAY_DATA_THREAD], flush=True)
    shutdown(*args, **kwargs)
ray.shutdown = noting_shutdown
try:
    embed_to_parquet(package, source, target, workers=2, num_cpus=2, chunk_rows=20, progress=False)
except InputError as e:
    print("error:", str(e).split(" (")[0], flush=True)
"""


@pytest.mark.ray
def test_a_job_stopped_early_shuts_ray_down_after_its_threads(tiny_package, tmp_path):
    """A bad chunk early in a long job: Ray Data's threads that pull the results have returned
    when Ray shuts down.

    Still running, they call into Ray after `ray.shutdown()`, and Ray ends the process with exit
    1 before the one-line error is printed (once in 15 runs of `test_failed_job_resumes`)."""
    lines = sentences(600, seed=21)
    lines[2] = "caf\udce9"  # written with surrogateescape: byte 0xE9, not UTF-8, on line 3
    (tmp_path / "in.txt").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            STOPPED_EARLY_SCRIPT,
            str(tiny_package),
            str(tmp_path / "in.txt"),
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running after {TIMEOUT} s; stderr:\n{proc.communicate()[1][-3000:]}")
    assert proc.returncode == 0, err
    ours = [
        line for line in out.splitlines() if line.startswith(("alive at ray.shutdown:", "error:"))
    ]  # Ray prints too
    assert ours == ["alive at ray.shutdown: []", f"error: {tmp_path / 'in.txt'}:3: not valid UTF-8"], out + err


DATASET_SCRIPT = """
import sys, ray
from elmo_runtime.corpus.ray import embed_dataset
package, source, target = sys.argv[1:]
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ds = ray.data.read_parquet(source)  # one small file: one block, unless embed_dataset cuts it
embed_dataset(ds, package, workers=2, layers="top", pool="mean", dtype="float16").write_parquet(target)
"""


@pytest.mark.ray
def test_embed_dataset(elmo, tiny_package, tmp_path):
    """The Python API on a dataset Ray reads itself: its read tasks get a CPU, every worker a block."""
    texts = sentences(1000, seed=18)
    pq.write_table(pa.table({"id": [f"doc{i}" for i in range(1000)], "text": texts}), tmp_path / "in.parquet")
    proc = subprocess.Popen(
        [sys.executable, "-c", DATASET_SCRIPT, str(tiny_package), str(tmp_path / "in.parquet"), str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    code, err = finish(proc)
    assert code == 0, err
    files = list((tmp_path / "out").glob("*.parquet"))
    assert len(files) >= 2, "the one input block was not cut up"
    table = pq.read_table(tmp_path / "out")
    assert table.schema.field("vectors").type == pa.list_(pa.float16(), elmo.dim)
    assert_each_id_once(table, [f"doc{i}" for i in range(1000)])
    got = dict(zip(table.column("id").to_pylist(), to_numpy(table.column("vectors"))))
    for i, expected in enumerate(elmo.embed(texts, layers="top", pool="mean")):
        # float16 keeps 11 significant bits: within half a unit in the last place of float32's value.
        np.testing.assert_allclose(got[f"doc{i}"].astype(np.float32), expected, rtol=2**-11, atol=1e-6)


def test_workers_leave_a_cpu_for_ray():
    """Model workers together reserve all CPUs but one, or Ray's read tasks never get to run."""
    from elmo_runtime.corpus.ray import worker_cpus

    assert worker_cpus(2, 2) == 0.5
    assert worker_cpus(1, 1) == 0.5
    assert worker_cpus(16, 4) == 15 / 4
    with pytest.raises(ValueError, match="workers is 0"):
        worker_cpus(2, 0)


def test_cluster_flags_need_the_ray_engine(tiny_package, tmp_path):
    from elmo_runtime.cli import main

    (tmp_path / "in.txt").write_text("Hi !\n")
    assert main([str(tiny_package), str(tmp_path / "in.txt"), str(tmp_path / "out.hdf5"), "--workers", "2"]) == 1
    assert not (tmp_path / "out.hdf5").exists()


def embed_to_parquet_quickly(package, input, output, **kwargs):
    """`embed_to_parquet` for the checks made before any cluster starts (these tests start none)."""
    from elmo_runtime.corpus.job import embed_to_parquet

    return embed_to_parquet(package, input, output, workers=1, num_cpus=1, progress=False, **kwargs)


def finished_output(folder, mode=0o755):
    """A folder that looks like a finished `--engine ray` output."""
    folder.mkdir()
    (folder / "_elmo.json").write_text(
        json.dumps(
            {"format": "elmo-onnx parquet folder", "version": 1, "parts": [{"file": "part-000000000000.parquet"}]}
        )
    )
    (folder / "part-000000000000.parquet").write_bytes(b"old")
    folder.chmod(mode)
    return folder


def test_ray_output_never_replaces_what_it_did_not_write(tiny_package, tmp_path):
    """Like elmo-embed's files: a FIFO, a file, a link or a foreign folder is refused even with force."""
    (tmp_path / "in.txt").write_text("Hi !\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "vectors.hdf5"
    plain.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(finished_output(tmp_path / "real"))
    foreign = tmp_path / "photos"
    foreign.mkdir()
    for target in (fifo, plain, link, foreign):
        for force in (False, True):
            with pytest.raises(FileExistsError, match="not a Parquet folder written by elmo-embed; refusing"):
                embed_to_parquet_quickly(tiny_package, tmp_path / "in.txt", target, force=force)
    assert plain.read_bytes() == b"keep" and link.is_symlink() and os.path.exists(fifo)
    with pytest.raises(FileExistsError, match="exists; pass --force"):
        embed_to_parquet_quickly(tiny_package, tmp_path / "in.txt", tmp_path / "real")
    with pytest.raises(ValueError, match="output '-'"):
        embed_to_parquet_quickly(tiny_package, tmp_path / "in.txt", "-")
    with pytest.raises(ValueError, match="input '-'"):
        embed_to_parquet_quickly(tiny_package, "-", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "in.txt", "link", "photos", "real", "vectors.hdf5"]


def test_ray_output_is_kept_apart_from_its_input(tiny_package, tmp_path):
    """OUTPUT is never INPUT, never holds an input file, and never lies inside an INPUT folder."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Hi !\n")
    with pytest.raises(FileExistsError, match="is inside the input folder"):
        embed_to_parquet_quickly(tiny_package, corpus, corpus / "vectors")
    out = finished_output(tmp_path / "out")
    (out / "notes.txt").write_text("Hi !\n")
    with pytest.raises(FileExistsError, match="holds what is not part of a Parquet folder .*: notes.txt"):
        embed_to_parquet_quickly(tiny_package, out / "notes.txt", out, force=True)
    assert (out / "notes.txt").read_text() == "Hi !\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "out"]


def test_a_foreign_partial_folder_is_not_resumed_and_dead_runs_leftovers_go(tiny_package, tmp_path, dead_pid):
    (tmp_path / "in.txt").write_text("Hi !\n")
    (tmp_path / ".out.partial").mkdir()
    (tmp_path / ".out.partial" / "part-000000000000.parquet").write_bytes(b"?")
    (tmp_path / f".out.{dead_pid}.{scratch.HOST_TAG}abcd.old").mkdir()  # killed between the two renames of a replace
    # killed while creating the partial folder
    (tmp_path / f"..out.partial.{dead_pid}.{scratch.HOST_TAG}abcd.tmp").mkdir()
    with pytest.raises(FileExistsError, match="is not an interrupted run of elmo-embed"):
        embed_to_parquet_quickly(tiny_package, tmp_path / "in.txt", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial", "in.txt"]


def test_replacing_an_output_keeps_its_mode_and_leaves_nothing(tmp_path, dead_pid):
    from elmo_runtime.corpus.job import _replace

    out = finished_output(tmp_path / "out", mode=0o750)
    stale = tmp_path / f".out.{dead_pid}.{scratch.HOST_TAG}abcd.old"  # a run killed between its two renames
    stale.mkdir()
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    for name, data in (("part-000000000000.parquet", b"new"), ("_elmo.json", b"{}"), ("_plan.json", b"{}")):
        (partial / name).write_bytes(data)
    _replace(partial, out, force=True, replaced_mode=0o750)
    assert (out / "part-000000000000.parquet").read_bytes() == b"new"
    assert sorted(p.name for p in out.iterdir()) == ["_elmo.json", "part-000000000000.parquet"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the stale one of the killed run goes too


def test_a_worker_that_cannot_write_reports_one_line_and_leaves_no_scratch(tiny_package, tmp_path, monkeypatch):
    """A full disk in a worker: the chunk comes back as an OSError naming the part, no temporary file stays."""
    import errno

    from elmo_runtime.corpus.chunks import plan_chunks
    from elmo_runtime.corpus.job import ChunkWorker, _raise_chunk_error

    (tmp_path / "in.txt").write_text("The cat sat .\nHi !\n")
    (chunk,), _ = plan_chunks(tmp_path / "in.txt")
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    settings = {
        "layers": "top",
        "pool": None,
        "dtype": "float32",
        "tokenized": False,
        "state": None,
        "batch_tokens": None,
    }
    worker = ChunkWorker(str(tiny_package), str(partial), 1, settings, False)

    def full_disk(self, table):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    summary = worker({k: [v] for k, v in chunk.to_dict().items()})
    assert summary["error"] == [f"OSError: cannot write {partial / chunk.name}: No space left on device"]
    assert list(partial.iterdir()) == []
    with pytest.raises(OSError, match=r"cannot write .*: No space left on device \(the finished parts are kept"):
        _raise_chunk_error(summary["error"][0], partial)
