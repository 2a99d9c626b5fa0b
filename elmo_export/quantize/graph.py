"""ONNX graph utilities the quantizers share: walking subgraphs, ordering nodes, weights, opsets.

A graph here may hold subgraphs (the LSTM's Scan bodies) that read names from the enclosing
scope; every helper takes them into account.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from elmo_export.quantize.settings import WEIGHT_OPS

MS_DOMAIN = "com.microsoft"  # the domain of MatMulIntegerToFloat and MatMulNBits
Scope = list[dict[str, onnx.TensorProto]]  # the initializers in scope by name, innermost last


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held by `node`'s attributes (a Scan's body, an If's branches)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def walk(
    graph: onnx.GraphProto, depth: int = 0, scope: tuple[dict[str, onnx.TensorProto], ...] = ()
) -> Iterator[tuple[int, onnx.NodeProto, tuple[dict[str, onnx.TensorProto], ...]]]:
    """Every node with its nesting depth (0: main graph) and the initializers in scope, innermost last."""
    scope = scope + ({t.name: t for t in graph.initializer},)
    for node in graph.node:
        yield depth, node, scope
        for sub in subgraphs(node):
            yield from walk(sub, depth + 1, scope)


def graphs(graph: onnx.GraphProto, depth: int = 0) -> Iterator[tuple[int, onnx.GraphProto]]:
    """`graph` and every subgraph in it, with its nesting depth."""
    yield depth, graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from graphs(sub, depth + 1)


def outer_reads(graph: onnx.GraphProto) -> set[str]:
    """The names a subgraph reads but does not define: what it takes from the enclosing scope."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {out for node in graph.node for out in node.output}
    read = {name for node in graph.node for name in node.input if name}
    read |= {name for node in graph.node for sub in subgraphs(node) for name in outer_reads(sub)}
    return read - defined


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Order `graph`'s nodes (and its subgraphs') topologically, in place, counting what each
    subgraph reads from the enclosing scope; ties keep their original order.

    onnxruntime's quantizers add their nodes at the end and reorder by explicit inputs only,
    which can put a Scan before the producers of what its body reads from the outer scope (the
    hoisted input products): the ONNX checker then rejects the graph.
    """
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output}
    needs = []
    for node in graph.node:
        for sub in subgraphs(node):
            sort_nodes(sub)
        names = set(node.input).union(*(outer_reads(sub) for sub in subgraphs(node)))
        needs.append({producer[name] for name in names if name in producer})
    users: dict[int, list[int]] = {k: [] for k in range(len(graph.node))}
    for k, deps in enumerate(needs):
        for dep in deps:
            users[dep].append(k)
    waiting = [len(deps) for deps in needs]
    ready = [k for k, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for user in users[k]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(graph.node):
        raise ValueError(f"graph {graph.name!r} has a cycle")
    nodes = [graph.node[k] for k in order]
    del graph.node[:]
    graph.node.extend(nodes)


def constant(name: str, scope: Scope) -> np.ndarray | None:
    """The value of initializer `name`, looked up from the innermost scope out; None if it is none."""
    for names in reversed(scope):
        if name in names:
            return np.asarray(numpy_helper.to_array(names[name]))
    return None


def use_microsoft_ops(model: onnx.ModelProto) -> None:
    """Import the com.microsoft opset into `model`, if it is not imported yet."""
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def drop_replaced_initializers(graph: onnx.GraphProto, replaced: set[str]) -> None:
    """Remove, from `graph` and its subgraphs, the initializers in `replaced` that no node reads."""
    used = {name for _, node, _ in walk(graph) for name in node.input}
    for _, g in graphs(graph):
        keep = [t for t in g.initializer if t.name in used or t.name not in replaced]
        del g.initializer[:]
        g.initializer.extend(keep)


def weight_matmuls(graph: onnx.GraphProto) -> Iterator[tuple[int, onnx.NodeProto, onnx.TensorProto | None]]:
    """Every MatMul with its depth and its weight (second input) if that is an initializer."""
    for depth, node, scope in walk(graph):
        if node.op_type in WEIGHT_OPS and len(node.input) > 1:
            weight = next((names[node.input[1]] for names in reversed(scope) if node.input[1] in names), None)
            yield depth, node, weight


def op_counts(model: onnx.ModelProto) -> dict[str, Counter]:
    """Op types counted separately in the main graph and in all subgraphs (Scan/Loop bodies).

    Returns:
        `{"main": Counter, "subgraphs": Counter}`.
    """
    counts = {"main": Counter(), "subgraphs": Counter()}
    for depth, node, _ in walk(model.graph):
        counts["main" if depth == 0 else "subgraphs"][node.op_type] += 1
    return counts


def float_weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose weight is still a float initializer, with the weight's name.

    After `quantize` these should be only the ones the settings keep in float; any other name
    means a quantizer skipped that node (e.g. a MatMul in a subgraph).

    Returns:
        `"<op> <node> (<weight>, main graph|subgraph depth N)"` per node.
    """
    left = []
    for depth, node, weight in weight_matmuls(model.graph):
        if weight is not None and weight.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            where = "main graph" if depth == 0 else f"subgraph depth {depth}"
            left.append(f"{node.op_type} {node.name or node.output[0]} ({weight.name}, {where})")
    return left
