"""Turn the PP-OCR rec ONNX graph's initializers into a ``RecNet`` state dict, and read its charset.

Paddle2onnx gives the weights meaningless names (``conv2d_68.w_0``, ``p2o.pd_op.reshape.3.0``,
``helper.reshape.4``), so the mapping is structural: the graph is walked in node order, each layer
type (conv, batch norm, layer norm, linear) yields its parameters in that order, and they are zipped
with the same layer type of ``RecNet`` in registration order. Every pairing is checked (count, weight
shape, stride, groups, padding, epsilon) so a graph of a different architecture fails loudly here
instead of producing a silently wrong network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from recognizer.rec_net import RecNet, RecNetSpec

__all__ = ["OnnxImportError", "import_rec_onnx", "read_charset"]

logger = logging.getLogger(__name__)


class OnnxImportError(ValueError):
    """The ONNX graph does not have the layout ``RecNet`` implements."""


@dataclass
class _Graph:
    """Initializers plus producer/consumer lookups, with Identity nodes skipped over."""

    model: onnx.ModelProto

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.params = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.alias: dict[str, str] = {}
        for node in graph.node:
            if node.op_type == "Identity":
                self.alias[node.output[0]] = self.resolve(node.input[0])
        self.nodes = [node for node in graph.node if node.op_type != "Identity"]
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(self.resolve(name), []).append(node)
            for name in node.output:
                self.producer[name] = node

    def resolve(self, name: str) -> str:
        return self.alias.get(name, name)

    def param(self, name: str) -> np.ndarray | None:
        return self.params.get(self.resolve(name))

    def nodes_of(self, op_type: str) -> Iterator[onnx.NodeProto]:
        return (node for node in self.nodes if node.op_type == op_type)

    def added_param(self, output: str) -> np.ndarray | None:
        """The constant that the single ``Add`` consuming ``output`` adds (a folded bias), if any."""
        users = self.consumers.get(self.resolve(output), [])
        if len(users) != 1 or users[0].op_type != "Add":
            return None
        for name in users[0].input:
            value = self.param(name)
            if value is not None:
                return value
        return None

    def scalar_input(self, node: onnx.NodeProto) -> float:
        for name in node.input:
            value = self.param(name)
            if value is not None and value.size == 1:
                return float(value.reshape(()))
        raise OnnxImportError(f"node {node.name} has no scalar constant input")


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise OnnxImportError(message)


def _conv_tensors(graph: _Graph, module: nn.Conv2d, node: onnx.NodeProto) -> list[np.ndarray]:
    weight = graph.param(node.input[1])
    _check(weight is not None, f"{node.name}: weight is not an initializer")
    assert weight is not None
    attrs = _attrs(node)
    where = f"{node.name} ({node.input[1]})"
    _check(tuple(weight.shape) == tuple(module.weight.shape), f"{where}: shape {weight.shape} != {module}")
    _check(
        list(attrs.get("strides", [1, 1])) == list(module.stride), f"{where}: stride differs from {module}"
    )
    _check(int(attrs.get("group", 1)) == module.groups, f"{where}: groups differ from {module}")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if auto_pad == b"SAME_UPPER":
        # RecNet pads explicitly (right/bottom) before such convs.
        _check(module.padding == (0, 0), f"{where}: SAME_UPPER conv must have padding 0 in torch")
    else:
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        _check(pads[:2] == pads[2:] and tuple(pads[:2]) == module.padding, f"{where}: pads {pads} differ")
    tensors = [weight]
    bias = node.input[2] if len(node.input) > 2 else None
    bias_value = graph.param(bias) if bias else graph.added_param(node.output[0])
    _check((bias_value is not None) == (module.bias is not None), f"{where}: bias presence differs")
    if bias_value is not None:
        tensors.append(bias_value.reshape(-1))
    return tensors


def _layer_norms(graph: _Graph) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Exported LayerNorm is ReduceMean/Sub/Pow/ReduceMean/Add(eps)/Sqrt/Div/Mul(gamma)/Add(beta)."""
    norms = []
    for sqrt in graph.nodes_of("Sqrt"):
        eps = graph.scalar_input(graph.producer[graph.resolve(sqrt.input[0])])
        (div,) = graph.consumers[sqrt.output[0]]
        (mul,) = graph.consumers[div.output[0]]
        gamma = graph.param(mul.input[1])
        beta = graph.added_param(mul.output[0])
        _check(gamma is not None and beta is not None, f"LayerNorm at {sqrt.name}: no affine parameters")
        assert gamma is not None and beta is not None
        norms.append((gamma, beta, eps))
    return norms


def _state_dict(graph: _Graph, net: RecNet) -> dict[str, torch.Tensor]:
    modules = dict(net.named_modules())
    state: dict[str, torch.Tensor] = {}

    def put(prefix: str, names: list[str], values: list[np.ndarray]) -> None:
        for name, value in zip(names, values, strict=True):
            state[f"{prefix}.{name}"] = torch.from_numpy(np.array(value, dtype=np.float32, order="C"))

    def of_type(kind: type[nn.Module]) -> list[str]:
        return [name for name, module in modules.items() if type(module) is kind]

    convs, conv_nodes = of_type(nn.Conv2d), list(graph.nodes_of("Conv"))
    _check(len(convs) == len(conv_nodes), f"graph has {len(conv_nodes)} convs, RecNet {len(convs)}")
    for name, node in zip(convs, conv_nodes, strict=True):
        tensors = _conv_tensors(graph, modules[name], node)
        put(name, ["weight", "bias"][: len(tensors)], tensors)

    bns, bn_nodes = of_type(nn.BatchNorm2d), list(graph.nodes_of("BatchNormalization"))
    _check(len(bns) == len(bn_nodes), f"graph has {len(bn_nodes)} batch norms, RecNet {len(bns)}")
    for name, node in zip(bns, bn_nodes, strict=True):
        module = modules[name]
        assert isinstance(module, nn.BatchNorm2d)
        _check(abs(float(_attrs(node)["epsilon"]) - module.eps) < 1e-9, f"{node.name}: epsilon differs")
        values = [graph.param(x) for x in node.input[1:5]]
        _check(all(v is not None for v in values), f"{node.name}: statistics are not initializers")
        put(name, ["weight", "bias", "running_mean", "running_var"], [v for v in values if v is not None])
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)

    lns, ln_params = of_type(nn.LayerNorm), _layer_norms(graph)
    _check(len(lns) == len(ln_params), f"graph has {len(ln_params)} layer norms, RecNet {len(lns)}")
    for name, (gamma, beta, eps) in zip(lns, ln_params, strict=True):
        module = modules[name]
        assert isinstance(module, nn.LayerNorm)
        _check(abs(eps - module.eps) < 1e-9, f"LayerNorm {name}: epsilon {eps} != {module.eps}")
        put(name, ["weight", "bias"], [gamma, beta])

    linears = of_type(nn.Linear)
    matmuls = [n for n in graph.nodes_of("MatMul") if graph.param(n.input[1]) is not None]
    _check(len(linears) == len(matmuls), f"graph has {len(matmuls)} linear layers, RecNet {len(linears)}")
    for name, node in zip(linears, matmuls, strict=True):
        weight, bias = graph.param(node.input[1]), graph.added_param(node.output[0])
        assert weight is not None
        _check(bias is not None, f"{node.name}: linear layer without bias")
        assert bias is not None
        _check(weight.T.shape == tuple(modules[name].weight.shape), f"{node.name}: shape differs from {name}")
        put(name, ["weight", "bias"], [weight.T, bias])
    return state


def read_charset(model: onnx.ModelProto) -> list[str]:
    """The recognizer's characters, from the ``character`` metadata (one per line, no blank/space)."""
    for prop in model.metadata_props:
        if prop.key == "character":
            return prop.value.splitlines()
    raise OnnxImportError("the rec ONNX has no 'character' metadata entry, so its charset is unknown")


def import_rec_onnx(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Return ``(RecNet state dict, characters)`` read from a PP-OCRv6 small rec ONNX file."""
    model = onnx.load(str(path))
    characters = read_charset(model)
    graph = _Graph(model)
    head = [n for n in graph.nodes_of("MatMul") if graph.param(n.input[1]) is not None][-1]
    head_weight = graph.param(head.input[1])
    assert head_weight is not None
    num_classes = int(head_weight.shape[1])
    _check(
        num_classes == len(characters) + 2,
        f"head has {num_classes} classes but the charset {len(characters)} characters (+ blank + space)",
    )
    net = RecNet(RecNetSpec(num_classes=num_classes))
    state = _state_dict(graph, net)
    missing = set(net.state_dict()) - set(state)
    _check(not missing, f"no ONNX tensors found for {sorted(missing)}")
    logger.info("imported %d tensors, %d classes from %s", len(state), num_classes, path)
    return state, characters
