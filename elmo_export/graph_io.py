"""Built graphs to files, checked: saved with external weights, validated against the export spec.

The spec is the contract's (`contract.graph_specs`): the same one the manifest records and the
runtime checks each session against when it loads a package.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from elmo_export.model import ElmoOptions
from elmo_export.onnx_graph import hoist_subgraph_initializers
from elmo_runtime import contract as C
from elmo_runtime.graph_files import external_tensors


def graph_specs(options: ElmoOptions) -> dict[str, C.GraphSpec]:
    """The contract's graph interface for a model's options (`contract.graph_specs`)."""
    return C.graph_specs(
        options.n_layers,
        options.projection_dim,
        options.dim,
        options.max_characters_per_token,
        word_ids=options.word_dim > 0,
    )


class GraphValidationError(ValueError):
    """A built graph that fails the ONNX checker, shape inference or the export spec (all listed)."""


def validate_graph(path: Path, spec: C.GraphSpec) -> None:
    """Check a saved graph: ONNX checker (full), strict shape inference, names/dtypes/shapes of the spec.

    Raises:
        GraphValidationError: every problem found, listed.
    """
    problems = []
    try:
        # By path, which works beyond 2 GB; full_check adds strict shape inference, which fails
        # on any inferred shape or type that contradicts a declared one.
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        problems.append(f"ONNX checker / shape inference: {str(e).strip().splitlines()[0]}")
    model = onnx.load(str(path), load_external_data=False)

    def described(values) -> dict:
        out = {}
        for v in values:
            tensor = v.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
            out[v.name] = {"dtype": dtype, "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]}
        return out

    initializers = {i.name for i in model.graph.initializer}
    backed = [v.name for v in model.graph.input if v.name in initializers]
    if backed:  # format 3: a binding must see and feed every input (onnxruntime-node/-web hide these)
        problems.append(f"inputs {backed} are backed by initializers")
    nested = [f"{t.name} ({t.location})" for t in external_tensors(path.read_bytes()) if t.in_subgraph]
    if nested:
        problems.append(f"subgraph tensors stored as external data (format 3 keeps them in the main graph): {nested}")
    for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        got = described(values)
        want = {t.name: t.to_dict() for t in getattr(spec, kind)}
        if list(got) != list(want):
            problems.append(f"{kind} are {list(got)}, the spec says {list(want)}")
        for name in set(got) & set(want):
            if got[name] != want[name]:
                problems.append(f"{kind[:-1]} {name!r} is {got[name]}, the spec says {want[name]}")
    if problems:
        raise GraphValidationError(f"{path.name} is not a valid package graph:\n  " + "\n  ".join(problems))


def save_graph(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save a graph with its weights in `<file>.data` beside it.

    Every subgraph's initializers move to the main graph first (`hoist_subgraph_initializers`),
    so that every external tensor is one a graph loaded from bytes can read (format 3).

    Why external data, always: ONNX Runtime maps an external weights file into memory, where
    weights inside the protobuf are parsed and then copied (on `original` int8 this saves 85 MB
    of peak memory at load); and protobuf cannot hold a graph over 2 GiB at all.

    Returns:
        The files written.
    """
    data = path.with_name(path.name + ".data")
    hoist_subgraph_initializers(model)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )
    return [path, data]
