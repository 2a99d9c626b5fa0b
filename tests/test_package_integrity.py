"""A package is verified before it is trusted: sha256 sums, listed and confined files, a finite
warm state, a passed parity report, graphs that match the contract."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from elmo_runtime import Elmo
from elmo_runtime.graph_files import external_data_locations
from elmo_runtime.package import PackageError, load_manifest, sha256_of


@pytest.fixture
def package(tiny_package, tmp_path) -> Path:
    """A private copy of the tiny package, free to damage."""
    return Path(shutil.copytree(tiny_package, tmp_path / "pkg"))


def edit_manifest(package: Path, edit) -> None:
    path = package / "elmo.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def relist(package: Path, name: str) -> None:
    """Record a changed file's size and sha256, as a careful attacker would."""

    def edit(m):
        m["files"][name] = {"sha256": sha256_of(package / name), "bytes": (package / name).stat().st_size}

    edit_manifest(package, edit)


def test_flipped_weight_bytes_are_caught_at_load_unless_verification_is_off(package):
    data = package / "bilm.onnx.data"
    raw = bytearray(data.read_bytes())
    for i in range(0, len(raw), 4096):
        raw[i + 3] ^= 0x7F
    data.write_bytes(bytes(raw))  # same size: only the sha256 can tell
    with pytest.raises(PackageError, match="'bilm.onnx.data' does not match its sha256"):
        Elmo(package, device="cpu")
    assert Elmo(package, device="cpu", verify=False).embed([["a", "b"]])[0].shape == (3, 2, 32)


def test_a_wrong_sha256_in_the_manifest_is_caught(package):
    edit_manifest(package, lambda m: m["files"]["token_embedder.onnx"].update(sha256="0" * 64))
    with pytest.raises(PackageError, match="'token_embedder.onnx' does not match its sha256"):
        Elmo(package, device="cpu")


@pytest.mark.parametrize("unlisted", ["bilm.onnx", "bilm.onnx.data", "token_embedder.onnx.data"])
def test_graphs_and_their_weight_files_must_be_listed(package, unlisted):
    edit_manifest(package, lambda m: m["files"].pop(unlisted))
    with pytest.raises(PackageError, match=f"'{unlisted}'|{unlisted!r}, which is not listed|not listed"):
        load_manifest(package)


def test_an_empty_file_list_is_refused(package):
    edit_manifest(package, lambda m: m.update(files={}))
    with pytest.raises(PackageError, match="not listed in 'files'"):
        load_manifest(package)


def test_a_non_finite_warm_state_is_refused(package):
    edit_manifest(package, lambda m: m["initial_state"]["h"][0][0].__setitem__(0, float("nan")))
    with pytest.raises(PackageError, match=r"initial_state.h holds a non-finite value \(nan at index \[0, 0, 0\]\)"):
        Elmo(package, device="cpu")


@pytest.mark.parametrize("parity", [None, {"passed": False}])
def test_a_package_without_a_passed_parity_report_is_refused(package, parity):
    edit_manifest(package, lambda m: m.update(parity=parity))
    with pytest.raises(PackageError, match="parity report"):
        Elmo(package, device="cpu")


def test_a_staging_directory_is_never_a_package(package, tmp_path):
    staging = package.rename(tmp_path / f".out.{os.getpid()}.0a1b2c3d.partial")
    with pytest.raises(PackageError, match="unfinished export"):
        Elmo(staging, device="cpu")


@pytest.mark.parametrize("name", ["/etc/passwd", "../pkg2/bilm.onnx", "sub/../../x.onnx"])
def test_graph_file_names_must_stay_inside_the_package(package, name):
    edit_manifest(package, lambda m: m["graphs"]["bilm"].update(file=name))
    with pytest.raises(PackageError, match="not a plain file name inside the package"):
        Elmo(package, device="cpu")


def test_a_symlink_leading_out_of_the_package_is_refused(package, tiny_package, tmp_path):
    outside = shutil.copy(package / "bilm.onnx", tmp_path / "elsewhere.onnx")
    (package / "bilm.onnx").unlink()
    (package / "bilm.onnx").symlink_to(outside)
    with pytest.raises(PackageError, match="'bilm.onnx' resolves outside the package directory"):
        Elmo(package, device="cpu")


@pytest.mark.parametrize("location", ["../" * 10 + "etc/passwd", "/etc/passwd", "/dev/zero"])
def test_external_data_locations_must_stay_inside_the_package(package, location):
    # The attack of the probe (M2): a graph that reads a file outside the package as weights,
    # with the manifest updated to match. onnxruntime 1.20 followed such a location.
    graph = onnx.load(str(package / "token_embedder.onnx"), load_external_data=False)
    tensor = next(t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location
        elif entry.key == "offset":
            entry.value = "0"
    onnx.save(graph, str(package / "token_embedder.onnx"))
    relist(package, "token_embedder.onnx")
    with pytest.raises(PackageError, match=f"external data of token_embedder.onnx \\(tensor '{tensor.name}'\\)"):
        Elmo(package, device="cpu")


def test_swapped_graphs_fail_at_load_not_at_the_first_embed(package):
    def swap(m):
        g = m["graphs"]
        g["bilm"]["file"], g["token_embedder"]["file"] = g["token_embedder"]["file"], g["bilm"]["file"]

    edit_manifest(package, swap)
    with pytest.raises(PackageError, match="bilm.onnx: the graph does not match the package contract"):
        Elmo(package, device="cpu")


def test_the_external_data_walk_finds_what_onnx_finds(tiny_package):
    # The runtime reads locations without the onnx package; onnx is the reference, subgraphs
    # (the Scan bodies) included.
    for name in ("token_embedder.onnx", "bilm.onnx"):
        model = onnx.load(str(tiny_package / name), load_external_data=False)
        want = sorted(
            (t.name, next(e.value for e in t.external_data if e.key == "location"))
            for t in onnx.external_data_helper._get_all_tensors(model)
            if t.data_location == onnx.TensorProto.EXTERNAL
        )
        got = sorted(external_data_locations(tiny_package / name))
        assert got == want and len(got) > 3
        assert any("/" in tensor for tensor, _ in got)  # subgraph tensors (l0/..., l1/...) too


def test_an_exported_package_is_readable_as_the_umask_allows(tiny_package):
    umask = os.umask(0)
    os.umask(umask)
    assert tiny_package.stat().st_mode & 0o777 == 0o777 & ~umask
    for f in tiny_package.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name


def test_files_swapped_after_verification_are_not_what_the_sessions_run(package, monkeypatch):
    """M8 (#21): the sessions are made from the bytes that were hashed, not from the paths again."""
    from elmo_runtime import runner

    sentence = [["The", "river", "bank", "."]]
    want = Elmo(package, device="cpu").embed(sentence)[0]
    data = package / "bilm.onnx.data"
    tampered = bytearray(data.read_bytes())
    for i in range(0, len(tampered), 64):
        tampered[i] ^= 0x55
    original = runner.create_session
    swapped = []

    def swap_then_create(graph, *args, **kwargs):  # between verification and session creation
        data.write_bytes(bytes(tampered))
        swapped.append(graph.path.name)
        return original(graph, *args, **kwargs)

    monkeypatch.setattr(runner, "create_session", swap_then_create)
    got = Elmo(package, device="cpu").embed(sentence)[0]
    assert swapped == ["token_embedder.onnx", "bilm.onnx"] and data.read_bytes() == bytes(tampered)
    assert np.array_equal(got, want)
    # The swapped file does change the vectors when it is used: a session made from it now differs.
    monkeypatch.setattr(runner, "create_session", original)
    relist(package, "bilm.onnx.data")
    assert not np.array_equal(Elmo(package, device="cpu").embed(sentence)[0], want)


def test_a_subgraph_tensor_in_external_data_is_refused(package):
    """Format 3 keeps only main-graph initializers in external data (what every binding loads from bytes)."""
    path = package / "bilm.onnx"
    model = onnx.load(str(path), load_external_data=False)
    scan = next(node for node in model.graph.node if node.op_type == "Scan")
    body = scan.attribute[0].g
    moved = next(t for t in model.graph.initializer if t.name.startswith("l0/W_h_"))
    body.initializer.append(moved)
    model.graph.initializer.remove(moved)
    path.write_bytes(model.SerializeToString())
    relist(package, "bilm.onnx")
    with pytest.raises(PackageError, match=f"keeps tensor '{moved.name}' of a subgraph in external data"):
        load_manifest(package)
