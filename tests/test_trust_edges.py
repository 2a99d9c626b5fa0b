"""Edges of what the runtime trusts: `elmo-verify`'s bar, the name `default`, an output that is
the redirected input, temporaries of other hosts or PID namespaces, and the manifest's warm state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from elmo_runtime import Elmo, scratch
from elmo_runtime import contract as C
from elmo_runtime.conformance import decode_array, encode_array
from elmo_runtime.conformance import main as verify_main
from elmo_runtime.fetch.resolve import SHIPPED_PACKAGE
from elmo_runtime.package import PackageError, load_manifest, sha256_of

REPO = Path(__file__).resolve().parents[1]


def copy_of(package: Path, to: Path) -> Path:
    return Path(shutil.copytree(package, to))


def rehash(path: Path) -> None:
    """Record a changed file's size and sha256 in its package's manifest (a deliberate tamperer)."""
    manifest_file = path.parent / C.MANIFEST_FILE
    manifest = json.loads(manifest_file.read_text())
    manifest["files"][path.name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    manifest_file.write_text(json.dumps(manifest))


# --- L2: elmo-verify's bar is the precision's, not the file's; names are accepted -----------


@pytest.mark.parametrize("stated", [float("nan"), 1e30])
def test_elmo_verify_applies_the_precisions_bar_not_the_files(tiny_package, tmp_path, capsys, stated):
    package = copy_of(tiny_package, tmp_path / "pkg")
    vectors = package / C.CONFORMANCE_FILE
    doc = json.loads(vectors.read_text())
    for s in doc["sentences"]:  # every expected layer 9.28 off: what tampered weights give
        for entry in s["expected"].values():
            entry.update(encode_array(decode_array(entry, "x") + 9.28))
    doc["tolerance"]["max_abs"] = stated
    vectors.write_text(json.dumps(doc))
    rehash(vectors)
    assert verify_main([str(package)]) == 1
    err = capsys.readouterr().err
    assert "max abs difference 9.28 > 0.0001" in err and "(tolerance max abs 0.0001)" in err


def test_elmo_verify_takes_the_name_default_whatever_the_current_folder_holds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()  # a stray folder of that name
    assert verify_main(["default"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("default: conformance passed (int8): ")


# --- L10: Elmo() is the shipped package, whatever the current folder holds ------------------


def test_a_default_folder_in_the_current_directory_does_not_replace_the_shipped_package(
    tiny_package, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    copy_of(tiny_package, tmp_path / "default")  # a planted fp32 package
    assert Elmo().manifest.directory == SHIPPED_PACKAGE
    assert Elmo("default").manifest.precision == "int8"
    assert Elmo("./default").manifest.precision == "fp32"  # reached as a path


# --- L13: `elmo-embed PKG - X --force < X` does not destroy X --------------------------------


def test_an_output_that_is_the_file_redirected_to_stdin_is_refused(tiny_package, tmp_path):
    text = tmp_path / "X"
    text.write_text("The cat sat .\nA dog ran .\n")
    before = text.read_bytes()
    with open(text, "rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "elmo_runtime.cli", str(tiny_package), "-", str(text), "--force", "-q"],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert done.returncode != 0
    assert f"output {text} is the input file; refusing to overwrite it (even with --force)" in done.stderr
    assert "Traceback" not in done.stderr
    assert text.read_bytes() == before
    with open(text, "rb") as stdin:  # another file as OUTPUT still works from the same stdin
        done = subprocess.run(
            [sys.executable, "-m", "elmo_runtime.cli", str(tiny_package), "-", str(tmp_path / "v.hdf5"), "-q"],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert done.returncode == 0, done.stderr
    with h5py.File(tmp_path / "v.hdf5") as f:
        assert sorted(f) == ["0", "1", "sentence_to_index"]


# --- L9: a temporary of another host or PID namespace is not judged by a local PID -----------


def test_stale_cleanup_keeps_a_live_temporary_of_another_pid_namespace(tmp_path, dead_pid):
    target = tmp_path / "out.hdf5"
    foreign_tag = format((int(scratch.HOST_TAG, 16) + 1) % 0x10000, "04x")
    ours_dead = tmp_path / f".out.hdf5.{dead_pid}.{scratch.HOST_TAG}abcd.tmp"  # this namespace, dead: goes
    theirs = tmp_path / f".out.hdf5.{dead_pid}.{foreign_tag}abcd.tmp"  # a PID we cannot see: kept
    theirs_old = tmp_path / f".out.hdf5.{dead_pid}.{foreign_tag}ef01.tmp"  # untouched for over a day: goes
    for path in (ours_dead, theirs, theirs_old):
        path.write_bytes(b"partial output")
    day_ago = time.time() - scratch.FOREIGN_STALE_S - 60
    os.utime(theirs_old, (day_ago, day_ago))
    removed = scratch.remove_stale(target, ".tmp")
    assert sorted(removed) == sorted([ours_dead, theirs_old])
    assert theirs.read_bytes() == b"partial output"


def test_temporaries_carry_this_hosts_tag(tmp_path):
    made = scratch.create_file(tmp_path / "out.hdf5", ".tmp")
    pid, tail = made.name[len(".out.hdf5.") : -len(".tmp")].split(".")
    assert int(pid) == os.getpid() and tail[:4] == scratch.HOST_TAG and len(tail) == 8
    assert scratch.remove_own(tmp_path / "out.hdf5", ".tmp") == [made]


# --- L5: the warm state in elmo.json is covered by a digest and bounded by the clips ---------


def edit_manifest(package: Path, change) -> None:
    path = package / C.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_an_exported_manifest_records_its_states_digest(tiny_package):
    from elmo_runtime.package import state_digest

    manifest = load_manifest(tiny_package)
    recorded = json.loads((tiny_package / C.MANIFEST_FILE).read_text())["initial_state"]["sha256"]
    assert recorded == state_digest(manifest.initial_state.h, manifest.initial_state.c)


@pytest.mark.parametrize(
    "change, message",
    [
        # one digit of the warm state changed: the 2026-12 probe moved vectors by 0.0089 with no warning
        (lambda s: s["h"][0][0].__setitem__(0, s["h"][0][0][0] + 0.001), "do not match initial_state.sha256"),
        (lambda s: s["c"][1][1].__setitem__(3, "0.5"), "hold something other than numbers"),
        (lambda s: s["h"][0][1].__setitem__(2, True), "hold something other than numbers"),
        (lambda s: s["c"][0][0].__setitem__(0, 1e38), r"initial_state.c reaches 1e\+38, beyond .*lstm.cell_clip 3"),
    ],
)
def test_a_changed_warm_state_is_refused_at_load(tiny_package, tmp_path, change, message):
    package = copy_of(tiny_package, tmp_path / "pkg")
    edit_manifest(package, lambda m: change(m["initial_state"]))
    with pytest.raises(PackageError, match=message):
        Elmo(package)
    with pytest.raises(PackageError, match=message):
        Elmo(package, verify=False)  # the manifest is read whatever `verify` says
