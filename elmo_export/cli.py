"""`elmo-export`: the command line of `elmo_export.export.export_package`.

Each option maps onto one keyword argument of `export_package` or of `sources.resolve_model`
(which finds the model's two files); the command adds only printing a summary.

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

from elmo_export.download import DownloadError
from elmo_export.sources import ModelSourceError, resolve_model
from elmo_runtime import contract as C
from elmo_runtime.interrupts import interrupts_raise

log = logging.getLogger("elmo_export")

EXIT_OK, EXIT_PARITY, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
# The exporter's extra: absent on a base (runtime-only) install.
EXPORT_MODULES = ("torch", "onnx")
EXPORT_INSTALL = 'pip install torch==2.13.0 && pip install "elmo-onnx[export]"'


def _precision(name: str) -> str:
    """`--quantize`'s value, its alias resolved ("none" -> "fp32")."""
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
    parser.add_argument(
        "model", nargs="?", metavar="MODEL",
        help="a directory holding options.json and exactly one weights .hdf5 (or one *weights.hdf5), an "
             "ELMoForManyLangs model directory (config.json, char.dic, word.dic, token_embedder.pkl, encoder.pkl), "
             "a model ZIP of either kind (as the NLPL repository serves them), or the "
             "name of an official model (e.g. small, original), downloaded into the cache; "
             "omitted: the project's default model (models/default*/, shipped with elmo-onnx)",
    )
    parser.add_argument("--options", type=Path, metavar="FILE", help="the options.json (instead of MODEL; with --weights)")
    parser.add_argument("--weights", type=Path, metavar="FILE", help="the weights .hdf5 (instead of MODEL; with --options)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="the package directory to write; it must not exist or be empty, unless --force")
    parser.add_argument(
        "--quantize", type=_precision, choices=C.PRECISIONS, default="fp32",
        help="weight precision: fp32 (alias: none); fp16 = float16 weights and compute (for GPUs); int8 = dynamic "
             "int8 MatMuls (CPU only, about a quarter of the size); int4 = 4-bit block-wise weights (about a sixth) "
             "(default: fp32)",
    )
    parser.add_argument(
        "--initial-state", choices=C.STATE_MODES, default=C.WARM,
        help="the LSTM state every sentence starts from by default: warm = the state after a built-in warm-up "
             "text, computed at export and stored in elmo.json; zero = zeros (default: warm)",
    )
    parser.add_argument(
        "--calibration", type=Path, metavar="FILE",
        help="int4 only: a UTF-8 text of tokenized sentences (tokens separated by spaces, one sentence a line) "
             "in the model's language, to calibrate the 4-bit rounding on (default: a built-in English text)",
    )
    supported = C.SUPPORTED_OPSETS
    parser.add_argument("--opset", type=int, metavar="N",
                        help=f"ONNX opset of the graphs (default: the exporter's, {C.DEFAULT_OPSET}; "
                             f"supported {supported.start}-{supported.stop - 1})")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing package at OUT, once the new one is complete and verified")
    parser.add_argument("--push-to-hub", metavar="OWNER/REPO",
                        help="then upload the verified package, with a generated model card, to this Hugging Face "
                             "Hub repository (created if needed; HF_TOKEN, HF_ENDPOINT as usual)")
    parser.add_argument("--license", metavar="NAME",
                        help="the licence of the source weights, for the model card (default: the catalog's for "
                             "an official model, else the model folder's one LICENSE* file)")
    parser.add_argument("--private", action="store_true", default=None,
                        help="with --push-to-hub: create the repository private")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def summary(package: Path, seconds: float) -> str:
    """Files, sizes and the parity table of an exported package."""
    from elmo_export.parity import ParityReport
    from elmo_runtime.package import load_manifest

    manifest = load_manifest(package)
    files = {name: entry["bytes"] for name, entry in manifest.files.items()}
    files[C.MANIFEST_FILE] = (package / C.MANIFEST_FILE).stat().st_size
    width = max(map(len, files))
    lines = [f"exported {package} ({manifest.precision}, {manifest.initial_state_mode} initial "
             f"state, opset {manifest.opset}) in {seconds:.1f} s"]
    lines += [f"  {name:<{width}}  {size / 1e6:10.2f} MB" for name, size in files.items()]
    lines.append(f"  {'total':<{width}}  {sum(files.values()) / 1e6:10.2f} MB")
    parity = manifest.parity
    lines.append(f"parity with the PyTorch reference, ONNX Runtime on the CPU ({parity['sentences']} sentences, "
                 f"{parity['tokens']} tokens, batches of {parity['batch_size']}):")
    report = ParityReport.from_dict(parity)
    lines += ["  " + line for line in report.table().splitlines()]
    return "\n".join(lines)


def missing_export_modules() -> list[str]:
    """The exporter's dependencies this install lacks (a base install lacks them all)."""
    return [name for name in EXPORT_MODULES if importlib.util.find_spec(name) is None]


def source_license(model: str | None, options: Path, given: str | None):
    """The licence of the weights being exported, for a model card (see `--license`).

    Raises:
        ModelSourceError: none given and none found.
    """
    from elmo_export.publish import SourceLicense

    if given:
        return SourceLicense(given)
    if model is not None and not Path(model).exists():
        from elmo_export.catalog import get_model

        entry = get_model(model)
        return SourceLicense(entry.license, url=entry.homepage)
    found = SourceLicense.from_model_dir(options.parent)
    if found is None:
        raise ModelSourceError(f"--push-to-hub needs the licence of the source weights: {options.parent} holds no single "
                         "LICENSE* file; pass --license NAME (an SPDX id such as Apache-2.0)")
    return found


def main(argv: list[str] | None = None) -> int:
    """Run `elmo-export`; returns the exit code (0 ok, 1 parity failure, 2 usage/input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = missing_export_modules()
    if missing:
        print(f"elmo-export: error: exporting needs {' and '.join(missing)}, which this install lacks (the runtime "
              f"alone needs neither): {EXPORT_INSTALL}", file=sys.stderr)
        return EXIT_USAGE
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="elmo-export: %(message)s")
    if not args.verbose:
        logging.getLogger("onnxruntime").setLevel(logging.WARNING)

    # Imported here: `--help` and argument errors stay fast (torch and onnx load in seconds).
    from elmo_export.archives import export_other_family, is_other_family
    from elmo_export.export import ExportSettings, export_package
    from elmo_export.parity import ParityError

    errors = (ValueError, OSError, ImportError, DownloadError)
    started = time.perf_counter()
    settings = dict(quantize=args.quantize, initial_state=args.initial_state, opset=args.opset, force=args.force,
                    progress=args.progress, calibration=args.calibration)
    try:
        with interrupts_raise() as interrupted:
            if args.push_to_hub:  # a malformed repository fails before the export, not after
                from elmo_runtime.fetch.hub import parse_repo

                parse_repo(args.push_to_hub)
            if args.model is not None and is_other_family(args.model):
                if args.push_to_hub and not args.license:
                    raise ValueError("--push-to-hub needs the licence of the source weights: ELMoForManyLangs and "
                                     "NLPL models state none; pass --license NAME")
                license = source_license(args.model, Path(args.model), args.license) if args.push_to_hub else None
                package = export_other_family(args.model, args.output, ExportSettings(**settings),
                                              stop=interrupted.event)
            else:
                options, weights = resolve_model(args.model, args.options, args.weights, progress=args.progress)
                license = source_license(args.model, options, args.license) if args.push_to_hub else None
                package = export_package(options, weights, args.output, **settings, stop=interrupted.event)
    except ParityError as e:
        print(f"elmo-export: error: {e}", file=sys.stderr)
        print(e.report.table(), file=sys.stderr)
        print(f"elmo-export: no package was written; {args.output} is as it was", file=sys.stderr)
        return EXIT_PARITY
    except KeyboardInterrupt:
        name = signal.Signals(interrupted.signum).name if interrupted.signum else "SIGINT"
        print(f"elmo-export: interrupted ({name}); no package was written, {args.output} is as it was", file=sys.stderr)
        return 128 + (interrupted.signum or signal.SIGINT)
    except errors as e:
        print(f"elmo-export: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug or an exhausted machine: one line, and a code of its own
        log.debug("unexpected error", exc_info=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"elmo-export: unexpected error: {type(e).__name__}: {first} (run with -v for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
    print(summary(package, time.perf_counter() - started))
    if args.push_to_hub:
        from huggingface_hub.errors import HfHubHTTPError

        from elmo_export.publish import push_to_hub

        try:
            url = push_to_hub(package, args.push_to_hub, license=license, private=args.private)
        except (HfHubHTTPError, ValueError, OSError) as e:
            print(f"elmo-export: error: the package was exported to {package}, but pushing it to "
                  f"{args.push_to_hub} failed: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"pushed to {args.push_to_hub}: {url}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
