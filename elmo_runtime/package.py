"""The package manifest (`elmo.json`) as one typed object, written by the exporter and read here.

`Manifest.to_json` is what the exporter writes and `Manifest.from_json` what the runtime reads:
one definition of the document, checked field by field on the way in.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elmo_runtime import contract as C
from elmo_runtime import scratch
from elmo_runtime.graph_files import GraphBytes, GraphFormatError, check_graph_size, external_tensors
from elmo_runtime.jsonfile import json_field, read_json
from elmo_runtime.token_schemes import BYTES, DICTIONARY, scheme_files


class PackageError(ValueError):
    """A model package that is missing files, corrupt, or from an unknown format version."""


@dataclass(frozen=True)
class InitialState:
    """The state every row starts from by default.

    Attributes:
        mode: "warm" or "zero" (`contract.STATE_MODES`).
        h: the `(L, 2, P)` hidden state: the warm state, or zeros (a package states its zeros).
        c: the `(L, 2, D)` cell state, likewise.
        warmup: what the warm state was computed from (None for "zero").
    """

    mode: str
    h: np.ndarray | None = None
    c: np.ndarray | None = None
    warmup: dict | None = None

    def to_json(self) -> dict:
        if self.h is None or self.c is None:
            raise ValueError("the initial state is written with its arrays, zeros included")
        data: dict = {"mode": self.mode, **C.STATE_LAYOUT}
        if self.mode == C.WARM:
            data["warmup"] = self.warmup
        return {**data, "h": float32_lists(self.h), "c": float32_lists(self.c), "sha256": state_digest(self.h, self.c)}


def state_digest(h: np.ndarray, c: np.ndarray) -> str:
    """sha256 of the state as float32 little-endian bytes, h then c (C order): what loading must read back.

    The state lives in `elmo.json`, which no `files` entry covers: this catches a changed digit.
    It cannot stop someone who rewrites the digest too; see "Trust" in docs/package-format.md.
    """
    data = np.ascontiguousarray(h, "<f4").tobytes() + np.ascontiguousarray(c, "<f4").tobytes()
    return hashlib.sha256(data).hexdigest()


def _numbers_only(value: object) -> bool:
    """Whether a nested list holds JSON numbers only (no strings, booleans or nulls, which numpy would coerce)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            return False
    return True


@dataclass(frozen=True)
class Manifest:
    """Everything `elmo.json` says about a package.

    Attributes:
        architecture: the model's options, in the official `options.json` layout.
        graphs: each graph's file and interface (`contract.graph_specs`).
        precision: "fp32", "fp16", "int8" or "int4".
        precision_settings: how that precision was made (quantization settings), by name, and
            `activation_functions` where sigmoid and tanh are exact (`activation_functions`).
        opset: the graphs' ONNX opset.
        initial_state: the default initial state.
        source: the source model files and their sha256.
        files: every file of the package but the manifest: `{name: {"sha256", "bytes"}}`.
        parity: the parity report against the reference (None until it has run).
        chars: the char-id scheme (`contract.char_constants`).
        sentences: how sentences meet the graphs (`contract.SENTENCE_RULES`).
        conformance: where the conformance vectors are (`{"file": ...}`).
        producer: the program that wrote the package.
        directory: where the package was read from (None for a manifest being written).
    """

    architecture: dict
    graphs: dict[str, C.GraphSpec]
    precision: str
    precision_settings: dict
    opset: int
    initial_state: InitialState
    source: dict
    files: dict[str, dict] = field(default_factory=dict)
    parity: dict | None = None
    producer: dict = field(default_factory=lambda: {"name": "elmo-onnx", "version": "unknown"})
    chars: dict = field(default_factory=C.char_constants)
    sentences: dict = field(default_factory=lambda: dict(C.SENTENCE_RULES))
    conformance: dict = field(default_factory=lambda: {"file": C.CONFORMANCE_FILE})
    input: dict = field(default_factory=dict)  # e.g. {"tokenization": "pretokenized"} (ELMoForManyLangs)
    pipeline: str = C.PIPELINE
    format_version: int = C.FORMAT_VERSION
    directory: Path | None = None

    @property
    def n_layers(self) -> int:
        return self.architecture["lstm"]["n_layers"]

    @property
    def projection_dim(self) -> int:
        return self.architecture["lstm"]["projection_dim"]

    @property
    def dim(self) -> int:
        """LSTM cells per layer and direction."""
        return self.architecture["lstm"]["dim"]

    @property
    def output_dim(self) -> int:
        return 2 * self.projection_dim

    @property
    def activation_functions(self) -> str:
        """How the graphs compute sigmoid and tanh (`contract.ACTIVATION_FUNCTIONS`): "exact" or
        "onnxruntime" (also a package that does not say)."""
        return self.precision_settings.get("activation_functions", C.ONNXRUNTIME_ACTIVATIONS)

    @property
    def initial_state_mode(self) -> str:
        return self.initial_state.mode

    @property
    def warm_h(self) -> np.ndarray | None:
        """`(L, 2, P)`, or None for a zero-state package."""
        return self.initial_state.h if self.initial_state.mode == C.WARM else None

    @property
    def warm_c(self) -> np.ndarray | None:
        """`(L, 2, D)`, or None for a zero-state package."""
        return self.initial_state.c if self.initial_state.mode == C.WARM else None

    @property
    def conformance_file(self) -> Path:
        """The conformance vectors (`conformance.json`) in the package directory."""
        return Path(self.directory or ".") / self.conformance["file"]

    def graph_file(self, graph: str) -> Path:
        """The path of a graph ("token_embedder" or "bilm") in the package directory."""
        return Path(self.directory or ".") / self.graphs[graph].file

    @property
    def token_embedder_file(self) -> Path:
        return self.graph_file("token_embedder")

    @property
    def bilm_file(self) -> Path:
        return self.graph_file("bilm")

    def replace(self, **changes) -> "Manifest":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """The `elmo.json` document."""
        return {
            "format_version": self.format_version,
            "producer": self.producer,
            "architecture": self.architecture,
            "chars": self.chars,
            "graphs": {name: spec.to_dict() for name, spec in self.graphs.items()},
            "pipeline": self.pipeline,
            "precision": {"name": self.precision, **self.precision_settings},
            "opset": self.opset,
            "initial_state": self.initial_state.to_json(),
            "sentences": self.sentences,
            "conformance": self.conformance,
            "source": self.source,
            "files": self.files,
            "parity": self.parity,
            **({"input": self.input} if self.input else {}),
        }

    @classmethod
    def from_json(cls, data: dict, source: str | Path, directory: Path | None = None) -> "Manifest":
        """Check and read an `elmo.json` document.

        Raises:
            PackageError: a missing or mistyped field, a newer format version, or graphs whose
                interface differs from the contract (the field is named).
        """

        def get(path: str, kind: type | tuple[type, ...], default=...):
            if default is ...:
                return json_field(data, path, kind, source, PackageError)
            return json_field(data, path, kind, source, PackageError, default)

        if not isinstance(data, dict):
            raise PackageError(f"{source}: corrupt manifest, expected a JSON object")
        version = get("format_version", int)
        if version > C.FORMAT_VERSION:
            raise PackageError(
                f"{source}: package format version {version} is newer than this runtime reads "
                f"({C.FORMAT_VERSION}); upgrade elmo-onnx"
            )
        if version < 1:
            raise PackageError(f"{source}: invalid format_version {version}")
        if version < C.FORMAT_VERSION:
            raise PackageError(
                f"{source}: package format version {version} is older than this runtime reads "
                f"({C.FORMAT_VERSION}); export the package again with this version's elmo-export"
            )
        for path, kind in C.REQUIRED_FIELDS.items():
            get(path, kind)
        _check_chars(data, source)
        _check_rules(data, source, "sentences", C.SENTENCE_RULES)
        _check_rules(data, source, "initial_state", C.STATE_LAYOUT)
        architecture = get("architecture", dict)
        n_layers, p, d = (architecture["lstm"][k] for k in ("n_layers", "projection_dim", "dim"))
        precision = get("precision", dict)
        name = get("precision.name", str)
        _check_activation_functions(get("precision.activation_functions", str, C.ONNXRUNTIME_ACTIVATIONS), source)
        chars = get("chars", dict, {})
        graphs = _graphs(data, source, C.graph_specs(n_layers, p, d, *_token_interface(chars)))
        return cls(
            architecture=architecture,
            graphs=graphs,
            precision=name,
            precision_settings={k: v for k, v in precision.items() if k != "name"},
            opset=get("opset", int, None),
            initial_state=_initial_state(data, source, n_layers, p, d),
            source=get("source", dict, {}),
            files=get("files", dict),
            parity=get("parity", (dict, type(None)), None),
            producer=get("producer", dict, {}),
            chars=chars,
            sentences=get("sentences", dict),
            conformance=get("conformance", dict),
            input=get("input", dict, {}),
            pipeline=get("pipeline", str, ""),
            format_version=version,
            directory=directory,
        )


def _check_activation_functions(value: str, source: str | Path) -> None:
    """Refuse a `precision.activation_functions` this runtime does not know (`contract.ACTIVATION_FUNCTIONS`)."""
    if value not in C.ACTIVATION_FUNCTIONS:
        raise PackageError(
            f"{source}: precision.activation_functions is {value!r}; this runtime knows "
            f"{' and '.join(map(repr, C.ACTIVATION_FUNCTIONS))}"
        )


def _token_interface(chars: dict) -> tuple[int, bool]:
    """The char-id width and whether there are word ids, from the manifest's `chars` entry."""
    width = chars.get("max_characters_per_token", C.MAX_CHARACTERS_PER_TOKEN)
    params = chars.get(chars.get("scheme", ""), {})
    return width, isinstance(params, dict) and bool(params.get("words"))


def _graphs(data: dict, source: str | Path, contract: dict[str, C.GraphSpec]) -> dict[str, C.GraphSpec]:
    """The manifest's `graphs`, which must declare the contract's interface."""
    graphs = {}
    for graph, spec in contract.items():
        file = json_field(data, f"graphs.{graph}.file", str, source, PackageError)
        declared = data["graphs"][graph]
        for kind in ("inputs", "outputs"):
            want = {t.name: t.to_dict() for t in getattr(spec, kind)}
            got = declared.get(kind, want)
            if got != want:
                raise PackageError(f"{source}: graphs.{graph}.{kind} is {got}, the contract says {want}")
        graphs[graph] = C.GraphSpec(file, spec.inputs, spec.outputs)
    return graphs


def _initial_state(data: dict, source: str | Path, n_layers: int, p: int, d: int) -> InitialState:
    mode = json_field(data, "initial_state.mode", str, source, PackageError)
    if mode not in C.STATE_MODES:
        raise PackageError(f"{source}: initial_state.mode is {mode!r}, expected one of {', '.join(C.STATE_MODES)}")
    raw_h = json_field(data, "initial_state.h", list, source, PackageError)
    raw_c = json_field(data, "initial_state.c", list, source, PackageError)
    if not (_numbers_only(raw_h) and _numbers_only(raw_c)):
        raise PackageError(
            f"{source}: initial_state.h/c hold something other than numbers (a string, a boolean or "
            "null); the package is corrupt"
        )
    try:
        with np.errstate(over="ignore"):  # 1e300 becomes inf, refused below by name
            h, c = np.asarray(raw_h, dtype=np.float32), np.asarray(raw_c, dtype=np.float32)
    except ValueError as e:
        raise PackageError(f"{source}: initial_state.h/c are not numeric arrays ({e})") from None
    if h.shape != (n_layers, 2, p) or c.shape != (n_layers, 2, d):
        raise PackageError(
            f"{source}: initial state has shapes h {h.shape}, c {c.shape}; "
            f"expected {(n_layers, 2, p)} and {(n_layers, 2, d)}"
        )
    for key, value in (("h", h), ("c", c)):
        if not np.all(np.isfinite(value)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise PackageError(
                f"{source}: initial_state.{key} holds a non-finite value "
                f"({value[bad]} at index {list(bad)}); the package is corrupt"
            )
    if mode == C.ZERO and (h.any() or c.any()):
        raise PackageError(f"{source}: initial_state.mode is 'zero' but initial_state.h/c are not all zeros")
    _check_state_values(data, source, h, c)
    return InitialState(mode, h, c, data["initial_state"].get("warmup"))


def _check_state_values(data: dict, source: str | Path, h: np.ndarray, c: np.ndarray) -> None:
    """The state within the LSTM's clips (no run can leave it beyond them) and equal to its digest."""
    lstm = data.get("architecture", {}).get("lstm", {}) if isinstance(data.get("architecture"), dict) else {}
    for key, value, clip in (("h", h, "proj_clip"), ("c", c, "cell_clip")):
        bound = lstm.get(clip) if isinstance(lstm, dict) else None
        if isinstance(bound, (int, float)) and not isinstance(bound, bool) and bound > 0 and value.size:
            worst = float(np.abs(value).max())
            if worst > bound * (1 + 1e-6):
                raise PackageError(
                    f"{source}: initial_state.{key} reaches {worst:g}, beyond architecture.lstm.{clip} "
                    f"{bound:g}, which bounds every state a run can leave; the package is corrupt"
                )
    digest = data["initial_state"].get("sha256")
    if digest is not None and digest != state_digest(h, c):
        raise PackageError(
            f"{source}: initial_state.h/c do not match initial_state.sha256 (a changed value?); the "
            "package is corrupt or altered"
        )


def _check_chars(data: dict, source: str | Path) -> None:
    """Refuse a char scheme, or scheme parameters, other than those this runtime implements.

    `bytes` at any width (`chars.max_characters_per_token`, tokens cut to that less 2 bytes)
    with `contract.char_constants`' other values; `dictionary` (`token_schemes.DictionaryScheme`),
    whose parameters and files `scheme_from_manifest` reads and checks when a runner loads it.
    """
    chars = data["chars"]
    scheme, width = chars["scheme"], chars["max_characters_per_token"]
    if scheme not in (BYTES, DICTIONARY):
        raise PackageError(
            f"{source}: chars.scheme is {scheme!r}; this runtime implements {BYTES!r} and {DICTIONARY!r}"
        )
    if not 3 <= width <= C.MAX_CHARACTERS_PER_TOKEN_LIMIT:
        raise PackageError(
            f"{source}: chars.max_characters_per_token is {width}; this runtime implements "
            f"3..{C.MAX_CHARACTERS_PER_TOKEN_LIMIT}"
        )
    want = C.char_constants(width)
    for key in ("id_offset", "padding_row_id"):
        if chars[key] != want[key]:
            raise PackageError(f"{source}: chars.{key} is {chars[key]!r}; this runtime implements {want[key]!r}")
    if scheme == DICTIONARY:
        json_field(data, f"chars.{DICTIONARY}", dict, source, PackageError)
        return
    for sub, sub_value in want[BYTES].items():
        found = json_field(data, f"chars.{BYTES}.{sub}", (str, int, dict), source, PackageError)
        if found != sub_value:
            raise PackageError(f"{source}: chars.{BYTES}.{sub} is {found!r}; this runtime implements {sub_value!r}")


def _check_rules(data: dict, source: str | Path, entry: str, rules: dict) -> None:
    """Refuse a rule value (`sentences.*`, the state layout) this runtime does not implement."""
    for key, want in rules.items():
        found = json_field(data, f"{entry}.{key}", (str, int, list), source, PackageError)
        if found != want:
            raise PackageError(f"{source}: {entry}.{key} is {found!r}; this runtime implements {want!r}")


def float32_lists(array: np.ndarray) -> list:
    """Nested lists of the shortest decimals that read back as the same float32 values."""
    strings = np.asarray(array, dtype=np.float32).astype(str)
    return np.vectorize(float, otypes=[object])(strings).tolist()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _confined(directory: Path, name: str, what: str) -> Path:
    """`directory / name`, refused unless it stays inside `directory` (after symlinks).

    A name is '/'-separated parts, none empty, '.' or '..', with no backslash or ':' (drive
    letters, alternate streams): the rule every client applies (docs/package-format.md, "Files").
    """
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or ":" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise PackageError(
            f"{directory}: {what} {name!r} is not a plain file name inside the package "
            "(absolute paths, '..', '.', empty parts, '\\' and ':' are refused)"
        )
    path = directory / name
    try:
        inside = path.resolve(strict=False).is_relative_to(directory.resolve(strict=True))
    except (OSError, RuntimeError) as e:  # a symlink loop, say
        raise PackageError(f"{directory}: {what} {name!r} cannot be resolved ({e})") from None
    if not inside:
        raise PackageError(f"{directory}: {what} {name!r} resolves outside the package directory (a symlink?)")
    return path


def load_manifest(package_dir: str | Path, verify_files: bool = True, *, require_parity: bool = True) -> Manifest:
    """Read and check the manifest of the package in `package_dir` (`load_package`, graphs' bytes dropped).

    Raises:
        FileNotFoundError, PackageError: as for `load_package`.
    """
    return load_package(package_dir, verify_files, require_parity=require_parity)[0]


def load_package(
    package_dir: str | Path, verify_files: bool = True, *, require_parity: bool = True
) -> tuple[Manifest, dict[str, GraphBytes]]:
    """Read and check the package in `package_dir`: its manifest, and each graph's bytes as verified.

    Every check is made before a graph is handed to ONNX Runtime: the manifest's fields (a
    finite warm state among them); that each graph and each external-data file the graphs name
    is listed in `files` and stays inside the package (no absolute path, no `..`, no symlink
    leading out); every file's size; by default its sha256; and a passed parity report. Each
    graph and weights file is read once: the bytes whose size and sha256 were checked are the
    bytes returned, so a file swapped after the check is never used (sessions are made from
    them: `runner.create_session`).

    Args:
        package_dir: the package directory (holding `elmo.json`).
        verify_files: recompute every file's sha256 against the manifest (about 0.1 s per
            100 MB). Pass False only for a package verified when it was deployed.
        require_parity: refuse a package whose parity with the reference is not recorded as
            passed (an export that was interrupted or failed). Only the exporter, checking a
            package it is building, passes False.

    Returns:
        The manifest, and `{graph: GraphBytes}` for "token_embedder" and "bilm".

    Raises:
        FileNotFoundError: no such directory or no manifest in it.
        PackageError: the manifest is corrupt, from another format version, unverified, or
            names missing, altered or escaping files.
    """
    directory = Path(package_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"model package not found: {directory} is not a directory")
    if require_parity and scratch.is_temporary(directory, scratch.STAGING_SUFFIX):
        raise PackageError(f"{directory} is an unfinished export (a staging directory of elmo-export), not a package")
    source = directory / C.MANIFEST_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{directory} is not an elmo-onnx model package: it has no {C.MANIFEST_FILE}")
    manifest = Manifest.from_json(read_json(source, "manifest", PackageError), source, directory)
    if require_parity and not (isinstance(manifest.parity, dict) and manifest.parity.get("passed") is True):
        state = "no parity report" if manifest.parity is None else "a parity report that did not pass"
        raise PackageError(
            f"{source}: the package has {state}; it was not verified against the reference "
            "(an interrupted or failed export?). Export it again"
        )
    return manifest, _check_files(manifest, directory, source, verify_files)


def _check_files(manifest: Manifest, directory: Path, source: Path, verify_files: bool) -> dict[str, GraphBytes]:
    """Every listed file present, inside the package, of its size (and sha256); every file a
    graph or the token scheme (a dictionary's tables) refers to listed. Returns each graph's
    bytes, read once and checked."""
    listed = {}
    for name, entry in manifest.files.items():
        path = _confined(directory, name, "file")
        if not path.is_file():
            raise PackageError(f"{directory}: file {name!r} listed in the manifest is missing")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("bytes"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise PackageError(f"{source}: files[{name!r}] needs 'bytes' (int) and 'sha256' (str)")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise PackageError(
                f"{directory}: file {name!r} has {size} bytes, the manifest says {entry['bytes']} "
                "(corrupt or truncated)"
            )
        listed[path.resolve()] = name

    for field_name, name in scheme_files(manifest.chars):
        if not isinstance(name, str):
            raise PackageError(f"{source}: {field_name} is {name!r}, expected a file name in the package")
        path = _confined(directory, name, field_name)
        if path.resolve() not in listed:
            raise PackageError(f"{source}: {field_name} {name!r} is not listed in 'files' (no size or sha256 to check)")

    checked: dict[Path, bytes] = {}
    graphs = _read_graphs(manifest, directory, source, listed, checked, verify_files)
    if verify_files:
        for path, name in listed.items():
            if path not in checked and sha256_of(path) != manifest.files[name]["sha256"]:
                raise PackageError(
                    f"{directory}: file {name!r} does not match its sha256 in the manifest (corrupt or altered)"
                )

    conformance = _confined(directory, manifest.conformance["file"], "conformance file")
    if not conformance.is_file():
        raise PackageError(f"{directory}: conformance file {manifest.conformance['file']!r} is missing")
    if conformance.resolve() not in listed:
        raise PackageError(
            f"{source}: conformance file {manifest.conformance['file']!r} is not listed in 'files' "
            "(no size or sha256 to check)"
        )
    return graphs


def _read_listed(
    path: Path,
    manifest: Manifest,
    directory: Path,
    listed: dict[Path, str],
    checked: dict[Path, bytes],
    verify_files: bool,
) -> bytes:
    """The file's bytes, read once into `checked`, of the listed size and (verify_files) sha256."""
    key = path.resolve()
    if key not in checked:
        name, data = listed[key], path.read_bytes()
        entry = manifest.files[name]
        if len(data) != entry["bytes"]:
            raise PackageError(
                f"{directory}: file {name!r} has {len(data)} bytes, the manifest says "
                f"{entry['bytes']} (corrupt or truncated)"
            )
        if verify_files and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise PackageError(
                f"{directory}: file {name!r} does not match its sha256 in the manifest (corrupt or altered)"
            )
        checked[key] = data
    return checked[key]


def _read_graphs(
    manifest: Manifest,
    directory: Path,
    source: Path,
    listed: dict[Path, str],
    checked: dict[Path, bytes],
    verify_files: bool,
) -> dict[str, GraphBytes]:
    """Each graph and the weights files it names, read once into `checked`, each of its listed
    size and (verify_files) sha256 before the graph is parsed or the next file read."""

    def read_checked(path: Path) -> bytes:
        return _read_listed(path, manifest, directory, listed, checked, verify_files)

    graphs = {}
    for graph, spec in manifest.graphs.items():
        path = _confined(directory, spec.file, f"graph file ({graph})")
        if not path.is_file():
            raise PackageError(f"{directory}: graph file {spec.file!r} ({graph}) is missing")
        if path.resolve() not in listed:
            raise PackageError(
                f"{source}: graph file {spec.file!r} ({graph}) is not listed in 'files' (no size or sha256 to check)"
            )
        try:
            check_graph_size(path)
            model = read_checked(path)  # before it is parsed
            tensors = external_tensors(model)
        except GraphFormatError as e:
            raise PackageError(
                f"{directory}: graph file {spec.file!r} ({graph}) is not a valid ONNX file ({e})"
            ) from None
        external = {}
        for tensor in tensors:
            what = f"external data of {spec.file} (tensor {tensor.name!r})"
            data_path = _confined(path.parent, tensor.location, what)
            _confined(directory, str(data_path.relative_to(directory)), what)
            if data_path.resolve() not in listed:
                raise PackageError(
                    f"{source}: {spec.file} keeps tensor {tensor.name!r} in {tensor.location!r}, "
                    "which is not listed in 'files' (no size or sha256 to check)"
                )
            if tensor.in_subgraph:
                raise PackageError(
                    f"{directory}: {spec.file} keeps tensor {tensor.name!r} of a subgraph in external "
                    f"data; format {C.FORMAT_VERSION} keeps only main-graph initializers there "
                    "(export the package again)"
                )
            external[tensor.location] = read_checked(data_path)
        graphs[graph] = GraphBytes(path, model, external)
    return graphs
