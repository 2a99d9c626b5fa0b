"""`elmo-embed`: the command line of `elmo_runtime.corpus.files.embed_file` (and, with --engine ray,
of `elmo_runtime.corpus.job.embed_to_parquet`).

    elmo-embed PACKAGE INPUT OUTPUT [--all|--top|--average] [--batch-size N] [--device ...]

Each option maps onto one keyword argument of `embed_file`; see there for the output layout
and the input rules.
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
    parser.add_argument("package", metavar="PACKAGE",
                        help="a package folder (written by elmo-export), 'default' (shipped inside the runtime), "
                             "a catalog name (downloaded once and cached; ELMO_ONNX_CATALOG adds catalogs), or "
                             "hf:owner/repo[@revision] (a package on the Hugging Face Hub)")
    parser.add_argument("input", help="UTF-8 text file, one sentence per line ('-': standard input); with "
                                      "--engine ray also a folder or glob of them, or Parquet files with a text column")
    parser.add_argument("output", help="HDF5 (or --format npz|parquet) file to write (not '-': every format needs a "
                                       "file); with --engine ray a folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", dest="layers", action="store_const", const="all",
                       help="all layers, (L+1, T, dim) per sentence (default)")
    which.add_argument("--top", dest="layers", action="store_const", const="top",
                       help="the top layer, (T, dim)")
    which.add_argument("--average", dest="layers", action="store_const", const="average",
                       help="the mean of all layers, (T, dim)")
    parser.set_defaults(layers="all")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default hdf5; --engine ray: parquet, a folder)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="float16 stores every vector in half the bytes (default float32)")
    parser.add_argument("--sentence-vectors", dest="pool", action="store_const", const="mean", default=None,
                        help="one vector per sentence, the mean over its tokens, instead of one per token")
    parser.add_argument("--tokenized", action="store_true",
                        help="lines are tokenized already: split on whitespace, not tokenized")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="at most N sentences per batch (default: only the token budget limits)")
    parser.add_argument("--batch-tokens", type=int, default=None, metavar="N",
                        help="token positions per batch, padding included (default 512 on CPU, 4096 on CUDA)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="default auto: CUDA if usable, else CPU")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads per session")
    parser.add_argument("--state", choices=C.STATE_MODES, default=None,
                        help="initial LSTM state of every sentence (default: the package's)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite OUTPUT if it exists (a regular file only, never INPUT; its mode is kept)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the sha256 check of the package's files (for a package verified when deployed)")
    parser.add_argument("--allow-empty-lines", action="store_true",
                        help="embed empty lines as 0 tokens instead of refusing them")
    parser.add_argument("--forget-sentences", action="store_true",
                        help="do not write the sentence_to_index dataset")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (it shows only on a terminal anyway)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    cluster = parser.add_argument_group("cluster (--engine ray: OUTPUT is a Parquet folder; see the README)")
    cluster.add_argument("--engine", choices=ENGINES, default="local",
                         help="local: this process (default); ray: a Ray cluster (needs elmo-onnx[ray])")
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help="model workers (default: the cluster's CPUs / --threads)")
    cluster.add_argument("--address", default=None, metavar="ADDR",
                         help="a running Ray cluster to join (default: start one on this machine)")
    cluster.add_argument("--num-cpus", type=int, default=None, metavar="N",
                         help="CPUs of the local cluster started without --address (default: all)")
    cluster.add_argument("--chunk-rows", type=int, default=None, metavar="N",
                         help="sentences per chunk, the unit of work and of resuming (default: about "
                              "1/64 of the input, 16 to 2000)")
    return parser


def main(argv: list[str] | None = None) -> int:
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
