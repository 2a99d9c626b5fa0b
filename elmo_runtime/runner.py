"""ONNX Runtime sessions for a package's two graphs, and one call of each.

This is the low-level path (arrays in, arrays out) that the `Elmo` class and the exporter's
parity check share.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from elmo_runtime import contract as C
from elmo_runtime.package import Manifest, PackageError, load_manifest

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def providers_for(device: str) -> list[str]:
    """The execution providers to ask for, checked against what onnxruntime offers."""
    if device not in DEVICES:
        raise ValueError(f"device is {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError(
            "device='cuda' but onnxruntime offers no CUDAExecutionProvider (available: "
            f"{', '.join(available)}); install onnxruntime-gpu instead of onnxruntime, or use device='cpu'"
        )
    return ["CPUExecutionProvider"]


def create_session(path: Path, device: str = "auto", threads: int | None = None) -> ort.InferenceSession:
    """One inference session; warns when CUDA was asked for and the CPU is what runs."""
    options = ort.SessionOptions()
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads is {threads!r}; expected a positive integer or None")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers_for(device))
    except (ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
            ort.capi.onnxruntime_pybind11_state.Fail) as e:
        raise PackageError(f"{path}: ONNX Runtime cannot load this graph ({str(e).splitlines()[0]})") from None
    running = session.get_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in providers_for(device) and running[0] != "CUDAExecutionProvider":
        log.warning("CUDA was requested but %s runs on %s", path.name, running[0])
    return session


class PackageRunner:
    """The two sessions of a package.

    Args:
        package_dir: a directory written by `elmo-export`.
        device: "auto", "cpu" or "cuda".
        threads: intra-op threads per session (None: onnxruntime's default, all cores).
    """

    def __init__(self, package_dir: str | Path, device: str = "auto", threads: int | None = None):
        self.manifest: Manifest = load_manifest(package_dir)
        self.token_embedder = create_session(self.manifest.token_embedder_file, device, threads)
        self.bilm_session = create_session(self.manifest.bilm_file, device, threads)
        self.providers = self.bilm_session.get_providers()
        log.info("loaded %s (%s) on %s", self.manifest.directory, self.manifest.precision, self.providers[0])

    def token_embeddings(self, char_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(B, T, 50)` int32 char ids -> `(B, T, P)` float32 embeddings and `(B, T)` int32 mask."""
        emb, mask = self.token_embedder.run(None, {C.CHAR_IDS: np.ascontiguousarray(char_ids, dtype=np.int32)})
        return emb, mask

    def bilm(self, embeddings: np.ndarray, mask: np.ndarray, h: np.ndarray, c: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the biLM: -> `layers (L+1, B, T, 2P)`, `final_h (L, 2, B, P)`, `final_c (L, 2, B, D)`."""
        feeds = {C.TOKEN_EMBEDDINGS: embeddings, C.MASK: mask.astype(np.int32, copy=False),
                 C.INITIAL_H: h.astype(np.float32, copy=False), C.INITIAL_C: c.astype(np.float32, copy=False)}
        layers, final_h, final_c = self.bilm_session.run(None, feeds)
        return layers, final_h, final_c

    def initial_state(self, mode: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The state every row starts from: the package's warm state, or zeros."""
        m = self.manifest
        if mode == "zero":
            return (np.zeros((m.n_layers, 2, batch, m.projection_dim), np.float32),
                    np.zeros((m.n_layers, 2, batch, m.dim), np.float32))
        if mode == "warm":
            if m.warm_h is None:
                raise ValueError(f"{m.directory} was exported with a zero initial state; use state='zero'")
            return (np.repeat(m.warm_h[:, :, None], batch, axis=2), np.repeat(m.warm_c[:, :, None], batch, axis=2))
        raise ValueError(f"state is {mode!r}; choose 'warm' or 'zero'")

    def run(self, char_ids: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Both graphs: char ids -> `(layers, mask, final_h, final_c)`."""
        emb, mask = self.token_embeddings(char_ids)
        layers, final_h, final_c = self.bilm(emb, mask, h, c)
        return layers, mask, final_h, final_c
