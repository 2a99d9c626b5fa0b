"""`elmo-export`: the command line of `elmo_export.export`.

Each option maps onto one argument of `export` (MODEL, --options and --weights onto
`sources.resolve`, which finds the model in any form); the command adds only printing a summary
and, with --push-to-hub, publishing the package (`publish`).

Exit codes: 0 exported and verified; 1 the package failed parity with the reference (nothing
is left at OUT); 2 a usage or input error (bad arguments, missing or mismatched files, an
output that exists or cannot be written, a download that failed); 3 an unexpected error (a
bug, or the machine ran out of memory), in one line (-v for the traceback); 130 and 143
interrupted by SIGINT (Ctrl-C) or SIGTERM (nothing is left at OUT).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from elmo_runtime import contract as C
from elmo_runtime.fetch.download import DownloadError
from elmo_runtime.interrupts import interrupts_raise

if TYPE_CHECKING:
    from elmo_export.publish import SourceLicense

log = logging.getLogger("elmo_export")

EXIT_OK, EXIT_PARITY, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
# The exporter's extra: absent on a base (runtime-only) install.
EXPORT_MODULES = ("torch", "onnx")
EXPORT_INSTALL = 'pip install torch==2.13.0 && pip install "elmo-onnx[export]"'


def _precision(name: str) -> str:
    """`--precision`'s value, its alias resolved ("none" -> "fp32")."""
    return C.PRECISION_ALIASES.get(name, name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elmo-export",
        description=(
            "Export an ELMo biLM (options.json + weights.hdf5, the official TensorFlow layout) to an\n"
            "ONNX model package that the torch-free runtime reads. The package is checked against the\n"
            "PyTorch reference in ONNX Runtime before it is put in place; nothing is left at OUT if a\n"
            "check fails."
        ),
        epilog=(
            "examples:\n"
            "  elmo-export path/to/model -o elmo-fp32              # a directory with options.json + one .hdf5\n"
            "  elmo-export original -o elmo-int8 --quantize int8   # an official model, downloaded and cached\n"
            "  elmo-export --options options.json --weights weights.hdf5 -o out --quantize int4 --force\n"
            "  elmo-export -o elmo-default                         # the project's default model\n"
            "\n"
            "exit codes: 0 exported and verified; 1 parity with the reference failed (nothing written);\n"
            "            2 usage or input error (bad arguments, missing or mismatched files, OUT not writable\n"
            "            or not empty without --force, failed download); 3 unexpected error (-v: traceback);\n"
            "            130/143 interrupted by SIGINT/SIGTERM (nothing written)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(parser)
    _export_arguments(parser)
    _hub_arguments(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL, --options and --weights: `sources.resolve`'s arguments."""
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a directory holding options.json and exactly one weights .hdf5 (or one *weights.hdf5), an "
        "ELMoForManyLangs model directory (config.json, char.dic, word.dic, token_embedder.pkl, encoder.pkl), "
        "a model ZIP of either kind (as the NLPL repository serves them), or the "
        "name of an official model (e.g. small, original), downloaded into the cache; "
        "omitted: the project's default model (models/default*/, shipped with elmo-onnx)",
    )
    parser.add_argument(
        "--options", type=Path, metavar="FILE", help="the options.json (instead of MODEL; with --weights)"
    )
    parser.add_argument(
        "--weights", type=Path, metavar="FILE", help="the weights .hdf5 (instead of MODEL; with --options)"
    )


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    """-o and the fields of `ExportSettings`."""
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT",
        help="the package directory to write; it must not exist or be empty, unless --force",
    )
    parser.add_argument(
        "--precision",
        "--quantize",
        dest="precision",
        type=_precision,
        choices=C.PRECISIONS,
        default="fp32",
        help="weight precision: fp32 (alias: none); fp16 = float16 weights and compute (for GPUs); int8 = dynamic "
        "int8 MatMuls (CPU only, about a quarter of the size); int4 = 4-bit block-wise weights (about a sixth) "
        "(default: fp32)",
    )
    parser.add_argument(
        "--initial-state",
        choices=C.STATE_MODES,
        default=C.WARM,
        help="the LSTM state every sentence starts from by default: warm = the state after a built-in warm-up "
        "text, computed at export and stored in elmo.json; zero = zeros (default: warm)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="int4 only: a UTF-8 text of tokenized sentences (tokens separated by spaces, one sentence a line) "
        "in the model's language, to calibrate the 4-bit rounding on (default: a built-in English text)",
    )
    parser.add_argument(
        "--exact-activations",
        action="store_true",
        help="write sigmoid and tanh out in exactly rounded float32 ops instead of ONNX Runtime's kernels, whose "
        "last bits differ between builds: an int8 package then gives the same bits in every ONNX Runtime, "
        "onnxruntime-web (wasm) included, at about twice the run time (not for fp16)",
    )
    supported = C.SUPPORTED_OPSETS
    parser.add_argument(
        "--opset",
        type=int,
        metavar="N",
        help=f"ONNX opset of the graphs (default: the exporter's, {C.DEFAULT_OPSET}; "
        f"supported {supported.start}-{supported.stop - 1})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing package at OUT, once the new one is complete and verified",
    )


def _hub_arguments(parser: argparse.ArgumentParser) -> None:
    """--push-to-hub and its options (`publish.push_to_hub`)."""
    parser.add_argument(
        "--push-to-hub",
        metavar="OWNER/REPO",
        help="then upload the verified package, with a generated model card, to this Hugging Face "
        "Hub repository (created if needed; HF_TOKEN, HF_ENDPOINT as usual)",
    )
    parser.add_argument(
        "--license",
        metavar="NAME",
        help="the licence of the source weights, for the model card (default: the catalog's for "
        "an official model, else the model folder's one LICENSE* file)",
    )
    parser.add_argument(
        "--private", action="store_true", default=None, help="with --push-to-hub: create the repository private"
    )


def summary(package: Path, seconds: float) -> str:
    """Files, sizes and the parity table of an exported package."""
    from elmo_export.parity import ParityReport
    from elmo_runtime.package import load_manifest

    manifest = load_manifest(package)
    files = {name: entry["bytes"] for name, entry in manifest.files.items()}
    files[C.MANIFEST_FILE] = (package / C.MANIFEST_FILE).stat().st_size
    width = max(map(len, files))
    lines = [
        f"exported {package} ({manifest.precision}, {manifest.initial_state_mode} initial "
        f"state, opset {manifest.opset}) in {seconds:.1f} s"
    ]
    lines += [f"  {name:<{width}}  {size / 1e6:10.2f} MB" for name, size in files.items()]
    lines.append(f"  {'total':<{width}}  {sum(files.values()) / 1e6:10.2f} MB")
    parity = manifest.parity
    lines.append(
        f"parity with the PyTorch reference, ONNX Runtime on the CPU ({parity['sentences']} sentences, "
        f"{parity['tokens']} tokens, batches of {parity['batch_size']}):"
    )
    report = ParityReport.from_dict(parity)
    lines += ["  " + line for line in report.table().splitlines()]
    return "\n".join(lines)


def missing_export_modules() -> list[str]:
    """The exporter's dependencies this install lacks (a base install lacks them all)."""
    return [name for name in EXPORT_MODULES if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    """Run `elmo-export`; returns the exit code (0 ok, 1 parity failure, 2 usage/input error)."""
    args = build_parser().parse_args(argv)
    missing = missing_export_modules()
    if missing:
        print(
            f"elmo-export: error: exporting needs {' and '.join(missing)}, which this install lacks (the runtime "
            f"alone needs neither): {EXPORT_INSTALL}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="elmo-export: %(message)s")
    if not args.verbose:
        logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    started = time.perf_counter()
    code, package, license = _export(args)
    if code != EXIT_OK:
        return code
    print(summary(package, time.perf_counter() - started))
    return _push(args, package, license) if args.push_to_hub else EXIT_OK


def _export(args: argparse.Namespace) -> tuple[int, Path | None, SourceLicense | None]:
    """Resolve the model and export it: the exit code, the package and the source's licence
    (with --push-to-hub; checked before the export, not after)."""
    # Imported here: `--help` and argument errors stay fast (torch and onnx load in seconds).
    from elmo_export.exporter import export
    from elmo_export.parity import ParityError
    from elmo_export.publish import SourceLicense
    from elmo_export.sources import resolve

    settings = dict(
        precision=args.precision,
        initial_state=args.initial_state,
        opset=args.opset,
        force=args.force,
        progress=args.progress,
        calibration=args.calibration,
        exact_activations=args.exact_activations,
    )
    license = None
    try:
        with interrupts_raise() as interrupted:
            if args.push_to_hub:  # a malformed repository fails before the export, not after
                from elmo_runtime.fetch.hub import parse_repo

                parse_repo(args.push_to_hub)
            source = resolve(args.model, args.options, args.weights, progress=args.progress)
            if args.push_to_hub:
                license = SourceLicense.of(source, args.license)
            package = export(source, args.output, stop=interrupted.event, **settings)
    except ParityError as e:
        print(f"elmo-export: error: {e}", file=sys.stderr)
        print(e.report.table(), file=sys.stderr)
        print(f"elmo-export: no package was written; {args.output} is as it was", file=sys.stderr)
        return EXIT_PARITY, None, None
    except KeyboardInterrupt:
        name = signal.Signals(interrupted.signum).name if interrupted.signum else "SIGINT"
        print(f"elmo-export: interrupted ({name}); no package was written, {args.output} is as it was", file=sys.stderr)
        return 128 + (interrupted.signum or signal.SIGINT), None, None
    except (ValueError, OSError, ImportError, DownloadError) as e:
        print(f"elmo-export: error: {e}", file=sys.stderr)
        return EXIT_USAGE, None, None
    except Exception as e:  # a bug or an exhausted machine: one line, and a code of its own
        log.debug("unexpected error", exc_info=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"elmo-export: unexpected error: {type(e).__name__}: {first} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL, None, None
    return EXIT_OK, package, license


def _push(args: argparse.Namespace, package: Path, license: SourceLicense | None) -> int:
    """Upload the exported package (--push-to-hub); the exit code."""
    from huggingface_hub.errors import HfHubHTTPError

    from elmo_export.publish import push_to_hub

    try:
        url = push_to_hub(package, args.push_to_hub, license=license, private=args.private)
    except (HfHubHTTPError, ValueError, OSError) as e:
        print(
            f"elmo-export: error: the package was exported to {package}, but pushing it to "
            f"{args.push_to_hub} failed: {e}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(f"pushed to {args.push_to_hub}: {url}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
