"""The model catalog and the download path, end to end against a local HTTP server.

The server (`tests/http_server.py`: stdlib `http.server` on 127.0.0.1) serves the synthetic
`tiny` model and can misbehave on demand: cut a response short, ignore `Range`, answer an error
status, or serve damaged weights. A catalog entry points the download at it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from http_server import serving

from elmo_export.architectures import ARCHITECTURES
from elmo_export.model import ElmoOptions
from elmo_export.sources.official import (
    CatalogModel,
    default_cache_dir,
    fetch_model,
    get_model,
    load_catalog,
    parse_catalog,
)
from elmo_runtime.fetch import download
from elmo_runtime.fetch.download import CorruptCacheError, DownloadError, offline_mode

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = ["small", "medium", "original", "original-5.5b"]


@pytest.fixture
def server():
    with serving() as state:
        yield state


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No retry delays, no inherited cache or offline settings, and a home that is a temp dir."""
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    for name in (download.ENV_CACHE, download.ENV_OFFLINE, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def source(tiny_weights) -> dict[str, bytes]:
    options_path, weights_path = tiny_weights
    return {"options": Path(options_path).read_bytes(), "weights": Path(weights_path).read_bytes()}


def tiny_entry(url: str, **overrides) -> CatalogModel:
    """A catalog entry for the synthetic tiny model, served from `url`."""
    options = ElmoOptions.from_dict(ARCHITECTURES["tiny"])
    data = {
        "allennlp_name": "tiny",
        "description": "synthetic weights for tests",
        "options_url": f"{url}/tiny/options.json",
        "weights_url": f"{url}/tiny/weights.hdf5",
        "architecture": {
            "lstm_dim": options.dim,
            "projection_dim": options.projection_dim,
            "n_layers": options.n_layers,
            "n_highway": options.n_highway,
            "cnn_filters": options.n_filters,
        },
        "parameters_millions": 0.1,
        "training_data": "none: seeded random weights",
        "license": "Apache-2.0",
        "homepage": url,
    }
    for key, value in overrides.items():
        if key in data["architecture"]:
            data["architecture"][key] = value
        else:
            data[key] = value
    return parse_catalog({"schema_version": 1, "models": {"tiny": data}}, source="test catalog")["tiny"]


@pytest.fixture
def served(server, source):
    """The server holding the tiny model, and its catalog entry."""
    server.files["/tiny/options.json"] = source["options"]
    server.files["/tiny/weights.hdf5"] = source["weights"]
    return server, tiny_entry(server.url)


def fetch(entry: CatalogModel, cache: Path, **kwargs) -> tuple[Path, Path]:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("timeout_s", 5.0)
    return fetch_model("tiny", cache, catalog={"tiny": entry}, **kwargs)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- downloads --------------------------------------------------------------------------------


def test_clean_download_then_reuse_without_network(served, source, tmp_path):
    server, entry = served
    cache = tmp_path / "cache"
    options_path, weights_path = fetch(entry, cache)

    assert options_path == cache / "tiny" / "options.json"
    assert weights_path == cache / "tiny" / "weights.hdf5"
    assert options_path.read_bytes() == source["options"]
    assert weights_path.read_bytes() == source["weights"]
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == ["options.json", "sha256.json", "weights.hdf5"]
    record = json.loads((cache / "tiny" / "sha256.json").read_text())
    assert record["options.json"] == {
        "url": entry.options_url,
        "size": len(source["options"]),
        "sha256": sha(source["options"]),
    }
    assert record["weights.hdf5"] == {
        "url": entry.weights_url,
        "size": len(source["weights"]),
        "sha256": sha(source["weights"]),
    }
    assert [r["range"] for r in server.requests] == [None, None]

    # Reuse: verified against the record, no request made; offline works the same.
    assert fetch(entry, cache) == (options_path, weights_path)
    assert fetch(entry, cache, offline=True) == (options_path, weights_path)
    assert len(server.requests) == 2


def test_interrupted_transfer_resumes_with_a_range_request(served, source, tmp_path):
    server, entry = served
    half = len(source["weights"]) // 2
    server.cuts["/tiny/weights.hdf5"] = [half]
    cache = tmp_path / "cache"
    final = cache / "tiny" / "weights.hdf5"

    with pytest.raises(DownloadError) as failed:
        fetch(entry, cache, retries=1)
    message = str(failed.value)
    assert entry.weights_url in message
    assert "resumes" in message and "--options" in message and "--weights" in message
    assert not final.exists()  # never a partial file under the final name
    part = final.with_name("weights.hdf5.part")
    assert part.read_bytes() == source["weights"][:half]

    fetch(entry, cache, retries=1)
    requests = server.seen("/tiny/weights.hdf5")
    assert [r["range"] for r in requests] == [None, f"bytes={half}-"]
    assert requests[1]["if_range"] == server.etag("/tiny/weights.hdf5")
    assert final.read_bytes() == source["weights"]
    assert not part.exists() and not final.with_name("weights.hdf5.part.json").exists()
    # Resuming did not download the options again: they were complete and recorded.
    assert len(server.seen("/tiny/options.json")) == 1


def test_interrupted_transfer_is_retried_within_one_call(served, source, tmp_path):
    server, entry = served
    cut = len(source["weights"]) // 3
    server.cuts["/tiny/weights.hdf5"] = [cut, cut]  # two cuts: the third attempt completes
    _, weights_path = fetch(entry, tmp_path / "cache", progress=True, retries=3)
    assert [r["range"] for r in server.seen("/tiny/weights.hdf5")] == [None, f"bytes={cut}-", f"bytes={2 * cut}-"]
    assert weights_path.read_bytes() == source["weights"]


def test_server_ignoring_range_still_gives_the_right_file(served, source, tmp_path):
    server, entry = served
    server.ignore_range = True
    half = len(source["weights"]) // 2
    server.cuts["/tiny/weights.hdf5"] = [half]
    _, weights_path = fetch(entry, tmp_path / "cache", retries=2)
    # The client asked to resume, the server answered 200 with everything: restart, not append.
    assert [r["range"] for r in server.seen("/tiny/weights.hdf5")] == [None, f"bytes={half}-"]
    assert weights_path.read_bytes() == source["weights"]


def test_a_changed_file_on_the_server_restarts_the_download(served, source, tmp_path):
    server, entry = served
    half = len(source["weights"]) // 2
    server.cuts["/tiny/weights.hdf5"] = [half]
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError):
        fetch(entry, cache, retries=1)
    # The server's file changes (another valid weights file): If-Range no longer matches.
    other = tmp_path / "other"
    from elmo_export.synthetic import write_synthetic

    _, other_weights = write_synthetic("tiny", other, seed=1)
    new = other_weights.read_bytes()
    assert new != source["weights"]
    server.files["/tiny/weights.hdf5"] = new
    _, weights_path = fetch(entry, cache, retries=1)
    assert weights_path.read_bytes() == new


def test_a_complete_part_file_is_finished_without_downloading_again(served, source, tmp_path):
    server, entry = served
    cache = tmp_path / "cache"
    # As if a crash came after the last byte and before the rename.
    half = len(source["weights"]) // 2
    server.cuts["/tiny/weights.hdf5"] = [half]
    with pytest.raises(DownloadError):
        fetch(entry, cache, retries=1)
    part = cache / "tiny" / "weights.hdf5.part"
    part.write_bytes(source["weights"])
    _, weights_path = fetch(entry, cache, retries=1)
    assert server.seen("/tiny/weights.hdf5")[-1]["range"] == f"bytes={len(source['weights'])}-"  # answered 416
    assert weights_path.read_bytes() == source["weights"]


def test_corrupted_cache_file_is_detected_and_left_alone(served, source, tmp_path):
    server, entry = served
    cache = tmp_path / "cache"
    _, weights_path = fetch(entry, cache)
    damaged = bytearray(source["weights"])
    damaged[len(damaged) // 2] ^= 0xFF
    weights_path.write_bytes(bytes(damaged))

    with pytest.raises(CorruptCacheError) as failed:
        fetch(entry, cache)
    message = str(failed.value)
    assert str(weights_path) in message and "corrupt" in message
    assert sha(bytes(damaged)) in message and sha(source["weights"]) in message
    assert "force=True" in message
    assert weights_path.read_bytes() == bytes(damaged)  # not overwritten behind the user's back
    assert len(server.requests) == 2

    fetch(entry, cache, force=True)
    assert weights_path.read_bytes() == source["weights"]
    assert len(server.seen("/tiny/weights.hdf5")) == 2


def test_unrecorded_unpinned_files_are_checked_and_used_but_never_recorded(served, source, tmp_path):
    server, entry = served
    cache = tmp_path / "cache"
    fetch(entry, cache)
    (cache / "tiny" / "sha256.json").unlink()  # lost: as good as files put there by hand
    fetch(entry, cache)
    assert len(server.requests) == 2  # nothing downloaded again
    # Nothing pins these files: a record rebuilt now would vouch for whatever the cache holds.
    assert not (cache / "tiny" / "sha256.json").exists()

    (cache / "tiny" / "weights.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CorruptCacheError, match="not usable"):
        fetch(entry, cache)


def test_a_garbled_record_is_not_rebuilt_from_the_cache(served, source, tmp_path):
    """Reliability probe L9: a flipped byte plus a garbled sha256.json must not pass as verified."""
    server, entry = served
    cache = tmp_path / "cache"
    _, weights_path = fetch(entry, cache)
    damaged = bytearray(source["weights"])
    damaged[-100] ^= 0x01  # in the data: the file's structure still checks out
    weights_path.write_bytes(bytes(damaged))
    (cache / "tiny" / "sha256.json").write_text("{garbage")
    with pytest.raises(CorruptCacheError) as failed:
        fetch(entry, cache)
    message = str(failed.value)
    assert "cannot be trusted" in message and "sha256.json" in message and "is damaged" in message
    assert "force=True" in message
    assert (cache / "tiny" / "sha256.json").read_text() == "{garbage"  # left as it was

    # With the digests pinned, the pins decide: the damaged file is caught, the record rewritten.
    pinned = tiny_entry(server.url, options_sha256=sha(source["options"]), weights_sha256=sha(source["weights"]))
    with pytest.raises(CorruptCacheError, match="the catalog pins"):
        fetch(pinned, cache)
    assert json.loads((cache / "tiny" / "sha256.json").read_text())["options.json"]["sha256"] == sha(source["options"])
    weights_path.write_bytes(source["weights"])
    assert fetch(pinned, cache)[1] == weights_path
    assert len(server.requests) == 2


def test_a_read_only_cache_filled_by_hand_works_offline(source, tmp_path, monkeypatch):
    """Reliability probe L4: nothing may need writing to use files put in the cache by hand."""
    cache = tmp_path / "cache"
    (cache / "tiny").mkdir(parents=True)
    (cache / "tiny" / "options.json").write_bytes(source["options"])
    (cache / "tiny" / "weights.hdf5").write_bytes(source["weights"])
    real_write_text, real_replace = Path.write_text, download.os.replace

    def refuse(path) -> None:
        if str(path).startswith(str(cache)):
            raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: refuse(self) or real_write_text(self, *a, **k))
    monkeypatch.setattr(download.os, "replace", lambda a, b: refuse(b) or real_replace(a, b))
    entry = tiny_entry("http://127.0.0.1:9")  # nothing listens there: offline must not ask
    assert fetch(entry, cache, offline=True) == (cache / "tiny" / "options.json", cache / "tiny" / "weights.hdf5")
    # Pinned: verified against the pins; the record cannot be written, which is only a warning.
    pinned = tiny_entry(
        "http://127.0.0.1:9", options_sha256=sha(source["options"]), weights_sha256=sha(source["weights"])
    )
    assert fetch(pinned, cache, offline=True)[1] == cache / "tiny" / "weights.hdf5"
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == ["options.json", "weights.hdf5"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_bad_weights_fail_verification_and_leave_nothing(served, source, tmp_path, damage):
    server, entry = served
    weights = source["weights"]
    if damage == "truncated":
        bad = weights[: len(weights) // 2]
    else:
        bad = np.random.default_rng(0).integers(0, 256, len(weights), dtype=np.uint8).tobytes()
    server.files["/tiny/weights.hdf5"] = bad  # served whole: only verification can tell
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="failed verification") as failed:
        fetch(entry, cache)
    assert entry.weights_url in str(failed.value)
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == ["options.json", "sha256.json"]


def test_weights_of_another_architecture_fail_verification(served, source, tmp_path):
    server, entry = served
    from elmo_export.weights import WeightFileError

    options = json.loads(source["options"])
    options["lstm"]["projection_dim"] = 8  # the options match the weights no longer
    server.files["/tiny/options.json"] = json.dumps(options).encode()
    entry = tiny_entry(server.url, projection_dim=8)
    with pytest.raises(DownloadError, match="projection|shape") as failed:
        fetch(entry, tmp_path / "cache")
    assert isinstance(failed.value.__cause__, WeightFileError)
    assert not (tmp_path / "cache" / "tiny" / "weights.hdf5").exists()


def test_options_not_matching_the_catalog_are_rejected(served, tmp_path):
    server, _ = served
    entry = tiny_entry(server.url, lstm_dim=4096)
    with pytest.raises(DownloadError, match="lstm_dim is 64 in the options, 4096 in the catalog"):
        fetch(entry, tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny" / "options.json").exists()
    assert server.seen("/tiny/weights.hdf5") == []


def test_pinned_sha256_must_match(served, source, tmp_path):
    server, _ = served
    good = tiny_entry(server.url, options_sha256=sha(source["options"]), weights_sha256=sha(source["weights"]))
    fetch(good, tmp_path / "good")
    wrong = tiny_entry(server.url, weights_sha256="0" * 64)
    with pytest.raises(DownloadError, match="the catalog pins 0000"):
        fetch(wrong, tmp_path / "wrong")
    assert not (tmp_path / "wrong" / "tiny" / "weights.hdf5").exists()


def test_offline_mode_with_an_empty_cache_says_what_to_do(served, tmp_path, monkeypatch):
    server, entry = served
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "1")
    with pytest.raises(DownloadError) as failed:
        fetch(entry, tmp_path / "cache")
    message = str(failed.value)
    assert "offline mode (ELMO_ONNX_OFFLINE=1)" in message
    assert entry.options_url in message and "not in the cache" in message
    assert "--options" in message and "--weights" in message
    assert server.requests == []


def test_offline_env_values(monkeypatch):
    for value, expected in [("1", True), ("true", True), ("ON", True), ("0", False), ("", False), ("no", False)]:
        monkeypatch.setenv("ELMO_ONNX_OFFLINE", value)
        assert offline_mode() is expected
    monkeypatch.setenv("ELMO_ONNX_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="ELMO_ONNX_OFFLINE='maybe'"):
        offline_mode()


def test_unreachable_server_gives_a_clear_error(source, tmp_path):
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = tiny_entry(f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as failed:
        fetch(entry, tmp_path / "cache", retries=2)
    message = str(failed.value)
    assert f"download of {entry.options_url} failed after 2 attempt(s)" in message
    assert "Connection" in message or "refused" in message
    assert "elmo-export --options" in message
    assert not (tmp_path / "cache" / "tiny" / "options.json").exists()


def test_http_errors_final_and_transient(served, source, tmp_path):
    server, entry = served
    server.statuses["/tiny/options.json"] = [503, 503]  # transient: retried
    options_path, _ = fetch(entry, tmp_path / "a", retries=3)
    assert len(server.seen("/tiny/options.json")) == 3
    assert options_path.read_bytes() == source["options"]

    missing = tiny_entry(server.url, weights_url=f"{server.url}/nowhere.hdf5")
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(missing, tmp_path / "b", retries=3)
    assert len(server.seen("/nowhere.hdf5")) == 1  # final: not retried


def test_cache_location(served, source, tmp_path, monkeypatch):
    server, entry = served
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "elmo-onnx" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "elmo-onnx" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "elmo-onnx" / "models"
    monkeypatch.setenv("ELMO_ONNX_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env" / "models"

    options_path, weights_path = fetch_model("tiny", catalog={"tiny": entry}, progress=False)
    assert weights_path == tmp_path / "env" / "models" / "tiny" / "weights.hdf5"
    assert weights_path.read_bytes() == source["weights"]
    # The argument wins over the environment.
    _, elsewhere = fetch(entry, tmp_path / "arg")
    assert elsewhere == tmp_path / "arg" / "tiny" / "weights.hdf5"


def test_catalog_given_as_a_file_and_an_entry(served, source, tmp_path):
    server, entry = served
    path = tmp_path / "catalog.json"
    data = {"schema_version": 1, "models": {"tiny": json.loads(json.dumps(_as_json(entry)))}}
    path.write_text(json.dumps(data))
    _, weights = fetch_model("tiny", tmp_path / "c1", catalog=path, progress=False)
    assert weights.read_bytes() == source["weights"]
    _, weights = fetch_model(entry, tmp_path / "c2", progress=False)
    assert weights.read_bytes() == source["weights"]


def _as_json(entry: CatalogModel) -> dict:
    from dataclasses import asdict

    data = asdict(entry)
    del data["name"]
    return {k: v for k, v in data.items() if v is not None}


def test_unknown_model_lists_the_known_names(tmp_path):
    with pytest.raises(ValueError) as failed:
        fetch_model("large", tmp_path, progress=False)
    assert str(failed.value) == "unknown model 'large'; known models: small, medium, original, original-5.5b"
    with pytest.raises(ValueError, match="unknown model 'small'; known models: tiny"):
        fetch_model("small", tmp_path, catalog={"tiny": tiny_entry("http://127.0.0.1:9")})


# --- the catalog ------------------------------------------------------------------------------


def test_shipped_catalog_lists_the_official_models():
    catalog = load_catalog()
    assert list(catalog) == OFFICIAL
    summary = {
        name: (
            m.architecture.lstm_dim,
            m.architecture.projection_dim,
            m.architecture.n_layers,
            m.architecture.n_highway,
            m.architecture.cnn_filters,
            m.parameters_millions,
        )
        for name, m in catalog.items()
    }
    assert summary == {
        "small": (1024, 128, 2, 1, 2048, 13.6),
        "medium": (2048, 256, 2, 1, 2048, 28.0),
        "original": (4096, 512, 2, 2, 2048, 93.6),
        "original-5.5b": (4096, 512, 2, 2, 2048, 93.6),
    }
    assert get_model("original").architecture.output_dim == 1024
    assert get_model("original-5.5b").allennlp_name == "2x4096_512_2048cnn_2xhighway_5.5B"
    for m in catalog.values():
        base = f"https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/{m.allennlp_name}/elmo_{m.allennlp_name}"
        assert m.options_url == base + "_options.json"
        assert m.weights_url == base + "_weights.hdf5"
        assert m.license == "Apache-2.0"
    assert "1 Billion Word Benchmark" in catalog["original"].training_data
    assert "Wikipedia" in catalog["original-5.5b"].training_data


def test_catalog_agrees_with_the_synthetic_presets():
    # The presets are written from AllenNLP's option files: sizes and shapes must agree.
    for name in ("small", "medium", "original"):
        model, options = get_model(name), ElmoOptions.from_dict(ARCHITECTURES[name])
        assert model.architecture.mismatches(options) == []
        assert round(options.parameter_count() / 1e6, 1) == model.parameters_millions


def test_shipped_catalog_file_is_the_one_in_the_repository():
    from elmo_export.sources.official import default_catalog_path

    assert default_catalog_path() == REPO / "models" / "catalog.json"
    assert json.loads(default_catalog_path().read_text())["schema_version"] == 1


def _shipped() -> dict:
    return json.loads((REPO / "models" / "catalog.json").read_text())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["models"]["medium"].pop("weights_url"), "model 'medium': missing field 'weights_url'"),
        (
            lambda d: d["models"]["small"]["architecture"].update(lstm_dim="1024"),
            "model 'small': field 'architecture.lstm_dim' is '1024' (str), expected an integer",
        ),
        (
            lambda d: d["models"]["small"]["architecture"].update(n_highway=True),
            "model 'small': field 'architecture.n_highway' is True (bool), expected an integer",
        ),
        (
            lambda d: d["models"]["small"]["architecture"].update(n_layers=0),
            "model 'small': field 'architecture.n_layers' is 0 (int), expected at least 1",
        ),
        (
            lambda d: d["models"]["original"].update(parameters_millions="93.6M"),
            "model 'original': field 'parameters_millions' is '93.6M' (str), expected a number",
        ),
        (lambda d: d["models"]["original"].update(licence="MIT"), "model 'original': unknown field(s) 'licence'"),
        (
            lambda d: d["models"]["small"].update(options_url="s3://allennlp/x.json"),
            "model 'small': field 'options_url' is 's3://allennlp/x.json' (str), expected an http:// or https:// URL",
        ),
        (lambda d: d["models"]["small"].update(weights_sha256="abc"), "expected 64 lower-case hex digits"),
        (
            lambda d: d["models"]["small"].update(description=""),
            "field 'description' is '' (str), expected a non-empty",
        ),
        (lambda d: d["models"]["small"].update(architecture=[1024]), "model 'small': architecture is list"),
        (lambda d: d["models"].update({"../evil": d["models"]["small"]}), "model name '../evil' is not allowed"),
        (lambda d: d.update(schema_version=2), "schema_version 2 is not supported"),
        (lambda d: d.pop("schema_version"), "missing field 'schema_version'"),
        (lambda d: d.update(models={}), "expected a non-empty object of models"),
    ],
)
def test_catalog_schema_errors_name_the_model_and_field(change, message):
    data = _shipped()
    assert parse_catalog(data, source="cat.json")  # the unchanged catalog passes
    change(data)
    with pytest.raises(ValueError) as failed:
        parse_catalog(data, source="cat.json")
    assert message in str(failed.value)
    assert str(failed.value).startswith("cat.json: ")


def test_load_catalog_errors_name_the_file(tmp_path):
    bad = tmp_path / "catalog.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_catalog(bad)
    with pytest.raises(FileNotFoundError, match="catalog file not found"):
        load_catalog(tmp_path / "missing.json")


def test_a_shipped_catalog_copy_loads_from_a_path(tmp_path):
    copy = tmp_path / "catalog.json"
    shutil.copy(REPO / "models" / "catalog.json", copy)
    assert load_catalog(copy) == load_catalog()
