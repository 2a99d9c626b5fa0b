"""`elmo-export`: the command line of `elmo_export.export.export_package`.

Each option maps onto one keyword argument of `export_package`; the command adds only finding
the model's two files (`resolve_model`) and printing a summary.

Exit codes: 0 exported and verified; 1 the package failed parity with the reference (nothing
is left at OUT); 2 a usage or input error (bad arguments, missing or mismatched files, an
output that exists or cannot be written, a download that failed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from elmo_runtime import contract as C

log = logging.getLogger("elmo_export")

EXIT_OK, EXIT_PARITY, EXIT_USAGE = 0, 1, 2
OPTIONS_FILE = "options.json"
# Where the project's default model (models/default*/) is looked for, first hit wins: an
# installed wheel puts models/ at elmo_export/models, a checkout has it beside the package.
MODELS_DIRS = (Path(__file__).resolve().parent / "models", Path(__file__).resolve().parents[1] / "models")


class UsageError(ValueError):
    """The command line names no usable model (the message says what was found and what to pass)."""


def _official_names() -> list[str]:
    """The official catalog's model names, or [] where the catalog is unavailable."""
    try:
        from elmo_export.catalog import load_catalog

        return list(load_catalog())
    except Exception:  # a missing or broken catalog must not break the exporter
        return []


def _how_to_pass() -> str:
    names = _official_names()
    official = f", or an official model name ({', '.join(names)})" if names else ""
    return (f"pass a model directory holding {OPTIONS_FILE} and its weights .hdf5 "
            f"(elmo-export path/to/model -o OUT), or --options FILE --weights FILE{official}")


def files_in_model_dir(directory: Path) -> tuple[Path, Path]:
    """`options.json` and the weights file of a model directory.

    The weights are the directory's only `*.hdf5`, or, where there are several (a training
    run also writes `softmax.hdf5`), the only one named `*weights.hdf5`.

    Raises:
        UsageError: no options.json, or not exactly one weights file (what was found is listed).
    """
    found = sorted(p.name for p in directory.iterdir())
    listing = ", ".join(found) if found else "nothing"
    if not (directory / OPTIONS_FILE).is_file():
        raise UsageError(f"model directory {directory} has no {OPTIONS_FILE} (found: {listing}); {_how_to_pass()}")
    weights = sorted(p for p in directory.glob("*.hdf5") if p.is_file())
    if len(weights) > 1:
        named = [p for p in weights if p.name.endswith("weights.hdf5")]
        weights = named if len(named) == 1 else weights
    if len(weights) != 1:
        what = "no .hdf5 file" if not weights else f"{len(weights)} .hdf5 files ({', '.join(p.name for p in weights)})"
        raise UsageError(
            f"model directory {directory} must hold exactly one weights .hdf5 file, found {what} "
            f"(all files: {listing}); name the files with --options FILE --weights FILE"
        )
    return directory / OPTIONS_FILE, weights[0]


def default_model_dir(models_dirs: tuple[Path, ...] | None = None) -> Path:
    """The project's default model: the one `default*/` directory under `MODELS_DIRS`.

    Raises:
        UsageError: there is none yet (or several), with how to pass a model instead.
    """
    models_dirs = MODELS_DIRS if models_dirs is None else models_dirs
    for models_dir in models_dirs:
        candidates = sorted(p for p in models_dir.glob("default*") if p.is_dir()) if models_dir.is_dir() else []
        if len(candidates) > 1:
            raise UsageError(f"no MODEL given, and {models_dir} holds several default models "
                             f"({', '.join(p.name for p in candidates)}); name one of them as MODEL")
        if candidates:
            return candidates[0]
    looked = " and ".join(f"{d}/default*/" for d in models_dirs)
    raise UsageError(f"no MODEL given, and there is no default model yet (none in {looked}); " + _how_to_pass())


def resolve_model(model: str | None = None, options: str | Path | None = None, weights: str | Path | None = None,
                  progress: bool = True) -> tuple[Path, Path]:
    """The `(options.json, weights.hdf5)` that MODEL or --options/--weights stand for.

    MODEL is a directory (see `files_in_model_dir`) or an official model name, which is
    downloaded into the cache (`elmo_export.download.fetch_model`); none of the three: the
    project's default model (`default_model_dir`).

    Raises:
        UsageError: contradictory or incomplete arguments, or no model found.
        ValueError, OSError: from the catalog or the download of an official model.
    """
    if options is not None or weights is not None:
        if model is not None:
            raise UsageError(f"give either MODEL ({model}) or --options/--weights, not both")
        if options is None or weights is None:
            raise UsageError("--options and --weights go together: pass both files")
        return Path(options), Path(weights)
    if model is None:
        directory = default_model_dir()
        log.info("exporting the default model %s", directory)
        return files_in_model_dir(directory)
    path = Path(model)
    if path.is_dir():
        return files_in_model_dir(path)
    if path.exists():
        raise UsageError(f"MODEL {model} is a file, not a model directory; {_how_to_pass()}")
    try:
        from elmo_export.catalog import get_model
        from elmo_export.download import fetch_model
    except ImportError:
        raise UsageError(f"no such model directory: {model} (and official models cannot be downloaded by this "
                         f"install); {_how_to_pass()}") from None
    try:
        entry = get_model(model)
    except ValueError as e:
        raise UsageError(f"no such model directory: {model}, nor is it an official model name ({e}); "
                         + _how_to_pass()) from None
    log.info("fetching the official model %s (%s)", entry.name, getattr(entry, "allennlp_name", ""))
    options_path, weights_path = fetch_model(entry.name, progress=progress)
    return Path(options_path), Path(weights_path)


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
            "            or not empty without --force, failed download)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", nargs="?", metavar="MODEL",
        help="a directory holding options.json and exactly one weights .hdf5 (or one *weights.hdf5), or the "
             "name of an official model (e.g. small, original), downloaded into the cache; "
             "omitted: the project's default model (models/default*/, shipped with elmo-onnx)",
    )
    parser.add_argument("--options", type=Path, metavar="FILE", help="the options.json (instead of MODEL; with --weights)")
    parser.add_argument("--weights", type=Path, metavar="FILE", help="the weights .hdf5 (instead of MODEL; with --options)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="the package directory to write; it must not exist or be empty, unless --force")
    parser.add_argument(
        "--quantize", choices=["none", "fp16", "int8", "int4"], default="none",
        help="weight precision: none = fp32; fp16 = float16 weights and compute (for GPUs); int8 = dynamic int8 "
             "MatMuls (CPU only, about a quarter of the size); int4 = 4-bit block-wise weights (about a sixth) "
             "(default: none)",
    )
    parser.add_argument(
        "--initial-state", choices=["warm", "zero"], default="warm",
        help="the LSTM state every sentence starts from by default: warm = the state after a built-in warm-up "
             "text, computed at export and stored in elmo.json; zero = zeros (default: warm)",
    )
    parser.add_argument("--opset", type=int, metavar="N",
                        help="ONNX opset of the graphs (default: the exporter's, 17; supported 17-21)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing package at OUT, once the new one is complete and verified")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings, errors and the summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def summary(package: Path, seconds: float) -> str:
    """Files, sizes and the parity table of an exported package."""
    manifest = json.loads((package / C.MANIFEST_FILE).read_text(encoding="utf-8"))
    files = {name: entry["bytes"] for name, entry in manifest["files"].items()}
    files[C.MANIFEST_FILE] = (package / C.MANIFEST_FILE).stat().st_size
    width = max(map(len, files))
    lines = [f"exported {package} ({manifest['precision']['name']}, {manifest['initial_state']['mode']} initial "
             f"state, opset {manifest['opset']}) in {seconds:.1f} s"]
    lines += [f"  {name:<{width}}  {size / 1e6:10.2f} MB" for name, size in files.items()]
    lines.append(f"  {'total':<{width}}  {sum(files.values()) / 1e6:10.2f} MB")
    parity = manifest["parity"]
    lines.append(f"parity with the PyTorch reference, ONNX Runtime on the CPU ({parity['sentences']} sentences, "
                 f"{parity['tokens']} tokens, batches of {parity['batch_size']}):")
    from elmo_export.parity import ParityReport

    report = ParityReport.from_dict(parity)
    lines += ["  " + line for line in report.table().splitlines()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `elmo-export`; returns the exit code (0 ok, 1 parity failure, 2 usage/input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="elmo-export: %(message)s")
    if not args.verbose:
        logging.getLogger("onnxruntime").setLevel(logging.WARNING)

    # Imported here: `--help` and argument errors stay fast (torch and onnx load in seconds).
    from elmo_export.export import export_package
    from elmo_export.parity import ParityError

    errors: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)
    try:
        from elmo_export.download import DownloadError

        errors += (DownloadError,)
    except ImportError:
        pass

    started = time.perf_counter()
    try:
        options, weights = resolve_model(args.model, args.options, args.weights, progress=args.progress)
        package = export_package(options, weights, args.output, quantize=args.quantize,
                                 initial_state=args.initial_state, opset=args.opset, force=args.force,
                                 progress=args.progress)
    except ParityError as e:
        print(f"elmo-export: error: {e}", file=sys.stderr)
        if e.report.modes:
            print(e.report.table(), file=sys.stderr)
        print(f"elmo-export: no package was written; {args.output} is as it was", file=sys.stderr)
        return EXIT_PARITY
    except errors as e:
        print(f"elmo-export: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(summary(package, time.perf_counter() - started))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
