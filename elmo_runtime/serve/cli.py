"""`elmo-serve [PACKAGE]`: load, verify, then serve a package over HTTP (see docs/serve.md).

    elmo-serve                                   # the shipped default package on 127.0.0.1:8080
    elmo-serve path/to/package --port 9000 --api-key "$KEY"

Each flag is one field of `ServeSettings`. The package is loaded with its files' sha256
checked and its conformance vectors run before the port opens: a damaged package, or a
runtime that does not reproduce it, stops the server with one line naming the problem.
SIGTERM (or Ctrl-C) stops accepting connections, answers what is in flight (at most
--graceful-timeout seconds) and exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import fields

from elmo_runtime.serve.settings import ServeSettings

log = logging.getLogger("elmo_runtime.serve")

DEFAULTS = ServeSettings()


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="elmo-serve",
        description="Serve an ELMo package over HTTP: "
        "text-embeddings-inference and OpenAI embeddings routes, with dynamic batching.",
    )
    p.add_argument(
        "package",
        nargs="?",
        default=os.environ.get("ELMO_PACKAGE", d.package),
        metavar="PACKAGE",
        help="a package folder, 'default' (shipped inside the runtime), a catalog name or "
        "hf:owner/repo[@revision] (default: $ELMO_PACKAGE, else 'default')",
    )
    p.add_argument("--model-id", default=None, help="the model name /info and /v1/models report (default: PACKAGE)")
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device, help="as for Elmo (default auto)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="ONNX Runtime intra-op threads per batch (default: one per core)",
    )
    _add_number_args(p, d)
    _add_access_args(p, d)
    return p


# The numeric flags: (flag, type, metavar, help). A help with "{}" gets the default filled in.
_NUMBERS = (
    (
        "--workers",
        int,
        "N",
        "batches run at once, each on its own thread of the one model (default {})",
    ),
    ("--batch-tokens", int, "N", "token positions per model run (default: the runtime's, 512 on CPU)"),
    ("--max-batch-tokens", int, "N", "token positions a server batch collects (default {})"),
    ("--max-batch-requests", int, "N", "requests per server batch (default {})"),
    (
        "--max-wait-ms",
        float,
        "MS",
        "how long a batch's first request waits for others (default {}; under load up to 5%% of the "
        "last batch's run time when that is longer)",
    ),
    ("--max-concurrent-requests", int, "N", "requests in flight; more get 429 (default {})"),
    ("--max-client-batch-size", int, "N", "inputs per request; more get 413 (default {})"),
    ("--max-input-tokens", int, "N", "tokens per input; more get 413 unless truncate (default {})"),
    ("--payload-limit", int, "BYTES", "request body size; more get 413 (default {})"),
)


def _add_number_args(p: argparse.ArgumentParser, d: ServeSettings) -> None:
    for flag, kind, metavar, text in _NUMBERS:
        default = getattr(d, flag[2:].replace("-", "_"))
        p.add_argument(flag, type=kind, default=default, metavar=metavar, help=text.format(default))


def _add_access_args(p: argparse.ArgumentParser, d: ServeSettings) -> None:
    p.add_argument(
        "--layers",
        type=_layers_arg,
        default=d.layers,
        help="layer mix of sentence vectors: average (default), top, a layer index, or comma-separated weights",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("ELMO_SERVE_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $ELMO_SERVE_API_KEY; none: open)",
    )
    p.add_argument(
        "--cors-allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an origin browsers may call from (repeat for more)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=d.graceful_timeout,
        metavar="S",
        help=f"seconds SIGTERM waits for requests in flight (default {d.graceful_timeout:g})",
    )
    p.add_argument("--json-output", action="store_true", help="log JSON lines")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="no line per request")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the sha256 check of the files (the conformance vectors still run)",
    )


def _layers_arg(text: str):
    if text in ("average", "top"):
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected average, top, a layer index or weights 'a,b,c'") from None


def settings_from(args: argparse.Namespace) -> ServeSettings:
    values = vars(args)
    values["cors_allow_origin"] = tuple(values["cors_allow_origin"])
    return ServeSettings(**{f.name: values[f.name] for f in fields(ServeSettings) if f.name in values})


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "elmo_runtime.serve.access" and message.startswith("{"):
            return message  # already one JSON object
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
            }
        )


def setup_logging(json_output: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if json_output else logging.Formatter("elmo-serve: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def load(settings: ServeSettings):
    """The package loaded and verified -> `(elmo, info)`.

    Raises:
        RuntimeError: its conformance vectors fail (the first failures named).
        and what `Elmo(...)` raises: a missing or damaged package names the file.
    """
    import onnxruntime

    from elmo_runtime import Elmo
    from elmo_runtime.conformance import verify_loaded

    started = time.perf_counter()
    elmo = Elmo(
        settings.package,
        device=settings.device,
        threads=settings.threads,
        batch_tokens=settings.batch_tokens,
        verify=settings.verify,
    )
    report = verify_loaded(elmo)  # the sessions that will serve, not a second copy of them
    if not report.passed:
        shown = "; ".join(report.failures[:3]) or "nothing was checked"
        raise RuntimeError(
            f"{elmo.manifest.directory}: conformance vectors FAILED ({len(report.failures)} "
            f"failures: {shown}); run elmo-verify on it for the full report"
        )
    manifest_file = elmo.manifest.directory / "elmo.json"
    info = {
        "package_sha256": hashlib.sha256(manifest_file.read_bytes()).hexdigest(),
        "conformance": {"passed": True, "layer_checks": len(report.checks), **report.worst()},
        "version": _version(),
        "onnxruntime": onnxruntime.__version__,
        "load_seconds": round(time.perf_counter() - started, 3),
        "loaded_at": time.time(),
    }
    log.info(
        "%s (%s, %d layers x %d) verified in %.2f s: conformance passed (%d layer checks)",
        elmo.manifest.directory,
        elmo.manifest.precision,
        elmo.num_layers,
        elmo.dim,
        info["load_seconds"],
        len(report.checks),
    )
    return elmo, info


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("elmo-onnx")
    except PackageNotFoundError:
        return "unknown"


def serve(settings: ServeSettings, elmo, info: dict) -> None:
    """Run the app on uvicorn until SIGTERM/SIGINT; returns once drained."""
    import uvicorn

    from elmo_runtime.serve.app import create_app

    app = create_app(elmo, settings, info)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.graceful_timeout,
        lifespan="on",
        server_header=False,
    )
    stopped = []
    # uvicorn drains on the signal, then re-raises it to the handler it found: this one, so the
    # process ends with 0 (a drained server stopped as asked) instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopped.append(signum))
    log.info(
        "listening on http://%s:%d (model %s)", settings.host, settings.port, settings.model_id or settings.package
    )
    uvicorn.Server(config).run()
    log.info("stopped%s", f" ({signal.Signals(stopped[0]).name})" if stopped else "")


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from(build_parser().parse_args(argv))
    except ValueError as e:
        print(f"elmo-serve: error: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.json_output)
    try:
        import fastapi  # noqa: F401  (checked here: the error says how to install it)
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        print(
            f"elmo-serve: error: {e.name} is missing; install the serve extra: pip install 'elmo-onnx[serve]'",
            file=sys.stderr,
        )
        return 1
    try:
        elmo, info = load(settings)
    except (OSError, ValueError, TypeError, RuntimeError, ImportError) as e:
        print(f"elmo-serve: error: {e}", file=sys.stderr)
        return 1
    serve(settings, elmo, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
