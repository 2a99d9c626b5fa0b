"""ONNX Runtime sessions for a package's two graphs, and one call of each.

This is the low-level path (arrays in, arrays out) that the `Elmo` class and the exporter's
parity check share.
"""

from __future__ import annotations

import functools
import logging
import numbers
import os
from importlib import metadata
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import onnxruntime as ort

from elmo_runtime import contract as C
from elmo_runtime.graph_files import GraphBytes, GraphFormatError
from elmo_runtime.package import Manifest, PackageError, load_package
from elmo_runtime.token_schemes import SchemeError, TokenScheme, scheme_from_manifest

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# onnxruntime and onnxruntime-gpu install the same `onnxruntime` module: never both at once. The
# extras bring CUDA and cuDNN as pip packages, for machines without a system-wide CUDA.
GPU_INSTALL = 'pip uninstall -y onnxruntime && pip install "onnxruntime-gpu[cuda,cudnn]"'
GPU_INSTALL_OVER_BOTH = 'pip uninstall -y onnxruntime onnxruntime-gpu && pip install "onnxruntime-gpu[cuda,cudnn]"'

# ONNX Runtime's own exception classes (not exported at the top level): what loading a broken
# graph raises, and what a failing run raises.
_ORT_ERRORS = ort.capi.onnxruntime_pybind11_state
# InvalidArgument too: a 0-byte graph ("No graph was found in the protobuf") and some damaged
# ones raise it; and NoSuchFile, NotImplemented (an unknown op) for others.
LOAD_ERRORS = (
    _ORT_ERRORS.InvalidGraph,
    _ORT_ERRORS.InvalidProtobuf,
    _ORT_ERRORS.Fail,
    _ORT_ERRORS.InvalidArgument,
    _ORT_ERRORS.NoSuchFile,
    _ORT_ERRORS.NotImplemented,
)
RUN_ERRORS = (_ORT_ERRORS.Fail, _ORT_ERRORS.RuntimeException, _ORT_ERRORS.InvalidArgument, _ORT_ERRORS.EPFail)
# The thread limit (`max_threads`): this many per CPU, and never below the floor.
THREADS_PER_CPU = 4
MIN_MAX_THREADS = 16
# The element types of ONNX Runtime's NodeArg.type strings.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(int32)": "int32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
}


def providers_for(device: str) -> list[str]:
    """The execution providers to ask for, checked against what onnxruntime offers.

    Raises:
        ValueError: an unknown device.
        RuntimeError: device="cuda" and onnxruntime offers no CUDA provider (the error lists
            the providers it does offer and how to install the GPU build).
    """
    if device not in DEVICES:
        raise ValueError(f"device is {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    _warn_if_two_onnxruntimes()
    if CUDA in available:
        _preload_cuda_libraries()
        return [CUDA, CPU]
    if device == "cuda":
        raise RuntimeError(
            f"device='cuda' but onnxruntime offers no {CUDA} (available: {', '.join(available)}); "
            f"install the GPU build ({GPU_INSTALL}) or use device='cpu'"
        )
    return [CPU]


def max_threads() -> int:
    """The most intra-op threads a session may have: 4 per CPU this process may run on, at least 16.

    More threads than cores only wait for each other; and thousands of them (`--threads 20000`)
    left ONNX Runtime deadlocked in its thread pool under a memory cap, deaf to SIGTERM.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(MIN_MAX_THREADS, THREADS_PER_CPU * cpus)


def check_threads(threads: int | None) -> None:
    """Refuse a thread count that is not a positive integer, or over `max_threads()`.

    Raises:
        ValueError: naming the value and the limit.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads is {threads!r}; expected a positive integer or None")
    if threads > max_threads():
        raise ValueError(
            f"threads is {threads}; at most {max_threads()} ({THREADS_PER_CPU} per CPU this process may "
            f"use, at least {MIN_MAX_THREADS}): more threads than cores only wait for each other"
        )


def create_session(graph: Path | GraphBytes, device: str = "auto", threads: int | None = None) -> ort.InferenceSession:
    """One inference session on `device`, made from bytes: `graph` as verified
    (`package.load_package`), or a path whose graph and weights files are read here once.

    ONNX Runtime gets the graph's bytes and each external-data file's bytes
    (`add_external_initializers_from_files_in_memory`) and opens no file itself: the weights it
    runs are the bytes that were checked, whatever happens to the files after.

    "auto" takes CUDA when onnxruntime offers it and it starts, else the CPU (with a warning
    when the CUDA provider is there but failed to start); "cuda" that ends up on the CPU is
    an error.

    Raises:
        ValueError: an unknown device or a bad thread count.
        RuntimeError: device="cuda" and CUDA is not usable.
        PackageError: ONNX Runtime cannot load the graph.
    """
    if not isinstance(graph, GraphBytes):
        try:
            graph = GraphBytes.read(graph)
        except GraphFormatError as e:
            raise PackageError(f"{graph}: not a valid ONNX file ({e})") from None
    path = graph.path
    options = ort.SessionOptions()
    if threads is not None:
        check_threads(threads)
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: a CUDA provider that fails to start is reported by this function itself.
    options.log_severity_level = 3
    # The runtime runs two sessions back to back, each with its own thread pool. Threads that
    # spin-wait between the ops of a run are fast; threads that go on spinning after it take the
    # cores from the other session's run. So: spin during a run, stop when it returns
    # (measured: benchmarks/RESULTS.md, "Design measurements").
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if graph.external:
        names = list(graph.external)
        options.add_external_initializers_from_files_in_memory(
            names, [graph.external[n] for n in names], [len(graph.external[n]) for n in names]
        )
    requested = providers_for(device)
    try:
        session = ort.InferenceSession(graph.model, sess_options=options, providers=requested)
    except LOAD_ERRORS as e:
        raise PackageError(f"{path}: ONNX Runtime cannot load this graph ({str(e).splitlines()[0]})") from None
    running = session.get_providers()
    if requested[0] == CUDA and running[0] != CUDA:
        # onnxruntime-gpu is installed, but CUDA did not start (no GPU, driver, CUDA or cuDNN
        # libraries): ONNX Runtime quietly falls back to the CPU.
        reason = (
            f"onnxruntime offers {CUDA} but it did not start for {path.name} (no usable GPU, "
            f"or the CUDA/cuDNN libraries onnxruntime-gpu needs are missing); running on {running[0]}"
        )
        if device == "cuda":
            raise RuntimeError(f"device='cuda': {reason}. Use device='cpu' or 'auto' to run on the CPU")
        log.warning("CUDA was requested (device=%r) but the CPU runs: %s", device, reason)
    return session


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from pip's `nvidia-*` packages (onnxruntime-gpu[cuda,cudnn]), where present.

    Without this, onnxruntime-gpu finds only a system-wide CUDA. `preload_dlls` prints what it
    cannot load to stdout; that goes to the debug log instead (the CUDA provider failing to start
    is reported by `create_session`).
    """
    import contextlib
    import importlib.util
    import io

    if not hasattr(ort, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            ort.preload_dlls()
    except Exception as e:  # best effort: a failure here shows up as CUDA not starting
        log.debug("onnxruntime.preload_dlls failed: %s", e)
    if printed.getvalue().strip():
        log.debug("onnxruntime.preload_dlls: %s", printed.getvalue().strip())


@functools.cache
def _warn_if_two_onnxruntimes() -> None:
    """onnxruntime and onnxruntime-gpu share one import name; installed together, one breaks the other."""
    installed = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    if len(installed) == 2:
        log.warning(
            "both %s and %s are installed; they overwrite each other's files. For CUDA keep only onnxruntime-gpu: %s",
            *installed,
            GPU_INSTALL_OVER_BOTH,
        )


def check_session(session: ort.InferenceSession, spec: C.GraphSpec, path: Path) -> None:
    """Check a session's inputs and outputs against the contract: names, element types, ranks.

    Raises:
        PackageError: every difference, named.
    """
    problems = []
    for kind, got, want in (
        ("inputs", session.get_inputs(), spec.inputs),
        ("outputs", session.get_outputs(), spec.outputs),
    ):
        found = {arg.name: arg for arg in got}
        missing = [t.name for t in want if t.name not in found]
        extra = [name for name in found if name not in {t.name for t in want}]
        if missing or extra:
            problems.append(f"{kind} are {list(found)}, the contract says {[t.name for t in want]}")
        for t in want:
            arg = found.get(t.name)
            if arg is None:
                continue
            dtype = _ORT_DTYPES.get(arg.type, arg.type)
            if dtype != t.dtype:
                problems.append(f"{kind[:-1]} {t.name!r} is {dtype}, the contract says {t.dtype}")
            if len(arg.shape) != len(t.shape):
                problems.append(
                    f"{kind[:-1]} {t.name!r} has rank {len(arg.shape)} {arg.shape}, "
                    f"the contract says {len(t.shape)} {list(t.shape)}"
                )
    if problems:
        raise PackageError(f"{path}: the graph does not match the package contract:\n  " + "\n  ".join(problems))


class Sessions(NamedTuple):
    """A package's two ONNX Runtime sessions, checked against the contract."""

    token_embedder: ort.InferenceSession
    bilm: ort.InferenceSession


def open_package(
    package_dir: str | Path,
    device: str = "auto",
    threads: int | None = None,
    *,
    verify: bool = True,
    require_parity: bool = True,
) -> tuple[Manifest, TokenScheme, Sessions]:
    """Open a package in one pass: its manifest and files checked, its token scheme, its sessions.

    Every check is made before ONNX Runtime parses a graph (`package.load_package`), and the
    sessions are made from the bytes that were checked; each session is
    then checked against the interface the manifest declared, which loading held to the
    contract (`contract.graph_specs`).

    Args:
        package_dir, device, threads, verify, require_parity: see `PackageRunner`.

    Raises:
        PackageError: as `PackageRunner`.
    """
    check_threads(threads)  # before the package is read and hashed
    manifest, graphs = load_package(package_dir, verify_files=verify, require_parity=require_parity)
    try:
        scheme = scheme_from_manifest(manifest.chars, manifest.directory)
    except SchemeError as e:
        raise PackageError(str(e)) from None
    sessions = {}
    for graph in Sessions._fields:
        verified = graphs.pop(graph)  # made from the bytes that were checked, then let go
        sessions[graph] = create_session(verified, device, threads)
        check_session(sessions[graph], manifest.graphs[graph], verified.path)
        if device == "auto" and sessions[graph].get_providers()[0] != CUDA:
            device = "cpu"  # CUDA is absent or failed to start (and said so): do not try it again
    return manifest, scheme, Sessions(**sessions)


class PackageRunner:
    """The two sessions of a package, checked against the contract when loaded.

    Args:
        package_dir: a directory written by `elmo-export`.
        device: "auto", "cpu" or "cuda".
        threads: intra-op threads per session (None: onnxruntime's default, all cores).
        verify: check every file's sha256 before loading (see `package.load_package`).
        require_parity: refuse a package without a passed parity report (False: the
            exporter's own check of a package it is building).

    Raises:
        PackageError: the package fails a check of `load_manifest`, or a graph's inputs or
            outputs differ from the contract (`contract.graph_specs`).
    """

    def __init__(
        self,
        package_dir: str | Path,
        device: str = "auto",
        threads: int | None = None,
        *,
        verify: bool = True,
        require_parity: bool = True,
    ):
        self.manifest, self.scheme, self.sessions = open_package(
            package_dir, device, threads, verify=verify, require_parity=require_parity
        )
        self.providers = self.sessions.bilm.get_providers()
        log.info(
            "loaded %s (%s) on %s (device=%r)",
            self.manifest.directory,
            self.manifest.precision,
            self.providers[0],
            device,
        )

    def token_embeddings(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids -> `(B, T, P)` float32 embeddings and `(B, T)` int32 mask.

        Args:
            inputs: the scheme's inputs (`self.scheme.encode_batch(sentences)`): `char_ids`
                `(B, T, C)` int32, and `word_ids` `(B, T)` for packages with a word table; or
                just the char ids array.
        """
        if not isinstance(inputs, Mapping):
            inputs = {C.CHAR_IDS: inputs}
        feeds = {name: np.ascontiguousarray(value, dtype=np.int32) for name, value in inputs.items()}
        emb, mask = self.sessions.token_embedder.run([C.TOKEN_EMBEDDINGS, C.MASK], feeds)
        return emb, mask

    def embed_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Context-free embeddings of distinct tokens: `(N, P)` float32."""
        inputs = {name: value[None] for name, value in self.scheme.encode(tokens).items()}
        return self.token_embeddings(inputs)[0][0]

    def bilm(
        self, embeddings: np.ndarray, mask: np.ndarray, h: np.ndarray, c: np.ndarray, edges: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the biLM: -> `layers (L+1, B, T, 2P)`, `final_h (L, 2, B, P)`, `final_c (L, 2, B, D)`.

        `edges` (B, 2): per row, whether <S> precedes it and </S> follows it (None: both, a
        whole sentence; see `contract.SENTENCE_EDGES`).
        """
        feeds = {
            C.TOKEN_EMBEDDINGS: embeddings,
            C.MASK: mask.astype(np.int32, copy=False),
            C.INITIAL_H: h.astype(np.float32, copy=False),
            C.INITIAL_C: c.astype(np.float32, copy=False),
        }
        feeds[C.SENTENCE_EDGES] = np.asarray(C.WHOLE_SENTENCES if edges is None else edges, dtype=np.int64)
        layers, final_h, final_c = self.sessions.bilm.run([C.LAYERS, C.FINAL_H, C.FINAL_C], feeds)
        return layers, final_h, final_c

    def initial_state(self, mode: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The state every row starts from: the package's warm state, or zeros."""
        m = self.manifest
        C.check_state_mode(mode)
        if mode == C.ZERO:
            return (
                np.zeros((m.n_layers, 2, batch, m.projection_dim), np.float32),
                np.zeros((m.n_layers, 2, batch, m.dim), np.float32),
            )
        if m.warm_h is None:
            raise ValueError(
                f"{m.directory} was exported with a zero initial state; use state='zero' (elmo-embed: --state zero)"
            )
        return (np.repeat(m.warm_h[:, :, None], batch, axis=2), np.repeat(m.warm_c[:, :, None], batch, axis=2))

    def run(
        self, inputs: np.ndarray | Mapping[str, np.ndarray], h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Both graphs: token ids (as for `token_embeddings`) -> `(layers, mask, final_h, final_c)`."""
        emb, mask = self.token_embeddings(inputs)
        layers, final_h, final_c = self.bilm(emb, mask, h, c)
        return layers, mask, final_h, final_c
