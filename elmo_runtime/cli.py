"""`elmo-embed`: the command line of `elmo_runtime.corpus.files.embed_file` (and, with --engine ray,
of `elmo_runtime.corpus.job.embed_to_parquet`).

    elmo-embed PACKAGE INPUT OUTPUT [--all|--top|--average] [--batch-size N] [--device ...]

Each option maps onto one keyword argument of `embed_file`; see there for the output layout
and the input rules.

It also takes AllenNLP's `allennlp elmo` command line as it is, so a script switches by
changing the program's name:

    elmo-embed INPUT OUTPUT (--all|--top|--average) [--options-file F] [--weight-file F]
               [--batch-size 64] [--cuda-device -1] [--forget-sentences] [--use-sentence-keys]

That form (two paths, or any flag only AllenNLP's command has) runs
`elmo_runtime.compat.allennlp.ElmoEmbedder(options_file, weight_file, cuda_device).embed_file(...)`,
as AllenNLP's command ran its own: whitespace-tokenized lines, AllenNLP's default model
(`original`), sentences in batches of `--batch-size`. Every sentence starts from the package's
fixed state unless `--stateful` asks for AllenNLP's carried state; an existing OUTPUT is
replaced only with `--force`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from elmo_runtime import contract as C
from elmo_runtime.corpus.files import DTYPES, FORMATS, embed_file
from elmo_runtime.interrupts import interrupts_raise
from elmo_runtime.runner import DEVICES

ENGINES = ("local", "ray")
RAY_ONLY = ("workers", "address", "num_cpus", "chunk_rows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elmo-embed",
        description="Embed a text file (one sentence per line) with an ELMo package into HDF5 "
        "(AllenNLP's `elmo` command layout), NPZ or Parquet; with --engine ray, a corpus "
        "into a Parquet folder on a Ray cluster.",
    )
    parser.add_argument(
        "package",
        metavar="PACKAGE",
        help="a package folder (written by elmo-export), 'default' (shipped inside the runtime), "
        "a catalog name (downloaded once and cached; ELMO_ONNX_CATALOG adds catalogs), or "
        "hf:owner/repo[@revision] (a package on the Hugging Face Hub)",
    )
    parser.add_argument(
        "input",
        help="UTF-8 text file, one sentence per line ('-': standard input); with "
        "--engine ray also a folder or glob of them, or Parquet files with a text column",
    )
    parser.add_argument(
        "output",
        help="HDF5 (or --format npz|parquet) file to write (not '-': every format needs a "
        "file); with --engine ray a folder",
    )
    _add_output_arguments(parser)
    _add_run_arguments(parser)
    _add_cluster_arguments(parser)
    return parser


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """What is written: the layers, the format and dtype, token or sentence vectors."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--all",
        dest="layers",
        action="store_const",
        const="all",
        help="all layers, (L+1, T, dim) per sentence (default)",
    )
    which.add_argument("--top", dest="layers", action="store_const", const="top", help="the top layer, (T, dim)")
    which.add_argument(
        "--average", dest="layers", action="store_const", const="average", help="the mean of all layers, (T, dim)"
    )
    parser.set_defaults(layers="all")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="output format (default hdf5; --engine ray: parquet, a folder)"
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="float16 stores every vector in half the bytes (default float32)",
    )
    parser.add_argument(
        "--sentence-vectors",
        dest="pool",
        action="store_const",
        const="mean",
        default=None,
        help="one vector per sentence, the mean over its tokens, instead of one per token",
    )
    parser.add_argument(
        "--tokenized", action="store_true", help="lines are tokenized already: split on whitespace, not tokenized"
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """How it runs: batching, device, state, overwriting, verification, logging."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="at most N sentences per batch (default: only the token budget limits)",
    )
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        metavar="N",
        help="token positions per batch, padding included (default 512 on CPU, 4096 on CUDA)",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default auto: CUDA if usable, else CPU")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads per session")
    parser.add_argument(
        "--state",
        choices=C.STATE_MODES,
        default=None,
        help="initial LSTM state of every sentence (default: the package's)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite OUTPUT if it exists (a regular file only, never INPUT; its mode is kept)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the sha256 check of the package's files (for a package verified when deployed)",
    )
    parser.add_argument(
        "--allow-empty-lines", action="store_true", help="embed empty lines as 0 tokens instead of refusing them"
    )
    parser.add_argument("--forget-sentences", action="store_true", help="do not write the sentence_to_index dataset")
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress bar (it shows only on a terminal anyway)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    cluster = parser.add_argument_group("cluster (--engine ray: OUTPUT is a Parquet folder; see docs/corpus.md)")
    cluster.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this process (default); ray: a Ray cluster (needs elmo-onnx[ray])",
    )
    cluster.add_argument(
        "--workers", type=int, default=None, metavar="N", help="model workers (default: the cluster's CPUs / --threads)"
    )
    cluster.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="a running Ray cluster to join (default: start one on this machine)",
    )
    cluster.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        metavar="N",
        help="CPUs of the local cluster started without --address (default: all)",
    )
    cluster.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        metavar="N",
        help="sentences per chunk, the unit of work and of resuming (default: about 1/64 of the input, 16 to 2000)",
    )


# Flags only `allennlp elmo` has: any of them (or just two paths) selects its form.
ALLENNLP_FLAGS = (
    "--options-file",
    "--weight-file",
    "--cuda-device",
    "--use-sentence-keys",
    "--vocab-path",
    "--file-friendly-logging",
    "--stateful",
)


def build_allennlp_parser() -> argparse.ArgumentParser:
    """`allennlp elmo`'s arguments (AllenNLP 0.9.0), plus --stateful and --force."""
    from elmo_runtime.compat.allennlp import DEFAULT_BATCH_SIZE, DEFAULT_OPTIONS_FILE, DEFAULT_WEIGHT_FILE

    parser = argparse.ArgumentParser(
        prog="elmo-embed",
        description="AllenNLP's `allennlp elmo` command: whitespace-tokenized sentences, one a "
        "line, into AllenNLP's HDF5 layout.",
    )
    parser.add_argument("input_file", help="the input file ('-': standard input)")
    parser.add_argument("output_file", help="the HDF5 file to write")
    which = parser.add_mutually_exclusive_group()
    for flag, what in (("all", "all layers"), ("top", "the top layer"), ("average", "the average of the layers")):
        which.add_argument(f"--{flag}", dest="output_format", action="store_const", const=flag, help=f"output {what}")
    parser.set_defaults(output_format="all")
    parser.add_argument(
        "--options-file",
        default=DEFAULT_OPTIONS_FILE,
        help="the options.json (a path or AllenNLP's URL), or a package (default: AllenNLP's original)",
    )
    parser.add_argument("--weight-file", default=DEFAULT_WEIGHT_FILE, help="the weights.hdf5 (a path or URL)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="sentences per batch (default 64)")
    parser.add_argument("--cuda-device", type=int, default=-1, help="-1: the CPU (default); 0 or more: CUDA")
    parser.add_argument("--forget-sentences", action="store_true", help="leave out the sentence_to_index dataset")
    parser.add_argument("--use-sentence-keys", action="store_true", help="key each dataset by its sentence")
    parser.add_argument("--vocab-path", help="accepted and not used, as in AllenNLP 0.9")
    parser.add_argument("--file-friendly-logging", action="store_true", help="accepted; no effect")
    parser.add_argument(
        "--stateful", action="store_true", help="carry each batch row's LSTM state into the next batch, as AllenNLP did"
    )
    parser.add_argument("--force", action="store_true", help="replace OUTPUT_FILE if it exists")
    return parser


def _is_allennlp_form(argv: list[str]) -> bool:
    """Whether `argv` is `allennlp elmo`'s command line: one of its own flags, or two positionals."""
    if any(a.split("=")[0] in ALLENNLP_FLAGS for a in argv):
        return True
    parser = build_parser()
    takes_value = {s for action in parser._actions if action.nargs != 0 for s in action.option_strings}
    positionals, skip = 0, False
    for a in argv:
        if skip or a == "--":
            skip = False
            continue
        if a.startswith("-") and a != "-":
            skip = a in takes_value
        else:
            positionals += 1
    return positionals == 2


def _allennlp_main(argv: list[str]) -> int:
    """`allennlp elmo`'s form onto `ElmoEmbedder(...).embed_file(...)`, as AllenNLP's own command did."""
    from pathlib import Path

    args = build_allennlp_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="elmo-embed: %(message)s")
    try:
        from elmo_runtime.compat.allennlp import ElmoEmbedder

        if Path(args.output_file).exists() and not args.force:
            raise FileExistsError(f"output {args.output_file} exists; pass --force to overwrite it")
        embedder = ElmoEmbedder(args.options_file, args.weight_file, args.cuda_device, stateful=args.stateful)
        source = sys.stdin if args.input_file == "-" else args.input_file
        embedder.embed_file(
            source, args.output_file, args.output_format, args.batch_size, args.forget_sentences, args.use_sentence_keys
        )
    except (OSError, ValueError, TypeError, RuntimeError, ImportError) as e:
        print(f"elmo-embed: error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _is_allennlp_form(argv):
        return _allennlp_main(argv)
    args = vars(build_parser().parse_args(argv))
    quiet = args.pop("quiet")
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="elmo-embed: %(message)s")
    engine = args.pop("engine")
    cluster = {k: args.pop(k) for k in RAY_ONLY}
    with interrupts_raise() as interrupted:
        try:
            if engine == "ray":
                _embed_ray(args, cluster, interrupted.event)
            else:
                given = [f"--{k.replace('_', '-')}" for k, v in cluster.items() if v is not None]
                if given:
                    raise ValueError(f"{', '.join(given)} only apply with --engine ray")
                embed_file(**{**args, "format": args["format"] or "hdf5"}, stop=interrupted.event)
        except KeyboardInterrupt:
            signum = interrupted.signum or signal.SIGINT
            print(f"elmo-embed: interrupted ({signal.Signals(signum).name}); no output written", file=sys.stderr)
            return 128 + signum
        except (OSError, ValueError, TypeError, RuntimeError, ImportError) as e:
            print(f"elmo-embed: error: {e}", file=sys.stderr)
            return 1
        except MemoryError as e:  # pyarrow's ArrowMemoryError included
            print(
                f"elmo-embed: error: out of memory ({str(e).splitlines()[0] if str(e) else 'MemoryError'}); "
                "lower --batch-tokens, or give the process more memory",
                file=sys.stderr,
            )
            return 1
    return 0


def _embed_ray(args: dict, cluster: dict, stop) -> None:
    """--engine ray: the same flags onto `embed_to_parquet`, those that do not apply refused."""
    from elmo_runtime.corpus.job import embed_to_parquet

    if args.pop("device") not in ("auto", "cpu"):
        raise ValueError("--engine ray runs on CPUs: leave out --device")
    if args.pop("format") not in (None, "parquet"):
        raise ValueError("--engine ray writes a Parquet folder: leave out --format")
    if args.pop("forget_sentences") or args.pop("batch_size") is not None:
        raise ValueError("--forget-sentences and --batch-size do not apply with --engine ray")
    threads = args.pop("threads") or 1
    embed_to_parquet(**args, threads=threads, **cluster, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
