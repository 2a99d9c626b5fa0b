"""Packages by name, torch-free: the shipped default, catalog archives and Hub repositories.

Catalog packages come from a real HTTP server on 127.0.0.1 (`tests/http_server.py`), Hub
packages from a stand-in for the Hub on 127.0.0.1 (`tests/hub_server.py`) that `HF_ENDPOINT`
points at, in both directions: `elmo-export --push-to-hub` uploads, `Elmo("hf:...")` downloads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from http_server import serving
from hub_server import HubHandler, HubState

from elmo_export.publish import SourceLicense, archive_package, push_to_hub
from elmo_runtime import Elmo, PackageError, scratch
from elmo_runtime import cli as embed_cli
from elmo_runtime.fetch import download
from elmo_runtime.fetch.catalog import load_catalogs
from elmo_runtime.fetch.download import CorruptCacheError, DownloadError
from elmo_runtime.fetch.resolve import SHIPPED_PACKAGE, resolve_package

SENTENCES = ["The cat sat on the mat .", "ELMo vectors depend on context ."]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """A fresh cache, no inherited catalog, offline switch, Hub endpoint or token, no retry delays."""
    monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "cache"))
    for name in ("ELMO_ONNX_OFFLINE", "ELMO_ONNX_CATALOG", "HF_ENDPOINT", "HF_TOKEN", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login is read
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)


def vectors(package) -> list[np.ndarray]:
    return Elmo(package, device="cpu").embed(SENTENCES, layers="top")


# --- the shipped default ----------------------------------------------------------------------


def test_default_package_embeds_offline_with_no_argument(monkeypatch, tmp_path):
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")
    elmo = Elmo()
    assert elmo.manifest.directory == SHIPPED_PACKAGE
    assert elmo.manifest.precision == "int8"
    top = elmo.embed(SENTENCES, layers="top")
    assert [v.shape for v in top] == [(7, 256), (6, 256)]
    assert all(np.isfinite(v).all() and np.abs(v).max() > 0 for v in top)
    np.testing.assert_array_equal(Elmo("default").embed(SENTENCES, layers="top")[1], top[1])
    assert not (tmp_path / "cache").exists()  # nothing downloaded, nothing cached


def test_elmo_embed_default(tmp_path):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    assert embed_cli.main(["default", str(text), str(tmp_path / "vectors.hdf5"), "-q"]) == 0
    with h5py.File(tmp_path / "vectors.hdf5") as f:
        assert f["0"].shape == (3, 7, 256) and f["1"].shape == (3, 6, 256)


def test_unknown_names_list_what_exists_and_the_accepted_forms(tmp_path):
    with pytest.raises(ValueError) as failed:
        Elmo("small-int8")
    message = str(failed.value)
    assert "unknown package 'small-int8'" in message
    assert "Packages by name: default." in message
    assert "hf:owner/repo[@revision]" in message and "ELMO_ONNX_CATALOG" in message and "package folder" in message
    with pytest.raises(FileNotFoundError, match="model package not found: there is no folder ./small-int8"):
        Elmo("./small-int8")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, not a package folder"):
        Elmo(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="write hf:owner/repo or hf:owner/repo@revision"):
        Elmo("hf:just-a-name")


def test_a_local_folder_comes_first(tiny_package, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_package.parent)
    assert resolve_package(tiny_package.name) == Path(tiny_package.name)
    (tmp_path / "default").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no elmo.json"):
        Elmo("./default")  # a folder named like the shipped package is reached as a path


# --- catalog packages -------------------------------------------------------------------------


@pytest.fixture
def published(tiny_package, tmp_path):
    """The tiny package archived, served on 127.0.0.1, and listed in a team catalog."""
    with serving() as server:
        entry = archive_package(
            tiny_package,
            tmp_path / "tiny-fp32.zip",
            url=f"{server.url}/pkgs/tiny-fp32.zip",
            name="tiny-fp32",
            model="tiny",
            description="synthetic weights for tests",
        )
        server.files["/pkgs/tiny-fp32.zip"] = (tmp_path / "tiny-fp32.zip").read_bytes()
        catalog = tmp_path / "team-catalog.json"
        catalog.write_text(json.dumps({"schema_version": 1, "packages": {"tiny-fp32": entry}}))
        yield server, catalog, entry


def test_a_catalog_package_downloads_once_then_works_offline(published, tiny_package, tmp_path, monkeypatch):
    server, catalog, entry = published
    monkeypatch.setenv("ELMO_ONNX_CATALOG", str(catalog))
    got = vectors("tiny-fp32")
    want = vectors(tiny_package)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    packages = tmp_path / "cache" / "packages"
    assert sorted(p.name for p in packages.iterdir()) == [
        ".archives",
        ".tiny-fp32.lock",
        "tiny-fp32",
        "tiny-fp32.source.json",
    ]
    assert not (packages / ".archives" / "tiny-fp32.zip").exists()  # the unpacked package is what is kept
    assert json.loads((packages / "tiny-fp32.source.json").read_text())["sha256"] == entry["sha256"]
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")
    vectors("tiny-fp32")
    assert len(server.requests) == 1
    with pytest.raises(ValueError, match="Packages by name: default, tiny-fp32."):
        Elmo("tiny-int8")


def test_what_a_killed_install_left_goes_at_the_next_install(published, tmp_path, dead_pid):
    server, catalog, entry = published
    packages = tmp_path / "cache" / "packages"
    packages.mkdir(parents=True)
    for suffix in ("download", "old"):  # killed while unpacking; killed between the two renames
        debris = packages / f".tiny-fp32.{dead_pid}.{scratch.HOST_TAG}abcd.{suffix}"
        debris.mkdir()
        (debris / "elmo.json").write_text("{}")
    path = resolve_package("tiny-fp32", catalog=[catalog], progress=False)
    assert path == packages / "tiny-fp32" and (path / "elmo.json").is_file()
    assert sorted(p.name for p in packages.iterdir()) == [
        ".archives",
        ".tiny-fp32.lock",
        "tiny-fp32",
        "tiny-fp32.source.json",
    ]


def test_an_interrupted_download_resumes(published, tmp_path, monkeypatch):
    server, catalog, entry = published
    half = entry["bytes"] // 2
    server.cuts["/pkgs/tiny-fp32.zip"] = [half]
    path = resolve_package("tiny-fp32", catalog=[catalog], progress=False)
    assert [r["range"] for r in server.requests] == [None, f"bytes={half}-"]
    assert (path / "elmo.json").is_file()


def test_a_checksum_mismatch_deletes_the_download_and_names_the_file(published, tmp_path):
    server, catalog, entry = published
    data = json.loads(catalog.read_text())
    data["packages"]["tiny-fp32"]["sha256"] = "0" * 64
    catalog.write_text(json.dumps(data))
    with pytest.raises(DownloadError) as failed:
        resolve_package("tiny-fp32", catalog=[catalog], progress=False)
    message = str(failed.value)
    assert "tiny-fp32.zip" in message and "failed verification and was deleted" in message
    assert "the catalog pins 0000" in message
    packages = tmp_path / "cache" / "packages"
    assert [p.name for p in (packages / ".archives").iterdir()] == []  # no .part, no archive
    assert not (packages / "tiny-fp32").exists()


def test_an_archive_with_a_damaged_file_never_loads(published, tiny_package, tmp_path):
    server, catalog, _ = published
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in tiny_package.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    data = bytearray((damaged / "bilm.onnx.data").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "bilm.onnx.data").write_bytes(bytes(data))
    import zipfile

    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
        for f in damaged.iterdir():
            z.write(f, f.name)
    body = (tmp_path / "bad.zip").read_bytes()
    server.files["/pkgs/bad.zip"] = body
    entry = {
        "model": "tiny",
        "precision": "fp32",
        "url": f"{server.url}/pkgs/bad.zip",
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    catalog.write_text(json.dumps({"schema_version": 1, "packages": {"bad": entry}}))
    with pytest.raises(PackageError, match="'bilm.onnx.data' does not match its sha256"):
        resolve_package("bad", catalog=[catalog], progress=False)
    packages = tmp_path / "cache" / "packages"
    assert sorted(p.name for p in packages.iterdir()) == [".archives", ".bad.lock"]
    assert [p.name for p in (packages / ".archives").iterdir() if ".zip" in p.name] == []


def test_a_corrupted_cached_package_is_caught(published, tmp_path):
    server, catalog, _ = published
    path = resolve_package("tiny-fp32", catalog=[catalog], progress=False)
    data = bytearray((path / "token_embedder.onnx.data").read_bytes())
    data[10] ^= 0x01
    (path / "token_embedder.onnx.data").write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError) as failed:
        resolve_package("tiny-fp32", catalog=[catalog], progress=False)
    assert "token_embedder.onnx.data" in str(failed.value) and "force=True" in str(failed.value)
    assert resolve_package("tiny-fp32", catalog=[catalog], progress=False, force=True) == path
    assert len(server.requests) == 2
    resolve_package("tiny-fp32", catalog=[catalog], progress=False)


def test_offline_with_an_empty_cache_says_what_to_do(published, tmp_path, monkeypatch):
    server, catalog, entry = published
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")
    with pytest.raises(DownloadError) as failed:
        resolve_package("tiny-fp32", catalog=[catalog])
    message = str(failed.value)
    assert "offline mode (ELMO_ONNX_OFFLINE=1)" in message and "not in the cache" in message
    assert entry["url"] in message and "network access" in message and "pass that folder" in message
    assert server.requests == []


def test_catalog_schema_errors_name_the_file_package_and_field(tmp_path):
    good = {"model": "m", "precision": "int8", "url": "https://example.org/m.zip", "bytes": 10, "sha256": "a" * 64}
    cases = [
        ({"default": good}, "package 'default': the name is not allowed"),
        ({"m-int8": {**good, "precision": "int3"}}, "field 'precision' is 'int3', expected one of fp32"),
        ({"m-int8": {**good, "sha256": "abc"}}, "field 'sha256' is 'abc', expected 64 lower-case hex digits"),
        ({"m-int8": {**good, "bytes": "10"}}, "field 'bytes' is '10', expected a positive integer"),
        ({"m-int8": {**good, "url": "s3://b/m.zip"}}, "field 'url' is 's3://b/m.zip', expected an http"),
        ({"m-int8": {k: v for k, v in good.items() if k != "sha256"}}, "missing field(s) 'sha256'"),
        ({"m-int8": {**good, "sha": "x"}}, "unknown field(s) 'sha'"),
    ]
    for packages, message in cases:
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"schema_version": 1, "packages": packages}))
        with pytest.raises(ValueError) as failed:
            load_catalogs([path])
        assert message in str(failed.value) and str(path) in str(failed.value)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    for path in (one, two):
        path.write_text(json.dumps({"schema_version": 1, "packages": {"m-int8": good}}))
    with pytest.raises(ValueError, match="'m-int8' is listed twice"):
        load_catalogs([one, two])


def test_the_project_catalog_lists_only_what_exists():
    # The project publishes no package archive yet: its catalog is empty until one really exists.
    assert load_catalogs() == {}


# --- the Hugging Face Hub ---------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch):
    with serving(HubHandler, HubState()) as state:
        monkeypatch.setenv("HF_ENDPOINT", state.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        yield state


def test_push_then_load_from_the_hub(hub, tiny_package, tmp_path, monkeypatch):
    url = push_to_hub(tiny_package, "team/elmo-tiny", license=SourceLicense("Apache-2.0"))
    files = hub.files("team/elmo-tiny")
    manifest = json.loads((tiny_package / "elmo.json").read_text())
    assert sorted(files) == sorted(["README.md", "elmo.json", *manifest["files"]])
    assert url.startswith(f"{hub.url}/team/elmo-tiny/commit/")
    card = files["README.md"].decode()
    assert "license: apache-2.0" in card and 'Elmo("hf:team/elmo-tiny")' in card
    assert "| warm | 2 |" in card and "Tolerance for fp32" in card and "passed" in card
    assert "2 layers x 2 directions, 64 cells, projection 16" in card

    got = vectors("hf:team/elmo-tiny")
    for a, b in zip(got, vectors(tiny_package)):
        np.testing.assert_array_equal(a, b)
    commit = hub.repos["team/elmo-tiny"]["refs"]["main"]
    assert (tmp_path / "cache" / "packages" / "hf" / "team" / "elmo-tiny" / commit / "elmo.json").is_file()
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")
    assert resolve_package("hf:team/elmo-tiny") == resolve_package(f"hf:team/elmo-tiny@{commit}")


def test_a_hub_repository_without_a_manifest_says_so(hub):
    hub.commit("someone/bert", {"config.json": b"{}"})
    with pytest.raises(PackageError, match="Hub repository someone/bert has no elmo.json: it is not an elmo-onnx"):
        Elmo("hf:someone/bert")
    with pytest.raises(PackageError, match="Hub repository nobody/nothing does not exist"):
        Elmo("hf:nobody/nothing")
    with pytest.raises(PackageError, match="at revision v9: no such revision"):
        Elmo("hf:someone/bert@v9")


def test_a_tampered_hub_file_is_deleted_and_named(hub, tiny_package, tmp_path):
    files = {f.name: f.read_bytes() for f in tiny_package.iterdir()}
    data = bytearray(files["bilm.onnx.data"])
    data[-1] ^= 0xFF
    files["bilm.onnx.data"] = bytes(data)
    hub.commit("evil/elmo", files)
    with pytest.raises(PackageError) as failed:
        Elmo("hf:evil/elmo")
    assert "'bilm.onnx.data' does not match its sha256" in str(failed.value)
    assert "deleted" in str(failed.value)
    assert not (tmp_path / "cache" / "packages" / "hf" / "evil" / "elmo").exists() or not any(
        p for p in (tmp_path / "cache" / "packages" / "hf" / "evil" / "elmo").iterdir() if not p.name.startswith(".")
    )
    blobs = list((tmp_path / "cache" / "hub").rglob("blobs/*"))
    assert hashlib.sha256(files["bilm.onnx.data"]).hexdigest() not in {
        hashlib.sha256(b.read_bytes()).hexdigest() for b in blobs if b.is_file()
    }


def test_the_hub_offline_with_an_empty_cache_says_what_to_do(hub, monkeypatch):
    hub.commit("team/elmo", {"elmo.json": b"{}"})
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline mode .*not in the cache.*network access"):
        Elmo("hf:team/elmo")
    assert [r for r in hub.requests if "/resolve/" in r[1]] == []


def test_elmo_export_pushes_to_the_hub(hub, tiny_weights, tmp_path):
    from elmo_export.cli import main

    options, _ = tiny_weights
    out = tmp_path / "pkg"
    assert (
        main(
            [
                str(Path(options).parent),
                "-o",
                str(out),
                "--quantize",
                "int8",
                "--no-progress",
                "-q",
                "--push-to-hub",
                "team/tiny-int8",
                "--license",
                "Apache-2.0",
            ]
        )
        == 0
    )
    files = hub.files("team/tiny-int8")
    assert files["elmo.json"] == (out / "elmo.json").read_bytes()
    card = files["README.md"].decode()
    assert "(int8)" in card and "Tolerance for int8: mean_cosine >= 0.99: passed." in card
    resolve_package("hf:team/tiny-int8")

    # Without a licence, and none to be found beside the weights: refused before exporting.
    assert main([str(Path(options).parent), "-o", str(tmp_path / "other"), "-q", "--push-to-hub", "team/other"]) == 2
    assert not (tmp_path / "other").exists()
