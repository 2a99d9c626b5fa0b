"""Parity: an exported package, run by ONNX Runtime, against the PyTorch reference.

The export gate runs the package on the CPU; `benchmarks/gpu.py` runs the same check on CUDA.

Every export runs this before the package is put in place. The check embeds a built-in set of
real English sentences (`data/parity_sentences.txt`: 24 sentences of 1 to 60 tokens, mixed
lengths, in padded batches of 8) through the package (`elmo_runtime.runner.PackageRunner`)
and through the reference, each state mode starting from the same state:

- `zero`: every batch from the zero state;
- `warm`: every batch from the package's warm state (packages exported with one);
- `carried`: the first batch from the package's default state (the same run as that mode's
  first batch, so not repeated), then each batch from the state the previous batch left, the
  package's own state fed back into the package and the reference's into the reference (the
  stateful use of the original).

It records per layer the max abs error (over every position, padding included: padding must
stay zero) and the mean and min cosine similarity of the real tokens' vectors, plus the max abs
error of the final state (`elmo_runtime.compare`). The tolerances are named, per precision, in
`PARITY_TOLERANCES`; a package that misses any of them raises `ParityError` listing every
failed check.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from elmo_export.model import ElmoBiLm, ElmoOptions, LstmState
from elmo_export.sentences import builtin_sentences, read_sentences
from elmo_runtime import contract as C
from elmo_runtime.compare import Tolerance, compare

log = logging.getLogger(__name__)

PARITY_SENTENCES = "parity_sentences.txt"
BATCH_SIZE = 8
CARRIED = "carried"  # the state mode that feeds each batch's final state into the next


# fp32 graphs differ from the reference only by summation order, an error that grows with the
# width of the products. The rule: 1e-5 below the original's 4096 LSTM cells (the fixtures' 64,
# small's 1024, medium's 2048), 1e-4 from 4096 on. Measured: fixtures and tiny <= 1.1e-6,
# synthetic small 3.5e-6, synthetic original 3.8e-6 at most.
FP32_MAX_ABS = 1e-5
FP32_MAX_ABS_LARGE = 1e-4
FP32_LARGE_DIM = 4096

PARITY_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=FP32_MAX_ABS),  # FP32_MAX_ABS_LARGE from dim >= FP32_LARGE_DIM
    "fp16": Tolerance(min_cosine=0.999),
    "int8": Tolerance(mean_cosine=0.99),
    "int4": Tolerance(mean_cosine=0.98),
}


def tolerance_for(precision: str, options: ElmoOptions) -> Tolerance:
    """The named tolerance of `precision`, with the fp32 rule by LSTM width applied.

    Raises:
        ValueError: unknown precision (the known ones are listed).
    """
    precision = C.precision_name(precision)
    if precision == "fp32" and options.dim >= FP32_LARGE_DIM:
        return Tolerance(max_abs=FP32_MAX_ABS_LARGE)
    return PARITY_TOLERANCES[precision]


class ParityError(RuntimeError):
    """A package that does not reproduce the reference within its precision's tolerance.

    Attributes:
        report: the full `ParityReport`.
        failures: one line per failed check.
    """

    def __init__(self, report: "ParityReport"):
        self.report = report
        self.failures = list(report.failures)
        super().__init__(
            f"the {report.precision} package fails parity with the reference "
            f"({len(self.failures)} failed checks):\n  " + "\n  ".join(self.failures)
        )


@dataclass
class LayerParity:
    """One layer in one state mode. Cosines over real tokens; max abs over all positions."""

    layer: int
    max_abs: float
    mean_cosine: float
    min_cosine: float


@dataclass
class ModeParity:
    """One state mode: every layer, and the final state after each batch."""

    mode: str
    layers: list[LayerParity]
    final_state_max_abs: float


@dataclass
class ParityReport:
    """Parity of one package with the reference, as stored in the manifest's `parity` entry."""

    precision: str
    tolerance: Tolerance
    sentences: int
    tokens: int
    batch_size: int
    source: str
    modes: list[ModeParity]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def worst(self) -> dict:
        """The worst figure of each kind over all modes and layers."""
        layers = [layer for m in self.modes for layer in m.layers]
        if not layers:
            return {}
        return {
            "max_abs": max(layer.max_abs for layer in layers),
            "mean_cosine": min(layer.mean_cosine for layer in layers),
            "min_cosine": min(layer.min_cosine for layer in layers),
            "final_state_max_abs": max(m.final_state_max_abs for m in self.modes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ParityReport":
        """The inverse of `to_dict` (e.g. from a manifest's `parity` entry)."""
        modes = [
            ModeParity(m["mode"], [LayerParity(**layer) for layer in m["layers"]], m["final_state_max_abs"])
            for m in data["modes"]
        ]
        return cls(
            data["precision"],
            Tolerance(**data["tolerance"]),
            data["sentences"],
            data["tokens"],
            data["batch_size"],
            data["source"],
            modes,
            list(data["failures"]),
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        data["worst"] = self.worst()
        return data

    def table(self) -> str:
        """A fixed-width table, one line per mode and layer (none for a check without modes), then the verdict."""
        header = f"{'state':<8} {'layer':>5} {'max abs':>10} {'mean cos':>10} {'min cos':>10} {'state max abs':>14}"
        lines = [header] if self.modes else []
        for m in self.modes:
            for layer in m.layers:
                state = f"{m.final_state_max_abs:14.2e}" if layer.layer == 0 else ""
                lines.append(
                    f"{m.mode:<8} {layer.layer:>5} {layer.max_abs:10.2e} {layer.mean_cosine:10.6f} "
                    f"{layer.min_cosine:10.6f} {state}"
                )
        t = self.tolerance
        bar = ", ".join(f"{k} {'<=' if k == 'max_abs' else '>='} {v:g}" for k, v in asdict(t).items() if v is not None)
        lines.append(f"{self.precision} tolerance: {bar} -> {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def load_sentences(path: str | Path | None = None) -> list[list[str]]:
    """Read tokenized sentences: one per line, tokens split by spaces, `#` lines skipped.

    Args:
        path: a file; None reads the built-in `elmo_export/data/parity_sentences.txt`.
    """
    return builtin_sentences(PARITY_SENTENCES)[0] if path is None else read_sentences(path, comments=True)


@dataclass
class ReferenceOutputs:
    """The reference's side of a parity check: a function of the weights alone.

    Attributes:
        sentences: the tokenized sentences, in batches of `batch_size`.
        warm: the warm initial state `(h (L, 2, P), c (L, 2, D))`, or None for zero-state packages.
        runs: per state mode, per batch: `(layers (L+1, B, T, 2P), mask (B, T), final_h, final_c)`.
        source: what the sentences are, for the report.
    """

    sentences: list[list[str]]
    batch_size: int
    warm: tuple[np.ndarray, np.ndarray] | None
    runs: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]
    source: str

    @property
    def modes(self) -> list[str]:
        return list(self.runs)

    def batches(self) -> list[list[list[str]]]:
        return [self.sentences[i : i + self.batch_size] for i in range(0, len(self.sentences), self.batch_size)]

    def warm_state(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The warm state repeated over `batch` rows: `(L, 2, B, P)`, `(L, 2, B, D)`."""
        h, c = self.warm
        return np.repeat(h[:, :, None], batch, axis=2), np.repeat(c[:, :, None], batch, axis=2)


def _state_modes(warm: bool) -> list[str]:
    return [C.ZERO, C.WARM, CARRIED] if warm else [C.ZERO, CARRIED]


Run = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # layers, mask, final_h, final_c


def _run_mode(
    mode: str,
    batches: list[list[list[str]]],
    first_runs: dict[str, Run],
    default_mode: str,
    initial_state: Callable[[str, int], tuple],
    run: Callable[[list[list[str]], tuple], Run],
) -> Iterator[Run]:
    """The runs of one state mode over the batches, for the reference and the package alike.

    "zero" and "warm": every batch from that state (`initial_state(mode, rows)`). "carried":
    the first batch starts from the default mode's state, so it is that mode's first run
    (`first_runs`, not repeated); then each batch starts from the state the previous one left.
    """
    state = None
    for k, batch in enumerate(batches):
        if mode == CARRIED and k == 0:
            out = first_runs[default_mode]
        else:
            if mode != CARRIED:
                state = initial_state(mode, len(batch))
            out = run(batch, state)
            if k == 0:
                first_runs[mode] = out
        state = out[2], out[3]
        yield out


def reference_outputs(
    model: ElmoBiLm,
    warm: LstmState | tuple[np.ndarray, np.ndarray] | None,
    sentences: Sequence[Sequence[str]] | None = None,
    batch_size: int = BATCH_SIZE,
    progress: bool = False,
) -> ReferenceOutputs:
    """Run the reference over the parity batches in every state mode.

    Args:
        model: the reference biLM.
        warm: the package's warm state `h (L, 2, P)`, `c (L, 2, D)`; None for a zero-state package.
        sentences: tokenized sentences; None: the built-in parity sentences.
        batch_size: sentences per padded batch.
        progress: a tqdm bar over the batches.
    """
    builtin = "built-in parity sentences (elmo_export/data/parity_sentences.txt)"
    source = builtin if sentences is None else "given sentences"
    sentences = load_sentences() if sentences is None else [list(s) for s in sentences]
    if not sentences or any(len(s) == 0 for s in sentences):
        raise ValueError("parity needs at least one sentence, and no empty sentence")
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size!r}; expected >= 1")
    if warm is not None:
        warm = tuple(np.asarray(v, dtype=np.float32) for v in warm)
    out = ReferenceOutputs(sentences, batch_size, warm, {}, source)

    def initial_state(mode: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
        if mode == C.ZERO:
            return tuple(v.numpy() for v in model.zero_state(rows))
        return out.warm_state(rows)

    def run(batch: list[list[str]], state: tuple[np.ndarray, np.ndarray]) -> Run:
        ref = model.run_tokens(batch, LstmState(*(torch.from_numpy(v) for v in state)))
        return ref.layers.numpy(), ref.mask.numpy(), ref.state.h.numpy(), ref.state.c.numpy()

    modes, batches, first_runs = _state_modes(warm is not None), out.batches(), {}
    default_mode = C.WARM if warm is not None else C.ZERO
    with torch.no_grad(), _bar(len(modes) * len(batches), "parity (reference)", progress) as bar:
        for mode in modes:
            out.runs[mode] = []
            for result in _run_mode(mode, batches, first_runs, default_mode, initial_state, run):
                out.runs[mode].append(result)
                bar.update()
    return out


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="batch", disable=None if progress else True, leave=False)


class _ModeErrors:
    """The running figures of one state mode: per layer max abs and cosines, final-state max abs."""

    def __init__(self, n_layers: int):
        self.max_abs = np.zeros(n_layers)
        self.cos_sum, self.cos_min, self.tokens = np.zeros(n_layers), np.ones(n_layers), 0
        self.state_max_abs = 0.0

    def add(self, got: Run, want: Run) -> None:
        (layers, _, final_h, final_c), (want_layers, real, want_h, want_c) = got, want
        figures, tokens = compare(layers, want_layers, real), int(real.sum())
        self.max_abs = np.maximum(self.max_abs, figures.max_abs)
        self.cos_sum += figures.mean_cosine * tokens
        self.cos_min = np.minimum(self.cos_min, figures.min_cosine)
        self.tokens += tokens
        # np.max, not max(): a NaN must propagate, and max(0.0, nan) is 0.0.
        self.state_max_abs = float(
            np.max([self.state_max_abs, np.abs(final_h - want_h).max(), np.abs(final_c - want_c).max()])
        )

    def result(self, mode: str) -> ModeParity:
        layers = [
            LayerParity(k, float(self.max_abs[k]), float(self.cos_sum[k] / max(self.tokens, 1)), float(self.cos_min[k]))
            for k in range(len(self.max_abs))
        ]
        return ModeParity(mode, layers, self.state_max_abs)


def _initial_state_mismatch(manifest, reference: ReferenceOutputs) -> list[str]:
    """Whether the package starts from the state the reference ran from (a manifest round trip)."""
    package_warm = manifest.initial_state_mode == C.WARM
    if package_warm != (reference.warm is not None):
        return [
            f"the package's initial state is {manifest.initial_state_mode!r}, the reference's "
            f"{C.WARM if reference.warm is not None else C.ZERO}"
        ]
    if package_warm and not (
        np.array_equal(manifest.warm_h, reference.warm[0]) and np.array_equal(manifest.warm_c, reference.warm[1])
    ):
        return ["the package's warm state differs from the exported one (manifest round trip)"]
    return []


def _compare_modes(
    runner, reference: ReferenceOutputs, n_layers: int, progress: bool
) -> tuple[list[ModeParity], list[str]]:
    """Run the package over the parity batches in every mode the reference ran, and compare."""

    def run(batch: list[list[str]], state: tuple[np.ndarray, np.ndarray]) -> Run:
        return runner.run(runner.scheme.encode_batch(batch), *state)

    results, failures, first_runs = [], [], {}
    batches = reference.batches()
    with _bar(len(reference.modes) * len(batches), "parity (onnxruntime)", progress) as bar:
        for mode in reference.modes:
            errors = _ModeErrors(n_layers)
            package_runs = _run_mode(
                mode, batches, first_runs, runner.manifest.initial_state_mode, runner.initial_state, run
            )
            for got, want in zip(package_runs, reference.runs[mode]):
                layers, mask = got[0], got[1]
                if layers.shape != want[0].shape or not np.array_equal(mask.astype(bool), want[1]):
                    failures.append(
                        f"state {mode}: layers have shape {layers.shape} and mask {mask.shape} "
                        f"({int(mask.sum())} tokens), the reference {want[0].shape} "
                        f"({int(want[1].sum())} tokens)"
                    )
                    break
                errors.add(got, want)
                bar.update()
            results.append(errors.result(mode))
    return results, failures


def check_parity(
    model: ElmoBiLm,
    package_dir: str | Path,
    precision: str,
    *,
    reference: ReferenceOutputs | None = None,
    tolerance: Tolerance | None = None,
    progress: bool = False,
    raise_on_failure: bool = True,
    device: str = "cpu",
) -> ParityReport:
    """Compare the package in `package_dir` with `model` on the parity sentences.

    Args:
        model: the reference the package was exported from.
        package_dir: the package (its manifest is read by `PackageRunner`).
        precision: "fp32", "fp16", "int8" or "int4": picks the tolerance.
        reference: the reference's outputs (`reference_outputs`); None: computed here on the
            built-in sentences, from the package's own warm state.
        tolerance: overrides the named tolerance.
        progress: tqdm bars over the batches.
        raise_on_failure: raise `ParityError` when a check fails (else return the report).
        device: where ONNX Runtime runs the package ("cpu" for the export's gate; "cuda" checks
            the GPU path against the same reference and tolerance).

    Returns:
        The `ParityReport`.

    Raises:
        ParityError: a check failed (all failures listed), if `raise_on_failure`.
    """
    from elmo_runtime.runner import PackageRunner

    precision = C.precision_name(precision)
    if tolerance is None:
        tolerance = tolerance_for(precision, model.options)
    runner = PackageRunner(package_dir, device=device, require_parity=False)
    m = runner.manifest
    if reference is None:
        warm = (m.warm_h, m.warm_c) if m.initial_state_mode == C.WARM else None
        reference = reference_outputs(model, warm, progress=progress)

    failures = _initial_state_mismatch(m, reference)
    modes = []
    if not failures:
        modes, failures = _compare_modes(runner, reference, model.options.n_layers + 1, progress)
    sentences = reference.sentences
    report = ParityReport(
        precision, tolerance, len(sentences), sum(map(len, sentences)), reference.batch_size, reference.source, modes
    )
    report.failures = failures + _failures(report)
    for line in report.table().splitlines():
        log.debug(line)
    if report.failures and raise_on_failure:
        raise ParityError(report)
    return report


def _failures(report: ParityReport) -> list[str]:
    t, failures = report.tolerance, []
    for m in report.modes:
        for layer in m.layers:
            where = f"state {m.mode}, layer {layer.layer}"
            failures += [f"{where}: {v}" for v in t.violations(layer.max_abs, layer.mean_cosine, layer.min_cosine)]
        if not np.isfinite(m.final_state_max_abs):
            failures.append(f"state {m.mode}, final state: non-finite (max abs difference {m.final_state_max_abs})")
        elif t.max_abs is not None and not m.final_state_max_abs <= t.max_abs:
            failures.append(
                f"state {m.mode}, final state: max abs difference {m.final_state_max_abs:.3g} > {t.max_abs:g}"
            )
    return failures
