"""`elmo-embed` never clobbers what it should not: devices, FIFOs, its own input; modes are kept;
leftovers of killed runs are removed; SIGTERM cleans up like Ctrl-C."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time

import h5py
import pytest

from elmo_runtime import cli, scratch
from elmo_runtime.cli import embed_file

LINES = ["The cat sat on the mat.", "Hi!"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_force_refuses_to_replace_a_fifo(elmo, text_file, tmp_path):
    fifo = tmp_path / "out.hdf5"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="is a FIFO \\(named pipe\\), not a regular file; refusing"):
        embed_file(elmo, text_file, fifo, force=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_force_refuses_to_replace_a_device(elmo, text_file):
    # Read-only check (no write is attempted): /dev/null is a character device.
    with pytest.raises(FileExistsError, match="/dev/null is a character device"):
        embed_file(elmo, text_file, "/dev/null", force=True)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_force_never_overwrites_the_input(elmo, text_file, capsys):
    before = text_file.read_bytes()
    assert cli.main([str(elmo.manifest.directory), str(text_file), str(text_file), "--force", "-q"]) == 1
    assert "is the input file; refusing to overwrite it (even with --force)" in capsys.readouterr().err
    assert text_file.read_bytes() == before


def test_a_replaced_output_keeps_its_mode(elmo, text_file, tmp_path):
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"old")
    out.chmod(0o644)
    embed_file(elmo, text_file, out, force=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["0", "1", "sentence_to_index"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_new_output_gets_the_umask_mode(elmo, text_file, tmp_path, umask):
    out = tmp_path / "out.npz"
    old = os.umask(umask)
    try:
        embed_file(elmo, text_file, out, format="npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_dash_as_output_is_refused_not_a_file_named_dash(elmo, text_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="output '-' \\(standard output\\) is not supported"):
        embed_file(elmo, text_file, "-")
    assert not (tmp_path / "-").exists()


def test_a_dangling_symlink_is_not_replaced_without_force(elmo, text_file, tmp_path):
    link = tmp_path / "out.hdf5"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError, match="is a symbolic link; pass --force"):
        embed_file(elmo, text_file, link)
    assert link.is_symlink()


def test_a_pipe_is_a_valid_input_and_a_directory_is_named_as_one(elmo, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("\n".join(LINES) + "\n"))
    writer.start()
    assert embed_file(elmo, fifo, tmp_path / "out.hdf5") == 2
    writer.join()
    with pytest.raises(IsADirectoryError, match="is a directory; give a text file"):
        embed_file(elmo, tmp_path, tmp_path / "out2.hdf5")


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(elmo, text_file, tmp_path, dead_pid):
    out = tmp_path / "out.hdf5"
    dead = tmp_path / f".out.hdf5.{dead_pid}.{scratch.HOST_TAG}abcd.tmp"
    live = tmp_path / f".out.hdf5.{os.getppid()}.0123abcd.tmp"  # pytest's parent is alive
    other = tmp_path / f".other.hdf5.{dead_pid}.{scratch.HOST_TAG}abcd.tmp"  # another output's: not ours to judge
    for path in (dead, live, other):
        path.write_bytes(b"partial")
    embed_file(elmo, text_file, out)
    assert not dead.exists() and live.exists() and other.exists() and out.is_file()


def test_parquet_output_follows_the_same_rules(elmo, text_file, tmp_path):
    """`--format parquet` goes through the same checks and replacement as HDF5 and NPZ."""
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out.parquet"
    out.write_bytes(b"old")
    out.chmod(0o640)
    with pytest.raises(FileExistsError, match="exists; pass --force"):
        embed_file(elmo, text_file, out, format="parquet")
    embed_file(elmo, text_file, out, format="parquet", force=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert pq.read_table(out).column("id").to_pylist() == [0, 1]
    fifo = tmp_path / "fifo.parquet"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="is a FIFO \\(named pipe\\), not a regular file; refusing"):
        embed_file(elmo, text_file, fifo, format="parquet", force=True)
    with pytest.raises(FileExistsError, match="is the input file"):
        embed_file(elmo, text_file, text_file, format="parquet", force=True)
    with pytest.raises(ValueError, match="output '-'"):
        embed_file(elmo, text_file, "-", format="parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.parquet", "in.txt", "out.parquet"]


def test_a_stop_event_interrupts_and_leaves_nothing(elmo, text_file, tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(KeyboardInterrupt):
        embed_file(elmo, text_file, tmp_path / "out.hdf5", stop=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


@pytest.mark.parametrize(
    "signum, format", [(signal.SIGTERM, "hdf5"), (signal.SIGINT, "hdf5"), (signal.SIGTERM, "parquet")]
)
def test_a_signal_stops_elmo_embed_cleanly(tiny_package, tmp_path, signum, format):
    if format == "parquet":
        pytest.importorskip("pyarrow")
    big = tmp_path / "big.txt"
    big.write_text("The cat sat on the mat number 7 .\n" * 200_000)
    out = tmp_path / f"out.{format}"
    child = subprocess.Popen(
        [sys.executable, "-m", "elmo_runtime.cli", str(tiny_package), str(big), str(out), "-q", "--format", format],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f".{out.name}.{child.pid}.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read()
    child.send_signal(signum)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 128 + signum
    assert err.strip() == f"elmo-embed: interrupted ({signal.Signals(signum).name}); no output written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.txt"]


FULL_DISK = """
import resource, signal, sys
from elmo_runtime.cli import main

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit a write fails (EFBIG) as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("suffix", ["hdf5", "npz", "parquet"])
def test_a_full_disk_fails_in_one_line_and_keeps_the_old_output(tiny_package, tmp_path, suffix):
    text = tmp_path / "in.txt"
    # Each line its own number: Parquet's dictionary encoding would shrink 200 equal lines below the limit.
    text.write_text(
        "".join(f"the cat sat on mat {i} while an old dog watched it\n" for i in range(200)), encoding="utf-8"
    )
    out = tmp_path / f"out.{suffix}"
    out.write_bytes(b"the previous output")
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    run = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tiny_package), str(text), str(out), "--force", "--format", suffix, "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"elmo-embed: error: cannot write {out}") and run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert out.read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", out.name]
