"""Conformance vectors: a package's own expected outputs on edge-case sentences, and their check.

Every package carries `conformance.json` (written at export, listed in the manifest's `files`
with its sha256): sentences chosen to hit the edge cases of the char-id scheme and the sentence
rules, each with its char ids and its expected layers from the zero and (warm packages) the
warm state, and the tolerance a runtime must meet for the package's precision. The file is
language-neutral JSON; its layout is in `docs/package-format.md`. `verify_package` runs the
installed runtime on it; `elmo-verify PACKAGE` is its command line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elmo_runtime.compare import Tolerance, compare
from elmo_runtime.interrupts import stdout_gone

log = logging.getLogger(__name__)

KIND = "elmo-onnx conformance vectors"
ARRAY_ENCODING = "float32 little-endian, C order, base64"


class ConformanceFileError(ValueError):
    """A conformance file that cannot be read; the message names the entry."""


# What another runtime must meet, per precision: another ONNX Runtime version, binding, thread
# count, optimization level or CPU. Measured (docs/package-format.md, "Conformance vectors"):
# Node.js (onnxruntime-node 1.30) and Python (1.32), 1 or 2 threads, reproduce the vectors bit
# for bit in every precision; other optimization levels (other kernels) differ by 1.4e-6 (fp32),
# 3.9e-3 (fp16: one float16 step) and 0 (int8); a 1-ulp nudge of every token embedding, what a
# CPU with other SIMD instructions may cause, moves int8 layers by 0.025 (min cosine 0.99998,
# default model). The bars leave a margin of 4x or more over these. `elmo-verify` applies these,
# never the bar a conformance file states: a tampered file could lower its own (NaN passes all).
CONFORMANCE_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4),
    "fp16": Tolerance(max_abs=2e-2, min_cosine=0.9999),
    "int8": Tolerance(max_abs=1e-1, min_cosine=0.999),
    "int4": Tolerance(max_abs=1e-2, min_cosine=0.9999),
}


def encode_array(array: np.ndarray) -> dict:
    """A float32 array as `{"shape": [...], "float32_base64": "..."}` (little-endian, C order)."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(a.shape), "float32_base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(entry: object, where: str) -> np.ndarray:
    """The inverse of `encode_array`.

    Raises:
        ConformanceFileError: a malformed entry (naming `where`).
    """
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("shape"), list)
        or not isinstance(entry.get("float32_base64"), str)
    ):
        raise ConformanceFileError(f"{where}: expected {{'shape': [...], 'float32_base64': '...'}}")
    shape = entry["shape"]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ConformanceFileError(f"{where}: shape {shape!r} is not a list of sizes")
    try:
        raw = base64.b64decode(entry["float32_base64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConformanceFileError(f"{where}: float32_base64 is not base64 ({e})") from None
    count = int(np.prod(shape))
    if len(raw) != 4 * count:
        raise ConformanceFileError(f"{where}: {len(raw)} bytes of data for shape {shape} ({4 * count} expected)")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


@dataclass
class LayerCheck:
    """One layer of one sentence in one state."""

    sentence: int
    name: str
    state: str | None  # None: a problem of the sentence itself (its entry, its char ids)
    layer: int | None  # None: the sentence failed before its layers (a run error, a shape)
    max_abs: float | None = None
    min_cosine: float | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        state = "" if self.state is None else f", state {self.state}"
        layer = "" if self.layer is None else f", layer {self.layer}"
        head = f"sentence {self.sentence} ({self.name!r})" if self.sentence >= 0 else self.name
        return f"{head}{state}{layer}"


@dataclass
class VerifyReport:
    """What `verify_package` found: every check, and one line per failure."""

    package: str
    precision: str | None = None
    tolerance: Tolerance | None = None
    checks: list[LayerCheck] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures and bool(self.checks)

    def fail(self, check: LayerCheck) -> None:
        """Record a check that failed before any figure (its `error` says why)."""
        self.checks.append(check)
        self.failures.append(f"{check.where}: {check.error}")

    def worst(self) -> dict:
        """The worst max abs and min cosine over every layer checked."""
        measured = [c for c in self.checks if c.max_abs is not None]
        if not measured:
            return {}
        return {
            "max_abs": float(np.max([c.max_abs for c in measured])),
            "min_cosine": float(np.min([c.min_cosine for c in measured])),
        }


def read_conformance(path: Path) -> dict:
    """Read and check the layout of a conformance file (not its arrays: `decode_array` does that).

    Raises:
        ConformanceFileError: not JSON, or a required entry missing (named).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConformanceFileError(f"{path}: cannot read the conformance vectors ({e})") from None
    except RecursionError:
        raise ConformanceFileError(f"{path}: cannot read the conformance vectors (JSON nested too deeply)") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ConformanceFileError(f"{path}: not a conformance file (its 'kind' is not {KIND!r})")
    tol = data.get("tolerance")
    if not isinstance(tol, dict) or not isinstance(tol.get("max_abs"), (int, float)):
        raise ConformanceFileError(f"{path}: missing field 'tolerance.max_abs'")
    if not isinstance(data.get("sentences"), list) or not data["sentences"]:
        raise ConformanceFileError(f"{path}: missing field 'sentences' (a non-empty list)")
    return data


def verify_package(package: str | Path, device: str = "cpu", threads: int | None = None) -> VerifyReport:
    """Run the installed runtime on a package's conformance vectors.

    Each sentence runs alone, through `Elmo.embed` with the token cache off, from each state the
    file has expected layers for. Nothing raises: every problem (a damaged manifest or file, a
    malformed entry, a run error, a layer out of tolerance) becomes a failure line naming the
    sentence, state and layer where there is one.

    Args:
        package: the package: a directory, or a name as `Elmo` takes it (`default`, a catalog
            name, `hf:owner/repo`).
        device, threads: as for `Elmo`.

    Returns:
        The `VerifyReport`; `passed` is True when every layer of every sentence is within tolerance.
    """
    from elmo_runtime.embedder import Elmo
    from elmo_runtime.fetch.download import DownloadError
    from elmo_runtime.fetch.resolve import resolve_package
    from elmo_runtime.package import PackageError, load_manifest, sha256_of

    report = VerifyReport(str(package))
    try:  # hashes checked below, so that a damaged file is reported along with what it does
        manifest = load_manifest(resolve_package(package, progress=False), verify_files=False)
    except (FileNotFoundError, PackageError, ValueError, DownloadError) as e:
        report.failures.append(f"package: {e}")
        return report
    report.precision = manifest.precision
    for name, entry in manifest.files.items():
        if isinstance(entry, dict) and entry.get("sha256") and sha256_of(manifest.directory / name) != entry["sha256"]:
            report.failures.append(f"file {name!r}: does not match its sha256 in the manifest (damaged)")
    checks = _conformance_of(manifest, report)
    if checks is None:
        return report
    try:
        elmo = Elmo(manifest.directory, device=device, threads=threads, token_cache=0, verify=False)
    except Exception as e:  # as above: reported, never a traceback
        report.failures.append(f"package: the runtime cannot load it ({type(e).__name__}: {e})")
        return report
    _run_checks(report, elmo, *checks)
    return report


def verify_loaded(elmo) -> VerifyReport:
    """The conformance vectors of the package an `Elmo` has loaded, run on that `Elmo`'s own
    sessions: what a server checks before it says it is ready (its files' hashes were checked
    when it loaded them; see `verify_package` for the whole check of a folder).
    """
    manifest = elmo.manifest
    report = VerifyReport(str(manifest.directory))
    report.precision = manifest.precision
    checks = _conformance_of(manifest, report)
    if checks is not None:
        _run_checks(report, elmo, *checks)
    return report


def _conformance_of(manifest, report: VerifyReport) -> tuple[dict, Tolerance] | None:
    """The package's conformance file and its precision's bar, or None with the failure reported."""
    try:
        data = read_conformance(manifest.conformance_file)
    except ConformanceFileError as e:
        report.failures.append(str(e))
        return None
    # The precision's own bar, not the file's `tolerance`: the file is what is being checked.
    report.tolerance = tol = CONFORMANCE_TOLERANCES.get(manifest.precision)
    if tol is None:
        report.failures.append(
            f"package: precision {manifest.precision!r} has no conformance bar in this runtime "
            f"(it knows {', '.join(CONFORMANCE_TOLERANCES)})"
        )
        return None
    return data, tol


def _run_checks(report: VerifyReport, elmo, data: dict, tol: Tolerance) -> None:
    scheme = elmo.runner.scheme
    for i, sentence in enumerate(data["sentences"]):
        _check_sentence(report, elmo, scheme, tol, i, sentence)
    _verify_cases(elmo, data, report)


def _check_sentence(report: VerifyReport, elmo, scheme, tol: Tolerance, i: int, sentence: object) -> None:
    """One sentence of the file: its char (and word) ids, then its layers from each state."""
    name = sentence.get("name", "?") if isinstance(sentence, dict) else "?"
    tokens = sentence.get("tokens") if isinstance(sentence, dict) else None
    expected = sentence.get("expected") if isinstance(sentence, dict) else None
    if (
        not isinstance(tokens, list)
        or not all(isinstance(t, str) for t in tokens)
        or not isinstance(expected, dict)
        or not expected
    ):
        report.fail(
            LayerCheck(
                i,
                name,
                None,
                None,
                error="malformed entry: needs 'tokens' (a list of str) and 'expected' (state -> layers)",
            )
        )
        return
    for input_name, ids in scheme.encode(tokens).items():  # char_ids; word_ids with a word table
        want_ids, got_ids = sentence.get(input_name), ids.tolist()
        if want_ids != got_ids:
            bad = next(
                (j for j, (a, b) in enumerate(zip(got_ids, want_ids or [])) if a != b),
                min(len(got_ids), len(want_ids or [])),
            )
            what = input_name.replace("_", " ")
            report.fail(LayerCheck(i, name, None, None, error=f"{what} differ from the file's at token {bad}"))
    for state, entry in expected.items():
        try:
            want = decode_array(entry, "expected layers")
            got = elmo.embed([tokens], state=state)[0]  # (L + 1, T, dim)
        except ConformanceFileError as e:
            report.fail(LayerCheck(i, name, state, None, error=str(e)))
            continue
        except Exception as e:  # a verifier reports whatever the runtime raises, as a failure
            report.fail(LayerCheck(i, name, state, None, error=f"the runtime failed: {type(e).__name__}: {e}"))
            continue
        if got.shape != want.shape:
            report.fail(
                LayerCheck(
                    i, name, state, None, error=f"layers have shape {list(got.shape)}, expected {list(want.shape)}"
                )
            )
            continue
        figures = compare(got, want)
        for k in range(got.shape[0]):
            check = LayerCheck(i, name, state, k, float(figures.max_abs[k]), float(figures.min_cosine[k]))
            report.checks.append(check)
            # The first violation only: one line per layer, as the Node.js client reports.
            report.failures += [
                f"{check.where}: {v}" for v in tol.violations(check.max_abs, None, check.min_cosine)[:1]
            ]


def _check_layers(report: VerifyReport, check: LayerCheck, got: np.ndarray, want: np.ndarray) -> None:
    """Compare one case's layers within the report's tolerance, one check per layer."""
    tol = report.tolerance
    if got.shape != want.shape:
        check.error = f"layers have shape {list(got.shape)}, expected {list(want.shape)}"
        report.checks.append(check)
        report.failures.append(f"{check.where}: {check.error}")
        return
    figures = compare(got, want) if got.size else None
    max_abs = figures.max_abs if figures else np.zeros(got.shape[0])
    min_cos = figures.min_cosine if figures else np.ones(got.shape[0])
    for k in range(got.shape[0]):
        one = dataclasses.replace(check, layer=k, max_abs=float(max_abs[k]), min_cosine=float(min_cos[k]))
        report.checks.append(one)
        if not np.isfinite(max_abs[k]):
            report.failures.append(f"{one.where}: non-finite values")
        elif max_abs[k] > tol.max_abs:
            report.failures.append(f"{one.where}: max abs difference {max_abs[k]:.3g} > {tol.max_abs:g}")
        elif tol.min_cosine is not None and min_cos[k] < tol.min_cosine:
            report.failures.append(f"{one.where}: min cosine {min_cos[k]:.6f} < {tol.min_cosine:g}")


def _verify_cases(elmo, data: dict, report: VerifyReport) -> None:
    """The format 3 cases: a sentence in time chunks, a carried stream, raw text to tokens."""
    from elmo_runtime.tokenize import tokenize

    def guarded(where: str, run) -> None:
        try:
            run()
        except Exception as e:  # a verifier reports whatever the runtime raises, as a failure
            report.failures.append(f"{where}: {type(e).__name__}: {e}")

    chunks = data.get("time_chunks")
    if isinstance(chunks, dict):

        def run_chunks() -> None:
            # The runtime's chunk is batch_tokens // 2 - 2 tokens (two rows per call, <S> and </S>).
            budget = 2 * (int(chunks["chunk_tokens"]) + 2)
            for state, entry in chunks["expected"].items():
                got = elmo.embed([chunks["tokens"]], state=state, batch_tokens=budget)[0]
                want = decode_array(entry["layers"], "time chunks")
                _check_layers(report, LayerCheck(-1, chunks.get("name", "time chunks"), state, None), got, want)

        guarded("time chunks", run_chunks)
    stream = data.get("stream")
    if isinstance(stream, dict):

        def run_stream() -> None:
            for state, calls in stream["expected"].items():
                carried = elmo.stream(state)
                for k, (batch, want_rows) in enumerate(zip(stream["calls"], calls)):
                    for b, (got, entry) in enumerate(zip(carried.embed(batch), want_rows)):
                        check = LayerCheck(-1, f"{stream.get('name', 'stream')} call {k} row {b}", state, None)
                        _check_layers(report, check, got, decode_array(entry, "stream"))

        guarded("stream", run_stream)
    tokenizer = data.get("tokenizer")
    for i, case in enumerate(tokenizer.get("cases", []) if isinstance(tokenizer, dict) else []):
        got = tokenize(case["text"])
        if got != case["tokens"]:
            report.failures.append(
                f"tokenizer case {i} ({case['text'][:40]!r}): tokens {got} differ from {case['tokens']}"
            )


def main(argv: list[str] | None = None) -> int:
    """`elmo-verify PACKAGE`: exit 0 when the installed runtime reproduces the package's vectors, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="elmo-verify",
        description="Check that this runtime reproduces a package's conformance vectors (conformance.json).",
    )
    parser.add_argument(
        "package",
        help="a package directory written by elmo-export, or a name as Elmo takes it "
        "(default, a catalog name, hf:owner/repo)",
    )
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads per session")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    report = verify_package(args.package, device=args.device, threads=args.threads)
    try:
        _print_report(args, report)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): no traceback
        return stdout_gone()
    return 0 if report.passed else 1


def _print_report(args: argparse.Namespace, report: VerifyReport) -> None:
    if args.json:
        print(
            json.dumps(
                {
                    "package": report.package,
                    "precision": report.precision,
                    "passed": report.passed,
                    "worst": report.worst(),
                    "failures": report.failures,
                },
                indent=1,
            )
        )
    else:
        sentences = {c.sentence for c in report.checks if c.sentence >= 0}
        worst = report.worst()
        summary = (
            f"{len(sentences)} sentences, {len(report.checks)} layer checks; worst max abs "
            f"{worst['max_abs']:.3g}, min cosine {worst['min_cosine']:.6f}"
            if worst
            else "nothing checked"
        )
        tol = (
            ""
            if report.tolerance is None
            else f" (tolerance max abs {report.tolerance.max_abs:g}"
            + (f", min cosine {report.tolerance.min_cosine:g})" if report.tolerance.min_cosine is not None else ")")
        )
        if report.passed:
            print(f"{args.package}: conformance passed ({report.precision}): {summary}{tol}")
        else:
            print(
                f"{args.package}: conformance FAILED ({len(report.failures)} failures; {summary}{tol})", file=sys.stderr
            )
            for line in report.failures:
                print(f"  {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
