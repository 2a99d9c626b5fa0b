"""`elmo-export` checks what it is given before building anything: a typo cannot take the
machine down, bad values are input errors (exit 2), surprises and interrupts get one line."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from elmo_export.cli import EXIT_INTERNAL, EXIT_USAGE, main
from elmo_runtime import scratch

MEMORY_CAP = 3 << 30  # address space: torch imports in ~1.5 GB of it; the typo below asked for 24 GB


@pytest.fixture
def model_dir(tmp_path, tiny_weights) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    shutil.copy(tiny_weights[0], directory / "options.json")
    shutil.copy(tiny_weights[1], directory / "weights.hdf5")
    return directory


def set_option(model_dir: Path, section: str, key: str, value) -> None:
    path = model_dir / "options.json"
    options = json.loads(path.read_text())
    options[section][key] = value
    path.write_text(json.dumps(options))


def export_capped(model_dir: Path, out: Path) -> subprocess.CompletedProcess:
    """elmo-export in a child whose address space is capped: a runaway allocation fails, fast."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run(
        [sys.executable, "-m", "elmo_export.cli", str(model_dir), "-o", str(out), "-q", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
    )


def test_huge_dims_fail_on_the_weight_shapes_before_torch_allocates(model_dir, tmp_path):
    # Within the sane bounds, yet 2.4G parameters (9.6 GB): the weight file's shapes say no.
    set_option(model_dir, "lstm", "dim", 65536)
    set_option(model_dir, "lstm", "projection_dim", 1024)
    started = time.monotonic()
    done = export_capped(model_dir, tmp_path / "out")
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "dataset 'RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/B' has shape (256,), expected (262144,)" in done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .partial left


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("lstm", "dim", 10_000_000, "dim is 10000000, above the sane limit 65536"),
        ("lstm", "n_layers", 1_000_000, "n_layers is 1000000, above the sane limit 64"),
        ("char_cnn", "n_highway", 1_000_000, "n_highway is 1000000, above the sane limit 64"),
        ("char_cnn", "filters", [[1, 10**9]], "a filter count of char_cnn.filters is above the sane limit"),
        ("lstm", "cell_clip", -3, "lstm.cell_clip is -3, expected a positive finite number"),
        ("lstm", "proj_clip", float("nan"), "lstm.proj_clip is nan, expected a positive finite number"),
    ],
)
def test_absurd_options_are_input_errors(model_dir, tmp_path, capsys, section, key, value, message):
    set_option(model_dir, section, key, value)
    started = time.monotonic()
    assert main([str(model_dir), "-o", str(tmp_path / "out"), "-q", "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 5


def test_a_string_dataset_is_an_input_error(model_dir, tmp_path, capsys):
    with h5py.File(model_dir / "weights.hdf5", "r+") as f:
        del f["CNN_proj/b_proj"]
        f["CNN_proj/b_proj"] = np.array([b"xxxx"] * 16)
    assert main([str(model_dir), "-o", str(tmp_path / "out"), "-q", "--no-progress"]) == EXIT_USAGE
    assert "dataset 'CNN_proj/b_proj' holds |S4 values, expected floating point" in capsys.readouterr().err


def test_an_unexpected_error_exits_3_in_one_line_not_the_parity_code(model_dir, tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("you tried to allocate 64000000000 bytes\nmore torch detail")

    monkeypatch.setattr("elmo_export.exporter.export", boom)
    assert main([str(model_dir), "-o", str(tmp_path / "out"), "-q"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err == (
        "elmo-export: unexpected error: RuntimeError: you tried to allocate 64000000000 bytes "
        "(run with -v for the traceback)\n"
    )


def test_ctrl_c_prints_one_line(model_dir, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("elmo_export.exporter.export", interrupted)
    assert main([str(model_dir), "-o", str(tmp_path / "out"), "-q"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("elmo-export: interrupted (SIGINT); no package was written") and err.count("\n") == 1


def test_dot_as_output_is_refused_by_name(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(model_dir), "-o", ".", "--force", "-q"]) == EXIT_USAGE
    assert "names no directory of its own" in capsys.readouterr().err


def test_staging_directories_of_dead_exports_are_removed_on_the_next_run(model_dir, tmp_path, dead_pid):
    out = tmp_path / "out"
    dead = tmp_path / f".out.{dead_pid}.{scratch.HOST_TAG}2c3d.partial"
    live = tmp_path / f".out.{os.getppid()}.0a1b2c3d.partial"
    for d in (dead, live):
        d.mkdir()
        (d / "elmo.json").write_text("{}")
    set_option(model_dir, "lstm", "dim", 32)  # fails fast, after the staging step
    assert main([str(model_dir), "-o", str(out), "-q", "--no-progress"]) == EXIT_USAGE
    assert not dead.exists() and live.exists() and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".out.{os.getpid()}.")] == []


def test_sigterm_stops_an_export_in_one_line_and_leaves_nothing(model_dir, tmp_path):
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-m", "elmo_export.cli", str(model_dir), "-o", str(out), "--no-progress", "-q"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f".out.{child.pid}.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, child.stderr.read()
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143
    assert err.startswith("elmo-export: interrupted (SIGTERM); no package was written") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
