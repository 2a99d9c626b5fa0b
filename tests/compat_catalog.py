"""A catalog of our own whose official models are a test package, served on 127.0.0.1.

The compat shims resolve AllenNLP's URLs and Flair's model names to the catalog's package of
the model; the real ones are hundreds of MB, so the tests list a tiny package under those
model names (`ELMO_ONNX_CATALOG`) and serve its archive from a real local HTTP server.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from http_server import serving

from elmo_export.publish import archive_package

OFFICIAL = ("small", "medium", "original", "original-5.5b")


@contextmanager
def official_models_as(package: Path, folder: Path, monkeypatch, models=OFFICIAL) -> Iterator[object]:
    """List `package` as each of `models` (fp32) in a catalog; a fresh cache. Yields the server state."""
    with serving() as server:
        packages = {}
        for model in models:
            archive = folder / f"{model}.zip"
            packages[f"{model}-test"] = archive_package(
                package, archive, url=f"{server.url}/{model}.zip", name=f"{model}-test", model=model
            )
            server.files[f"/{model}.zip"] = archive.read_bytes()
        catalog = folder / "catalog.json"
        catalog.write_text(json.dumps({"schema_version": 1, "packages": packages}), encoding="utf-8")
        monkeypatch.setenv("ELMO_ONNX_CATALOG", str(catalog))
        monkeypatch.setenv("ELMO_ONNX_CACHE", str(folder / "cache"))
        monkeypatch.delenv("ELMO_ONNX_OFFLINE", raising=False)
        yield server
