"""elmo-serve's HTTP stack around a model that answers at once: what the server's own work costs.

    python benchmarks/serve_stub.py PACKAGE --host 127.0.0.1 --port PORT

`bench_serve.py` runs it to measure the ceiling a model's throughput ratio can reach on this
machine: the same app, batcher, JSON and access log as `elmo-serve`, but `embed` returns vectors
computed beforehand for the benchmark's sentences (by the real model, so the responses are the
real ones, of the real size). Whatever throughput this reaches is the HTTP side's alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import sentences  # noqa: E402

from elmo_runtime import Elmo  # noqa: E402


class AnswersAtOnce(Elmo):
    """The real `Elmo`, except that `embed` of the benchmark's sentences (mean-pooled, the
    average of layers, as bench_serve asks) is looked up instead of run."""

    def remember(self, token_lists: list[list[str]]) -> None:
        vectors = super().embed(token_lists, layers="average", pool="mean")
        self._known = {tuple(tokens): v for tokens, v in zip(token_lists, vectors)}

    def embed(self, sentences, layers="average", pool=None, **kwargs):
        if layers == "average" and pool == "mean" and all(tuple(s) in self._known for s in sentences):
            return [self._known[tuple(s)] for s in sentences]
        return super().embed(sentences, layers=layers, pool=pool, **kwargs)


def main() -> None:
    import uvicorn

    from elmo_runtime.serve.app import create_app
    from elmo_runtime.serve.cli import setup_logging
    from elmo_runtime.serve.settings import ServeSettings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("package")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    package, port = args.package, args.port
    setup_logging(json_output=False)
    elmo = AnswersAtOnce(package, device="cpu")
    elmo.remember(sentences())
    app = create_app(elmo, ServeSettings(package=package, port=port), {"version": "stub"})
    logging.getLogger(__name__).info("the stub server on %s:%d", args.host, port)
    uvicorn.run(app, host=args.host, port=port, log_config=None, access_log=False, server_header=False)


if __name__ == "__main__":
    main()
