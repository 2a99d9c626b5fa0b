"""`elmo_runtime.scratch`: the one staging and atomic-replace helper every writer uses, and what
it does after a kill -9."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from elmo_runtime import scratch

# A child that stages TARGET, writes into it and then stops at STOP ("staged": inside the
# staging folder; "aside": between replace_dir's two renames) until it is killed.
CHILD = """
import os, sys, time
from pathlib import Path
from elmo_runtime import scratch

target, stop = Path(sys.argv[1]), sys.argv[2]
real_rename = os.rename

def rename_then_wait(a, b):
    real_rename(a, b)
    print("ready", flush=True)
    time.sleep(60)

with scratch.staged_dir(target) as staging:
    (staging / "value").write_text("child")
    if stop == "staged":
        print("ready", flush=True)
        time.sleep(60)
    os.rename = rename_then_wait
    scratch.replace_dir(staging, target)
"""


def _killed_mid_write(target: Path, stop: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target), stop], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def _debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _install(target: Path, value: str) -> None:
    with scratch.staged_dir(target) as staging:
        (staging / "value").write_text(value)
        scratch.replace_dir(staging, target)


def test_a_kill_inside_the_staging_folder_leaves_debris_the_next_run_removes(tmp_path):
    target = tmp_path / "pkg"
    _killed_mid_write(target, "staged")
    debris = _debris(tmp_path)
    assert len(debris) == 1 and debris[0].startswith(".pkg.") and debris[0].endswith(scratch.STAGING_SUFFIX)
    assert (tmp_path / debris[0] / "value").read_text() == "child" and not target.exists()
    _install(target, "next")
    assert _debris(tmp_path) == [] and (target / "value").read_text() == "next"


def test_a_kill_between_the_two_renames_leaves_debris_the_next_run_removes(tmp_path):
    target = tmp_path / "pkg"
    _install(target, "old")
    _killed_mid_write(target, "aside")
    debris = _debris(tmp_path)
    assert sorted(d.rsplit(".", 1)[-1] for d in debris) == ["old", "partial"] and not target.exists()
    _install(target, "next")
    assert _debris(tmp_path) == [] and (target / "value").read_text() == "next"


def test_replace_dir_replaces_a_folder_and_keeps_a_live_process_s_scratch(tmp_path):
    target = tmp_path / "pkg"
    _install(target, "old")
    live = scratch.create_dir(target, scratch.STAGING_SUFFIX)  # this process's: alive, kept
    _install(target, "new")
    assert (target / "value").read_text() == "new" and _debris(tmp_path) == [live.name]


def test_a_failed_build_leaves_nothing_and_the_old_folder_in_place(tmp_path):
    target = tmp_path / "pkg"
    _install(target, "old")
    with pytest.raises(RuntimeError, match="no"), scratch.staged_dir(target) as staging:
        (staging / "value").write_text("half")
        raise RuntimeError("no")
    assert _debris(tmp_path) == [] and (target / "value").read_text() == "old"


def test_is_temporary_knows_the_names_create_dir_makes(tmp_path):
    made = scratch.create_dir(tmp_path / "out", scratch.STAGING_SUFFIX)
    assert scratch.is_temporary(made, scratch.STAGING_SUFFIX)
    assert not scratch.is_temporary(made, scratch.OLD_SUFFIX)
    assert not scratch.is_temporary(tmp_path / "out.partial", scratch.STAGING_SUFFIX)
