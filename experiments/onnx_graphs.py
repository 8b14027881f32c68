"""ONNX graphs of standard CNN topologies with random weights, built with
``onnx.helper`` as PyTorch's exporter lays them out (NCHW, Conv + BatchNormalization +
Relu/Clip, Shape -> Gather -> Concat -> Reshape before the classifier).

Used by the tests (``tests/test_onnx.py``: the importer against onnxruntime) and by the
ImageNet-shaped study (``run_all.py``). The weights are random: accuracy means nothing;
layer shapes, crossbar counts, latency and the activation statistics on real
photographs do.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    """A small NCHW graph builder: each method adds nodes and returns the output name."""

    def __init__(self, name: str, input_shape, opset: int = 17, seed: int = 0):
        self.name, self.opset = name, opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                   list(input_shape))
        self.channels = {"input": input_shape[1]}
        self.n = 0

    def _id(self, op):
        self.n += 1
        return f"/{op.lower()}_{self.n}"

    def const(self, value, name=None) -> str:
        name = name or f"const_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, channels=None, **attrs) -> str:
        name = self._id(op)
        out = f"{name}/out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{name}/{op}", **attrs))
        self.channels[out] = channels if channels is not None else self.channels.get(inputs[0])
        return out

    def conv(self, x, cout, k, stride=1, pad=None, group=1, dilation=1, bias=True):
        cin = self.channels[x]
        pads = [pad if pad is not None else (k // 2) * dilation] * 4 if not isinstance(
            pad, list) else pad
        w = self.rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)),
                            (cout, cin // group, k, k)).astype(np.float32)
        ins = [x, self.const(w)]
        if bias:
            ins.append(self.const(self.rng.normal(0, 0.05, cout).astype(np.float32)))
        return self.node("Conv", ins, cout, kernel_shape=[k, k], strides=[stride, stride],
                         pads=pads, group=group, dilations=[dilation, dilation])

    def bn(self, x):
        c = self.channels[x]
        r = self.rng
        ins = [x] + [self.const(v.astype(np.float32)) for v in (
            r.uniform(0.5, 1.5, c), r.normal(0, 0.1, c), r.normal(0, 0.1, c),
            r.uniform(0.5, 1.5, c))]
        return self.node("BatchNormalization", ins, epsilon=1e-5)

    def relu(self, x):
        return self.node("Relu", [x])

    def relu6(self, x):
        return self.node("Clip", [x, self.const(np.float32(0)), self.const(np.float32(6))])

    def add(self, a, b):
        return self.node("Add", [a, b])

    def maxpool(self, x, k, s, p):
        return self.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)

    def gap(self, x):
        return self.node("GlobalAveragePool", [x])

    def flatten_exporter(self, x):
        """PyTorch's ``x.reshape(x.size(0), -1)``: a shape subgraph + Reshape."""
        shape = self.node("Shape", [x], 1)
        batch = self.node("Gather", [shape, self.const(np.int64(0))], 1, axis=0)
        b1 = self.node("Unsqueeze", [batch, self.const(np.asarray([0], np.int64))], 1)
        target = self.node("Concat", [b1, self.const(np.asarray([-1], np.int64))], 1, axis=0)
        c = self.channels[x]
        return self.node("Reshape", [x, target], c)

    def flatten(self, x, features):
        out = self.node("Flatten", [x], features, axis=1)
        return out

    def gemm(self, x, fin, fout):
        w = self.rng.normal(0, np.sqrt(1.0 / fin), (fout, fin)).astype(np.float32)
        b = self.rng.normal(0, 0.05, fout).astype(np.float32)
        return self.node("Gemm", [x, self.const(w), self.const(b)], fout, transB=1)

    def model(self, out) -> onnx.ModelProto:
        output = helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, None])
        graph = helper.make_graph(self.nodes, self.name, [self.input], [output], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def _w(c, width):
    return max(4, int(round(c * width)))


def resnet18(size=224, classes=1000, width=1.0, batch=1):
    b = Builder("resnet18", (batch, 3, size, size))
    x = b.relu(b.bn(b.conv("input", _w(64, width), 7, 2, 3, bias=False)))
    x = b.maxpool(x, 3, 2, 1)
    for i, c in enumerate((64, 128, 256, 512)):
        for j in range(2):
            s = 2 if (i > 0 and j == 0) else 1
            y = b.relu(b.bn(b.conv(x, _w(c, width), 3, s, bias=False)))
            y = b.bn(b.conv(y, _w(c, width), 3, 1, bias=False))
            if s != 1 or b.channels[x] != _w(c, width):
                x = b.bn(b.conv(x, _w(c, width), 1, s, 0, bias=False))
            x = b.relu(b.add(x, y))
    x = b.flatten(b.gap(x), _w(512, width))
    return b.model(b.gemm(x, _w(512, width), classes))


def resnet50(size=224, classes=1000, width=1.0, batch=1):
    b = Builder("resnet50", (batch, 3, size, size))
    x = b.relu(b.bn(b.conv("input", _w(64, width), 7, 2, 3, bias=False)))
    x = b.maxpool(x, 3, 2, 1)
    for i, (c, n) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for j in range(n):
            s = 2 if (i > 0 and j == 0) else 1
            y = b.relu(b.bn(b.conv(x, _w(c, width), 1, 1, 0, bias=False)))
            y = b.relu(b.bn(b.conv(y, _w(c, width), 3, s, bias=False)))
            y = b.bn(b.conv(y, _w(4 * c, width), 1, 1, 0, bias=False))
            if s != 1 or b.channels[x] != _w(4 * c, width):
                x = b.bn(b.conv(x, _w(4 * c, width), 1, s, 0, bias=False))
            x = b.relu(b.add(x, y))
    x = b.flatten_exporter(b.gap(x))
    return b.model(b.gemm(x, _w(2048, width), classes))


def mobilenetv2(size=224, classes=1000, width=1.0, batch=1):
    b = Builder("mobilenetv2", (batch, 3, size, size))
    x = b.relu6(b.bn(b.conv("input", _w(32, width), 3, 2, bias=False)))
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for j in range(n):
            stride = s if j == 0 else 1
            cin = b.channels[x]
            y = x
            if t != 1:
                y = b.relu6(b.bn(b.conv(y, cin * t, 1, 1, 0, bias=False)))
            hid = b.channels[y]
            y = b.relu6(b.bn(b.conv(y, hid, 3, stride, group=hid, bias=False)))
            y = b.bn(b.conv(y, _w(c, width), 1, 1, 0, bias=False))
            x = b.add(x, y) if (stride == 1 and cin == _w(c, width)) else y
    x = b.relu6(b.bn(b.conv(x, _w(1280, width), 1, 1, 0, bias=False)))
    x = b.flatten_exporter(b.gap(x))
    return b.model(b.gemm(x, _w(1280, width), classes))


def vgg16(size=224, classes=1000, width=1.0, batch=1, hidden=4096):
    b = Builder("vgg16", (batch, 3, size, size))
    x = "input"
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
        x = b.maxpool(x, 2, 2, 0) if v == "M" else b.relu(b.conv(x, _w(v, width), 3))
    side = size // 32
    x = b.flatten(x, _w(512, width) * side * side)
    h = _w(hidden, width)
    x = b.relu(b.gemm(x, _w(512, width) * side * side, h))
    x = b.node("Dropout", [x])
    x = b.relu(b.gemm(x, h, h))
    return b.model(b.gemm(x, h, classes))


def alexnet(size=224, classes=1000, width=1.0, batch=1, hidden=4096):
    b = Builder("alexnet", (batch, 3, size, size))
    x = b.maxpool(b.relu(b.conv("input", _w(64, width), 11, 4, 2)), 3, 2, 0)
    x = b.maxpool(b.relu(b.conv(x, _w(192, width), 5, 1, 2)), 3, 2, 0)
    x = b.relu(b.conv(x, _w(384, width), 3))
    x = b.relu(b.conv(x, _w(256, width), 3))
    x = b.maxpool(b.relu(b.conv(x, _w(256, width), 3)), 3, 2, 0)
    side = ((((size + 4 - 11) // 4 + 1 - 3) // 2 + 1 - 3) // 2 + 1 - 3) // 2 + 1
    feats = _w(256, width) * side * side
    x = b.flatten_exporter(x)
    h = _w(hidden, width)
    x = b.relu(b.gemm(b.node("Dropout", [x]), feats, h))
    x = b.relu(b.gemm(b.node("Dropout", [x]), h, h))
    return b.model(b.gemm(x, h, classes))


def mixed(size=12, batch=2, opset=17):
    """The issue's mixed graph: grouped conv, asymmetric pads, Clip, Concat, Gemm,
    GlobalAveragePool."""
    b = Builder("mixed", (batch, 4, size, size), opset=opset)
    a = b.relu6(b.conv("input", 8, 3, 1, [0, 1, 2, 1]))  # pads: top 0, left 1, bottom 2, right 1
    g = b.conv(a, 8, 3, 1, 1, group=4)
    c = b.node("Concat", [a, g], 16, axis=1)
    x = b.flatten(b.gap(c), 16)
    return b.model(b.gemm(x, 16, 5))


ARCHITECTURES = {"resnet18": resnet18, "resnet50": resnet50, "mobilenetv2": mobilenetv2,
                 "vgg16": vgg16, "alexnet": alexnet}
