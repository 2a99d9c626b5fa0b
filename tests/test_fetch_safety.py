"""Catalog downloads against servers that misbehave, and caches shared by several processes.

Every server is a real HTTP server on 127.0.0.1 (`tests/http_server.py`, with extra routes
here): an endless body, a drip of one byte at a time, an announced length other than the
catalog's. Several real processes load one package into one cache at once. Installed packages
get the umask's modes and only the files their manifest lists.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from http_server import Handler, ServerState, serving

from elmo_export.publish import archive_package
from elmo_runtime.fetch import download
from elmo_runtime.fetch.download import DownloadError
from elmo_runtime.fetch.resolve import resolve_package
from elmo_runtime.package import PackageError, load_manifest

REPO = Path(__file__).resolve().parents[1]
NAME = "tiny-fp32"
STALL_ENV = "ELMO_ONNX_STALL_TIMEOUT"
ENDLESS_CAP = 64 << 20  # the endless route stops here, so that a client that never stops ends too
DRIP_SECONDS = 0.2


class MisbehavingState(ServerState):
    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, int] = {}  # route -> body bytes written before the client went away
        self.drip_total = 0
        self.slow_chunks = False


class MisbehavingHandler(Handler):
    """`/endless/*`: 200 with no length, zeros until the client leaves; `/chunked/*`: the same
    chunked; `/drip/*`: the right length announced, one byte every DRIP_SECONDS. Other paths are
    the plain server's, sent in small slow chunks when `slow_chunks` (to make downloads overlap)."""

    def do_GET(self) -> None:  # noqa: N802
        state: MisbehavingState = self.server.state  # type: ignore[attr-defined]
        kind = self.path.split("/")[1]
        if kind not in ("endless", "chunked", "drip"):
            if state.slow_chunks and self.path in state.files:
                with state.lock:
                    state.requests.append({"path": self.path, "range": self.headers.get("Range"), "if_range": None})
                body = state.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(0, len(body), 64 << 10):
                    self.wfile.write(body[i : i + (64 << 10)])
                    time.sleep(0.01)
                return
            return super().do_GET()
        with state.lock:
            state.requests.append({"path": self.path, "range": self.headers.get("Range"), "if_range": None})
        self.send_response(200)
        if kind == "drip":
            self.send_header("Content-Length", str(state.drip_total))
        elif kind == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        sent, block = 0, bytes(1 << 16)
        try:
            if kind == "drip":
                for _ in range(int(20 / DRIP_SECONDS)):  # at most 20 s: an old client ends too
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    sent += 1
                    time.sleep(DRIP_SECONDS)
            while kind != "drip" and sent < ENDLESS_CAP:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if kind == "chunked" else block)
                sent += len(block)
        except OSError:
            pass  # the client went away: what we want
        finally:
            state.sent[self.path] = sent
            self.close_connection = True


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "cache"))
    for name in ("ELMO_ONNX_OFFLINE", "ELMO_ONNX_CATALOG", "XDG_CACHE_HOME", STALL_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)


@pytest.fixture
def server():
    with serving(MisbehavingHandler, MisbehavingState()) as state:
        yield state


@pytest.fixture
def archived(tiny_package, tmp_path) -> tuple[bytes, dict]:
    """The tiny package as a catalog archive: its bytes and its catalog entry (URL to be set)."""
    path = tmp_path / "archive.zip"
    entry = archive_package(tiny_package, path, url="http://127.0.0.1/x.zip", name=NAME, model="tiny")
    return path.read_bytes(), entry


def write_catalog(tmp_path: Path, entry: dict, url: str) -> Path:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"schema_version": 1, "packages": {NAME: {**entry, "url": url}}}))
    return catalog


def archives_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "packages" / ".archives"


# --- M4: the catalog's size is enforced during the transfer; a stalled transfer ends --------


@pytest.mark.parametrize("route", ["endless", "chunked"])
def test_an_endless_body_stops_at_the_catalogs_size_and_leaves_nothing(server, archived, tmp_path, route):
    data, entry = archived
    url = f"{server.url}/{route}/{NAME}.zip"
    catalog = write_catalog(tmp_path, entry, url)
    started = time.monotonic()
    with pytest.raises(DownloadError) as failed:
        resolve_package(NAME, catalog=[catalog], progress=False)
    message = str(failed.value)
    assert f"download of {url} failed: the server sent more than the {entry['bytes']} bytes expected" in message
    assert "\n" not in message and time.monotonic() - started < 10
    time.sleep(0.2)  # the handler records what it sent once the client is gone
    # Read by chunks of at most 1 MiB (plus what the socket buffers held): far below the endless cap.
    assert server.sent[f"/{route}/{NAME}.zip"] < entry["bytes"] + (8 << 20)
    assert list(archives_dir(tmp_path).iterdir()) == []  # no .part, no archive
    assert not (tmp_path / "cache" / "packages" / NAME).exists()


def test_an_announced_length_other_than_the_catalogs_is_refused_before_the_body(server, archived, tmp_path):
    data, entry = archived
    server.files[f"/pkgs/{NAME}.zip"] = data + bytes(1 << 20)  # honest Content-Length, not the catalog's
    catalog = write_catalog(tmp_path, entry, f"{server.url}/pkgs/{NAME}.zip")
    with pytest.raises(
        DownloadError,
        match=f"the server announces {len(data) + (1 << 20)} bytes, the catalog "
        f"says {entry['bytes']}; the partial file was deleted",
    ):
        resolve_package(NAME, catalog=[catalog], progress=False)
    assert list(archives_dir(tmp_path).iterdir()) == []


def test_a_dripping_server_ends_in_a_stall_error_naming_the_url(server, archived, tmp_path):
    data, entry = archived
    server.drip_total = entry["bytes"]
    url = f"{server.url}/drip/{NAME}.zip"
    catalog = write_catalog(tmp_path, entry, url)
    code = (
        "import sys; from elmo_runtime.fetch.resolve import resolve_package\n"
        "try:\n    resolve_package(sys.argv[1], catalog=[sys.argv[2]], progress=False)\n"
        "except Exception as e:\n    print(type(e).__name__, e); sys.exit(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), STALL_ENV: "1"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, NAME, str(catalog)], capture_output=True, text=True, timeout=30, env=env
    )
    seconds = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert f"DownloadError download of {url} failed: the transfer stalled after " in done.stdout
    assert f"per {STALL_ENV} seconds) (3 attempt(s)); the partial file was deleted" in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1
    assert seconds < 15  # 3 attempts of about 1 s each, plus the start of Python
    assert not (tmp_path / "cache" / "packages" / NAME).exists()  # nothing under the final name
    assert [p.name for p in archives_dir(tmp_path).iterdir() if ".zip" in p.name] == []  # no .part kept


def test_a_server_that_goes_silent_ends_in_a_stall_error_and_keeps_nothing(archived, tmp_path, monkeypatch):
    import socket
    import threading

    data, entry = archived
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def answer_then_hang():  # headers and a first block, then nothing, connection kept open
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data[:4096])

    threading.Thread(target=answer_then_hang, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/{NAME}.zip"
    catalog = write_catalog(tmp_path, entry, url)
    monkeypatch.setenv(STALL_ENV, "0.5")
    started = time.monotonic()
    try:
        with pytest.raises(
            DownloadError,
            match=f"download of {url} failed: the transfer stalled after 4096 bytes: "
            r"the server stopped sending \(3 attempt\(s\)\); the partial file",
        ):
            resolve_package(NAME, catalog=[catalog], progress=False)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert time.monotonic() - started < 5  # 3 silent attempts of 0.5 s, not the 60 s read timeout
    assert [p.name for p in archives_dir(tmp_path).iterdir() if ".zip" in p.name] == []


def test_the_stall_timeout_must_be_a_positive_number(monkeypatch):
    monkeypatch.setenv(STALL_ENV, "0")
    with pytest.raises(ValueError, match="ELMO_ONNX_STALL_TIMEOUT='0' is not a positive number of seconds"):
        download.stall_timeout()
    monkeypatch.setenv(STALL_ENV, "2.5")
    assert download.stall_timeout() == 2.5


# --- M5: processes loading one package into one cache at once all succeed ------------------

RACER = """
import sys, time
from pathlib import Path
from elmo_runtime.fetch.resolve import resolve_package
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.005)
try:
    print(resolve_package(sys.argv[1], catalog=[sys.argv[2]], progress=False))
except Exception as e:
    print("FAIL", type(e).__name__, e)
    sys.exit(1)
"""


def test_concurrent_processes_loading_one_package_all_succeed_with_one_download(server, archived, tmp_path):
    data, entry = archived
    server.files[f"/pkgs/{NAME}.zip"] = data
    server.slow_chunks = True  # each download takes a while: the processes overlap
    catalog = write_catalog(tmp_path, entry, f"{server.url}/pkgs/{NAME}.zip")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, NAME, str(catalog), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(6)
    ]
    time.sleep(3)  # every racer has imported and waits for the start
    go.touch()
    results = [r.communicate(timeout=120) for r in racers]
    failures = [out + err for r, (out, err) in zip(racers, results) if r.returncode != 0]
    assert failures == []
    final = tmp_path / "cache" / "packages" / NAME
    assert {out.strip() for out, _ in results} == {str(final)}
    assert len(server.seen(f"/pkgs/{NAME}.zip")) == 1  # one process downloaded, the others found it installed
    load_manifest(final, verify_files=True)
    packages = final.parent
    assert sorted(p.name for p in packages.iterdir()) == [".archives", f".{NAME}.lock", NAME, f"{NAME}.source.json"]
    assert [p.name for p in archives_dir(tmp_path).iterdir() if ".zip" in p.name] == []  # no archive, no .part


# --- L6, L7: what an installed package holds, with which modes -----------------------------


def crafted_archive(tiny_package: Path, extra: dict[str, bytes]) -> bytes:
    """The tiny package zipped with `extra` members added or replacing its own."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in sorted(tiny_package.iterdir()):
            if f.name not in extra:
                z.write(f, f.name)
        for name, body in extra.items():
            z.writestr(name, body)
    return buffer.getvalue()


def serve_crafted(server, tmp_path: Path, body: bytes) -> Path:
    server.files[f"/pkgs/{NAME}.zip"] = body
    entry = {"model": "tiny", "precision": "fp32", "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    return write_catalog(tmp_path, entry, f"{server.url}/pkgs/{NAME}.zip")


def test_only_the_files_the_manifest_lists_are_installed(server, tiny_package, tmp_path):
    catalog = serve_crafted(server, tmp_path, crafted_archive(tiny_package, {"junk.bin": bytes(32 << 20)}))
    final = resolve_package(NAME, catalog=[catalog], progress=False)
    assert sorted(p.name for p in final.iterdir()) == sorted(p.name for p in tiny_package.iterdir())
    assert not (final / "junk.bin").exists()


def test_a_listed_member_of_another_size_is_refused_before_it_is_written(server, tiny_package, tmp_path):
    listed = (tiny_package / "bilm.onnx.data").stat().st_size
    catalog = serve_crafted(server, tmp_path, crafted_archive(tiny_package, {"bilm.onnx.data": bytes(64 << 20)}))
    with pytest.raises(PackageError, match=f"member 'bilm.onnx.data' has {64 << 20} bytes, its manifest says {listed}"):
        resolve_package(NAME, catalog=[catalog], progress=False)
    packages = tmp_path / "cache" / "packages"
    assert sorted(p.name for p in packages.iterdir()) == [".archives", f".{NAME}.lock"]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_an_installed_package_has_the_modes_of_the_umask(server, archived, tmp_path, umask):
    data, entry = archived
    server.files[f"/pkgs/{NAME}.zip"] = data
    catalog = write_catalog(tmp_path, entry, f"{server.url}/pkgs/{NAME}.zip")
    old = os.umask(umask)
    try:
        final = resolve_package(NAME, catalog=[catalog], progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(f.stat().st_mode) for f in final.iterdir()} == {0o666 & ~umask}


def test_a_hub_package_has_the_modes_of_the_umask(tiny_package, tmp_path, monkeypatch):
    from hub_server import HubHandler, HubState

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with serving(HubHandler, HubState()) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        hub.commit("team/tiny", {f.name: f.read_bytes() for f in tiny_package.iterdir()})
        old = os.umask(0o022)
        try:
            final = resolve_package("hf:team/tiny", progress=False)
        finally:
            os.umask(old)
    assert stat.S_IMODE(final.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in final.iterdir()} == {0o644}
