"""Official models' files come from AllenNLP's S3, else from the mirrors the catalog lists, in order.

Two real HTTP servers on 127.0.0.1 stand for S3 and for the Hugging Face Hub mirror: the first
answers 404, hangs up mid-body or serves damaged weights, the second serves the right files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from http_server import serving

from elmo_export.architectures import ARCHITECTURES
from elmo_export.model import ElmoOptions
from elmo_export.sources.official import CatalogModel, fetch_model, get_model, parse_catalog
from elmo_runtime.fetch import download
from elmo_runtime.fetch.download import DownloadError


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    for name in (download.ENV_CACHE, download.ENV_OFFLINE, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def servers(tiny_weights):
    """(primary, mirror): both serve the tiny model's files under /tiny/."""
    options, weights = (Path(p).read_bytes() for p in tiny_weights)
    with serving() as primary, serving() as mirror:
        for server in (primary, mirror):
            server.files["/tiny/options.json"] = options
            server.files["/tiny/weights.hdf5"] = weights
        yield primary, mirror


def entry(primary: str, mirror: str) -> CatalogModel:
    o = ElmoOptions.from_dict(ARCHITECTURES["tiny"])
    return parse_catalog(
        {
            "schema_version": 1,
            "models": {
                "tiny": {
                    "allennlp_name": "tiny",
                    "description": "synthetic weights for tests",
                    "options_url": f"{primary}/tiny/options.json",
                    "weights_url": f"{primary}/tiny/weights.hdf5",
                    "architecture": {
                        "lstm_dim": o.dim,
                        "projection_dim": o.projection_dim,
                        "n_layers": o.n_layers,
                        "n_highway": o.n_highway,
                        "cnn_filters": o.n_filters,
                    },
                    "parameters_millions": 0.1,
                    "training_data": "none",
                    "license": "Apache-2.0",
                    "homepage": "https://example.org",
                    "mirrors": [
                        {
                            "options_url": f"{mirror}/tiny/options.json",
                            "weights_url": f"{mirror}/tiny/weights.hdf5",
                            "note": "a stand-in for the Hub",
                        }
                    ],
                }
            },
        }
    )["tiny"]


def test_a_missing_file_on_the_primary_comes_from_the_mirror_and_is_reused(servers, tiny_weights, tmp_path):
    primary, mirror = servers
    del primary.files["/tiny/weights.hdf5"]  # 404
    options, weights = fetch_model(entry(primary.url, mirror.url), tmp_path / "cache", progress=False)
    assert weights.read_bytes() == Path(tiny_weights[1]).read_bytes()
    assert [r["path"] for r in primary.requests] == ["/tiny/options.json", "/tiny/weights.hdf5"]
    assert [r["path"] for r in mirror.requests] == ["/tiny/weights.hdf5"]
    record = json.loads((tmp_path / "cache" / "tiny" / "sha256.json").read_text())
    assert record["weights.hdf5"]["url"] == f"{mirror.url}/tiny/weights.hdf5"
    fetch_model(entry(primary.url, mirror.url), tmp_path / "cache", progress=False)  # reused, from either source
    assert len(primary.requests) == 2 and len(mirror.requests) == 1


def test_a_primary_that_hangs_up_every_time_falls_back_after_its_retries(servers, tiny_weights, tmp_path):
    primary, mirror = servers
    primary.cuts["/tiny/weights.hdf5"] = [100, 100, 100]
    _, weights = fetch_model(entry(primary.url, mirror.url), tmp_path / "cache", progress=False, retries=3)
    assert weights.read_bytes() == Path(tiny_weights[1]).read_bytes()
    assert len(primary.seen("/tiny/weights.hdf5")) == 3 and len(mirror.seen("/tiny/weights.hdf5")) == 1
    assert [p.name for p in (tmp_path / "cache" / "tiny").iterdir() if ".part" in p.name] == []


def test_damaged_weights_from_the_primary_are_deleted_and_the_mirror_used(servers, tiny_weights, tmp_path):
    primary, mirror = servers
    primary.files["/tiny/weights.hdf5"] = b"\x89HDF\r\n\x1a\n" + bytes(1000)  # not a weights file
    _, weights = fetch_model(entry(primary.url, mirror.url), tmp_path / "cache", progress=False)
    assert weights.read_bytes() == Path(tiny_weights[1]).read_bytes()


def test_when_every_source_fails_one_error_names_each(servers, tmp_path):
    primary, mirror = servers
    del primary.files["/tiny/weights.hdf5"]
    del mirror.files["/tiny/weights.hdf5"]
    with pytest.raises(DownloadError) as failed:
        fetch_model(entry(primary.url, mirror.url), tmp_path / "cache", progress=False)
    message = str(failed.value)
    assert message.startswith("weights.hdf5: every source failed (2): ")
    assert f"download of {primary.url}/tiny/weights.hdf5 failed: the server answered HTTP 404" in message
    assert f"download of {mirror.url}/tiny/weights.hdf5 failed: the server answered HTTP 404" in message
    assert "\n" not in message and not (tmp_path / "cache" / "tiny" / "weights.hdf5").exists()


def test_the_shipped_catalog_lists_a_hub_mirror_pinned_to_a_commit():
    model = get_model("original")
    assert model.urls("weights")[0] == model.weights_url  # AllenNLP's S3 first
    (mirror,) = model.mirrors
    for url, name in ((mirror.options_url, "options.json"), (mirror.weights_url, "weights.hdf5")):
        assert re.fullmatch(
            r"https://huggingface\.co/lysandre/elmo-2x4096_512_2048cnn_2xhighway/resolve/[0-9a-f]{40}/"
            + re.escape(name),
            url,
        )
    assert model.urls("options") == [model.options_url, mirror.options_url]
