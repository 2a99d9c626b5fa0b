"""`elmo-serve`: an `Elmo` behind HTTP, speaking text-embeddings-inference's and OpenAI's dialects.

Needs the `serve` extra (`pip install elmo-onnx[serve]`: FastAPI, uvicorn, prometheus-client);
`import elmo_runtime` never imports this subpackage. The pieces, each thin:

- `settings.ServeSettings`: every limit and option, one field per command-line flag.
- `batcher.Batcher`: requests queue and are packed into one `Elmo.embed` call per batch under
  a token budget. Batching never changes a vector: fp32 and int8 packages give the same bits
  for a sentence whatever else shares its batch.
- `app.create_app`: the routes, limits, errors and metrics (FastAPI).
- `cli.main`: `elmo-serve PACKAGE`, which loads and verifies the package before it listens.

See docs/serve.md.
"""

from __future__ import annotations

__all__ = ["ServeSettings", "create_app", "main"]


def __getattr__(name: str):
    # Imported on first use, so that `python -m elmo_runtime.serve --help` stays quick.
    if name == "ServeSettings":
        from elmo_runtime.serve.settings import ServeSettings

        return ServeSettings
    if name == "create_app":
        from elmo_runtime.serve.app import create_app

        return create_app
    if name == "main":
        from elmo_runtime.serve.cli import main

        return main
    raise AttributeError(f"module 'elmo_runtime.serve' has no attribute {name!r}")
