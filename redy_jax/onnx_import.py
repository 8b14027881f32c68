"""ONNX import: a trained CNN from PyTorch, timm or Keras (``torch.onnx.export``,
tf2onnx) as a Flax module the one-pass simulator runs.

:func:`from_onnx` returns ``(module, variables)``: convolutions and matrix products
with constant weights become ``nn.Conv`` / ``nn.Dense`` (so they map to crossbars),
every other op runs digitally in float. The module takes **NHWC** images (the layout of
the rest of redy_jax; the graph's NCHW input is converted once) and its weights are
converted to HWIO / (in, out) once, at import.

Inside, 4-D activations are kept NHWC; an op whose meaning depends on the layout
(Flatten, Reshape, Transpose, a 4-D constant operand) sees the NCHW tensor ONNX
defines. Shape computations that exporters emit (Shape -> Gather -> Concat ->
Reshape) are evaluated on static numpy values while tracing: constant folding.

Supported ops (opsets 11 to 23): :data:`SUPPORTED`. Anything else is an error naming
the op type, the node and the opset, raised by :func:`from_onnx` before any work.
"""

from __future__ import annotations

import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED = ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "LeakyRelu",
             "Sigmoid", "HardSigmoid", "HardSwish", "Add", "Sub", "Mul", "Div", "Concat",
             "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten",
             "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout",
             "Constant", "Shape", "Gather", "Cast", "ConstantOfShape", "Softmax")
NOT_ON_CROSSBARS = ("ConvTranspose", "Attention", "MultiHeadAttention", "Einsum", "LSTM",
                    "GRU", "RNN", "ConvInteger", "MatMulInteger", "QLinearConv")
OPSETS = (11, 23)


class OnnxImportError(ValueError):
    """An ONNX graph the importer cannot map (names the op, node and opset)."""


def _name(s: str) -> str:
    """A Flax module name for an ONNX node name ('/layer1/0/conv1/Conv' -> 'layer1_0_conv1')."""
    s = re.sub(r"/(Conv|Gemm|MatMul)$", "", s)
    s = re.sub(r"[^0-9A-Za-z_]+", "_", s).strip("_")
    return s or "node"


def _freeze(v):
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, bytes):
        return v.decode()
    return v


class Node(tuple):
    """(op, name, inputs, outputs, attributes) — hashable."""

    op = property(lambda self: self[0])
    name = property(lambda self: self[1])
    inputs = property(lambda self: self[2])
    outputs = property(lambda self: self[3])
    attrs = property(lambda self: dict(self[4]))


class OnnxModule(nn.Module):
    """An imported ONNX graph (see :func:`from_onnx`); input NHWC images."""

    nodes: tuple
    input_name: str
    output_name: str
    opset: int
    constants: tuple = ()
    """(ONNX initializer name, key in the ``constants`` collection) pairs: the large
    float constants (BatchNorm statistics, ...), traced like parameters."""
    statics: tuple = ()
    """(name, dtype, shape, values) of small or integer constants (shapes, axes, clip
    bounds, scalars): static, so shape computations fold while tracing."""
    weights: tuple = ()
    """(name, shape) of the crossbar layers' weights (their values are in ``params``)."""

    @nn.compact
    def __call__(self, x):
        stored = self.variables.get("constants", {})
        env: dict[str, Any] = {self.input_name: _Act(jnp.asarray(x), True)}
        for name, key in self.constants:
            env[name] = _Act(stored[key], False)
        for name, dtype, shape, values in self.statics:
            env[name] = _Act(np.asarray(values, dtype).reshape(shape), False, static=True)
        for name, shape in self.weights:
            env[name] = _Act(_Shape(shape), False, static=True)
        for node in self.nodes:
            node = Node(node)
            ins = [None if i == "" else env[i] for i in node.inputs]
            outs = _run(self, node, ins, self.opset)
            for n, v in zip(node.outputs, outs, strict=False):
                env[n] = v
        return env[self.output_name].nchw()


class _Shape:
    """Stands for a weight whose values live in ``params``: only its shape is read."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.ndim = len(self.shape)


class _Act:
    """A value in the graph: a JAX array (4-D ones kept NHWC: ``nhwc``) or a static
    numpy array (constants and shape computations)."""

    def __init__(self, v, nhwc: bool, static: bool = False):
        self.v, self.nhwc, self.static = v, nhwc, static

    def nchw(self):
        return jnp.transpose(self.v, (0, 3, 1, 2)) if self.nhwc else self.v

    @property
    def ndim(self):
        return self.v.ndim


def _plain(a: _Act):
    """The value as ONNX defines it (NCHW)."""
    return a.nchw() if isinstance(a, _Act) else a


def _np(a: _Act, what: str, node: Node):
    if not a.static:
        raise OnnxImportError(f"node {node.name!r} ({node.op}): {what} must be a constant")
    return np.asarray(a.v)


def _nhwc_operand(a: _Act):
    """An operand broadcast against an NHWC activation, in NHWC: (C, H, W) and
    (N, C, H, W) constants are transposed; scalars stay."""
    v = a.v
    if a.nhwc or np.ndim(v) == 0 or np.size(v) == 1:
        return v
    v = v.reshape((1,) * (4 - v.ndim) + tuple(v.shape))
    return jnp.transpose(v, (0, 2, 3, 1))


def _binary(fn, a: _Act, b: _Act):
    if a.static and b.static:
        return _Act(fn(np.asarray(a.v), np.asarray(b.v)), False, static=True)
    if a.nhwc or b.nhwc:
        others = [o for o in (a, b) if not o.nhwc]
        # NHWC only when the other operand is an activation too, a scalar, or a
        # constant of rank >= 3 (ONNX aligns lower-rank constants with W, not C).
        if all(np.size(o.v) == 1 or np.ndim(o.v) >= 3 for o in others):
            return _Act(fn(_nhwc_operand(a), _nhwc_operand(b)), True)
    return _Act(fn(jnp.asarray(_plain(a)), jnp.asarray(_plain(b))), False)


def _pads(attrs, rank=2):
    p = attrs.get("pads", (0,) * (2 * rank))
    return tuple((int(p[i]), int(p[i + rank])) for i in range(rank))


def _auto_pad(attrs, in_hw, kernel, strides, dilations):
    mode = attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", ""):
        return _pads(attrs)
    if mode == "VALID":
        return ((0, 0), (0, 0))
    out = []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations, strict=True):
        eff = (k - 1) * d + 1
        total = max((math.ceil(size / s) - 1) * s + eff - size, 0)
        lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
        out.append((lo, total - lo))
    return tuple(out)


def _run(mod: OnnxModule, node: Node, ins: list, opset: int) -> list:
    op, a = node.op, node.attrs
    x = ins[0] if ins else None
    if op in ("Identity", "Dropout"):
        return [x]
    if op == "Constant":
        return [x]  # folded at import into an initializer
    if op == "Conv":
        w = ins[1].v  # (O, I/g, kh, kw): its shape (the values are in params)
        kernel = tuple(int(k) for k in w.shape[2:])
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        hw = x.v.shape[1:3] if x.nhwc else x.v.shape[2:4]
        pads = _auto_pad(a, hw, kernel, strides, dil)
        xv = x.v if x.nhwc else jnp.transpose(x.v, (0, 2, 3, 1))
        conv = nn.Conv(int(w.shape[0]), kernel, strides=strides, padding=pads,
                       kernel_dilation=dil, feature_group_count=int(a.get("group", 1)),
                       use_bias=len(ins) > 2 and ins[2] is not None, name=_name(node.name))
        return [_Act(conv(xv), True)]
    if op in ("Gemm", "MatMul"):
        w = ins[1]
        if not w.static:
            raise OnnxImportError(f"node {node.name!r} ({op}, opset {opset}): only matrix "
                                  "products with a constant weight map to crossbars")
        xv = _plain(x)
        if op == "Gemm" and a.get("transA", 0):
            xv = xv.T
        dense = nn.Dense(int(w.v.shape[1 - a.get("transB", 0)] if op == "Gemm"
                             else w.v.shape[-1]),
                         use_bias=op == "Gemm" and len(ins) > 2 and ins[2] is not None,
                         name=_name(node.name))
        return [_Act(dense(jnp.asarray(xv)), False)]
    if op == "BatchNormalization":
        scale, bias, mean, var = (jnp.asarray(i.v) for i in ins[1:5])
        eps = a.get("epsilon", 1e-5)
        k = scale / jnp.sqrt(var + eps)
        shift = bias - mean * k
        if x.nhwc:
            return [_Act(x.v * k + shift, True)]
        shape = (1, -1) + (1,) * (x.v.ndim - 2)
        return [_Act(x.v * k.reshape(shape) + shift.reshape(shape), False)]
    if op == "Relu":
        return [_Act(jax.nn.relu(x.v), x.nhwc)]
    if op == "LeakyRelu":
        return [_Act(jax.nn.leaky_relu(x.v, a.get("alpha", 0.01)), x.nhwc)]
    if op == "Sigmoid":
        return [_Act(jax.nn.sigmoid(x.v), x.nhwc)]
    if op == "HardSigmoid":
        return [_Act(jnp.clip(a.get("alpha", 0.2) * x.v + a.get("beta", 0.5), 0, 1), x.nhwc)]
    if op == "HardSwish":
        return [_Act(x.v * jnp.clip(x.v / 6 + 0.5, 0, 1), x.nhwc)]
    if op == "Softmax":
        axis = a.get("axis", -1 if opset >= 13 else 1)
        return [_Act(jax.nn.softmax(_plain(x), axis=axis), False)]
    if op == "Clip":
        if opset >= 11 and len(ins) > 1:
            lo = None if len(ins) < 2 or ins[1] is None else float(_np(ins[1], "min", node))
            hi = None if len(ins) < 3 or ins[2] is None else float(_np(ins[2], "max", node))
        else:
            lo, hi = a.get("min"), a.get("max")
        return [_Act(jnp.clip(x.v, lo, hi), x.nhwc)]
    if op in ("Add", "Sub", "Mul", "Div"):
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        return [_binary(lambda p, q: fn(p, q) if isinstance(p, np.ndarray) and isinstance(
            q, np.ndarray) else getattr(jnp, fn.__name__)(p, q), x, ins[1])]
    if op == "Concat":
        axis = a["axis"]
        if all(i.static for i in ins):
            return [_Act(np.concatenate([np.asarray(i.v) for i in ins], axis), False, True)]
        if all(i.nhwc for i in ins) and axis in (1, -3):
            return [_Act(jnp.concatenate([i.v for i in ins], -1), True)]
        return [_Act(jnp.concatenate([jnp.asarray(_plain(i)) for i in ins], axis), False)]
    if op in ("MaxPool", "AveragePool"):
        if a.get("ceil_mode", 0):
            raise OnnxImportError(f"node {node.name!r} ({op}, opset {opset}): ceil_mode=1 is "
                                  "not supported")
        k = tuple(a["kernel_shape"])
        s = tuple(a.get("strides", (1,) * len(k)))
        xv = x.v if x.nhwc else jnp.transpose(x.v, (0, 2, 3, 1))
        pads = _auto_pad(a, xv.shape[1:3], k, s, a.get("dilations", (1, 1)))
        if op == "MaxPool":
            if tuple(a.get("dilations", (1, 1))) != (1, 1):
                raise OnnxImportError(f"node {node.name!r} (MaxPool): dilations unsupported")
            return [_Act(nn.max_pool(xv, k, s, pads), True)]
        return [_Act(nn.avg_pool(xv, k, s, pads,
                                 count_include_pad=bool(a.get("count_include_pad", 0))), True)]
    if op == "GlobalAveragePool":
        xv = x.v if x.nhwc else jnp.transpose(x.v, (0, 2, 3, 1))
        return [_Act(xv.mean(axis=(1, 2), keepdims=True), True)]
    if op == "GlobalMaxPool":
        xv = x.v if x.nhwc else jnp.transpose(x.v, (0, 2, 3, 1))
        return [_Act(xv.max(axis=(1, 2), keepdims=True), True)]
    if op == "Flatten":
        v = _plain(x)
        axis = a.get("axis", 1)
        lead = int(np.prod(v.shape[:axis])) if axis else 1
        return [_Act(v.reshape(lead, -1), False, x.static)]
    if op == "Reshape":
        shape = [int(d) for d in _np(ins[1], "the shape", node)]
        v = _plain(x)
        if not a.get("allowzero", 0):
            shape = [v.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return [_Act(v.reshape(shape), False, x.static)]
    if op in ("Squeeze", "Unsqueeze"):
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(i) for i in _np(ins[1], "axes", node)]
        v = _plain(x)
        lib = np if x.static else jnp
        if op == "Squeeze":
            out = lib.squeeze(v, tuple(axes) if axes is not None else None)
        else:
            out = v
            for ax in sorted(int(i) % (v.ndim + len(axes)) for i in axes):
                out = lib.expand_dims(out, ax)
        return [_Act(out, False, x.static)]
    if op == "Transpose":
        perm = tuple(a.get("perm", range(x.ndim)[::-1]))
        lib = np if x.static else jnp
        return [_Act(lib.transpose(_plain(x), perm), False, x.static)]
    if op == "Shape":
        shape = np.asarray(_plain(x).shape, np.int64)
        start, end = a.get("start", 0), a.get("end")
        return [_Act(shape[start:end], False, static=True)]
    if op == "Gather":
        idx = _np(ins[1], "the indices", node)
        axis = a.get("axis", 0)
        if x.static:
            return [_Act(np.take(np.asarray(x.v), idx, axis=axis), False, True)]
        return [_Act(jnp.take(_plain(x), jnp.asarray(idx), axis=axis), False)]
    if op == "Cast":
        to = _ONNX_DTYPES.get(a["to"], np.float32)
        if x.static:
            return [_Act(np.asarray(x.v).astype(to), False, True)]
        return [_Act(x.v.astype(to), x.nhwc)]
    if op == "ConstantOfShape":
        shape = [int(d) for d in _np(x, "the shape", node)]
        value = np.asarray(a.get("value", np.zeros(1, np.float32))).reshape(-1)[0]
        return [_Act(np.full(shape, value), False, True)]
    raise OnnxImportError(f"node {node.name!r}: op {op} (opset {opset}) is not supported")


_ONNX_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
                11: np.float64}


def _attr_value(attr):
    import onnx

    v = onnx.helper.get_attribute_value(attr)
    if isinstance(v, onnx.TensorProto):
        return _freeze(onnx.numpy_helper.to_array(v).tolist())
    return _freeze(v)


def from_onnx(model_or_path, *, input_shape: tuple | None = None) -> tuple[OnnxModule, dict]:
    """Imports an ONNX CNN.

    Args:
      model_or_path: an ``onnx.ModelProto`` or the path of an ``.onnx`` file.
      input_shape: one image's NHWC shape (H, W, C) when the graph's input dimensions
        are symbolic (default: read from the graph).
    Returns:
      ``(module, variables)``: ``module.apply(variables, images_nhwc)`` gives the
      graph's output; ``variables`` holds ``params`` (the crossbar layers' kernels and
      biases) and ``constants`` (every other initializer).
    Raises:
      OnnxImportError: an unsupported op (named with its node and the opset), an
        opset outside 11..23, more than one input or output, a weight that is not
        constant.
    """
    import onnx
    from onnx import numpy_helper

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(
        str(model_or_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSETS[0] <= opset <= OPSETS[1]:
        raise OnnxImportError(f"opset {opset} is not supported: {OPSETS[0]} to {OPSETS[1]}")
    g = model.graph
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            raise OnnxImportError(f"node {n.name!r}: op {n.domain}.{n.op_type} (opset {opset}) "
                                  "is not supported (custom domain)")
        if n.op_type in NOT_ON_CROSSBARS:
            raise OnnxImportError(f"node {n.name!r}: op {n.op_type} (opset {opset}) is not "
                                  "mapped to crossbars (supported matrix ops: Conv, Gemm, "
                                  "MatMul with a constant weight)")
        if n.op_type not in SUPPORTED:
            raise OnnxImportError(f"node {n.name!r}: op {n.op_type} (opset {opset}) is not "
                                  f"supported; supported ops: {', '.join(SUPPORTED)}")
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise OnnxImportError(f"the graph must have one image input and one output, got "
                              f"inputs {[i.name for i in inputs]} and outputs "
                              f"{[o.name for o in g.output]}")
    # Constant nodes become initializers; names must survive as Flax keys.
    nodes = []
    for n in g.node:
        attrs = {a.name: a for a in n.attribute}
        if n.op_type == "Constant":
            a = next(iter(attrs.values()))
            if a.name == "value":
                inits[n.output[0]] = numpy_helper.to_array(a.t)
            else:
                inits[n.output[0]] = np.asarray(onnx.helper.get_attribute_value(a))
            continue
        nodes.append((n.op_type, n.name or f"{n.op_type}_{len(nodes)}", tuple(n.input),
                      tuple(n.output), tuple(sorted((k, _attr_value(v))
                                                    for k, v in attrs.items()))))
    seen: dict[str, int] = {}
    for i, n in enumerate(nodes):  # unique module names
        if n[0] in ("Conv", "Gemm", "MatMul"):
            base = _name(n[1])
            seen[base] = seen.get(base, 0) + 1
            if seen[base] > 1:
                nodes[i] = (n[0], f"{n[1]}_{seen[base]}", *n[2:])
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if input_shape is None:
        if len(dims) != 4 or any(d is None for d in dims[1:]):
            raise OnnxImportError(f"the input {inputs[0].name!r} has shape {dims}; pass "
                                  "input_shape=(H, W, C)")
        input_shape = (dims[2], dims[3], dims[1])
    module = OnnxModule(nodes=tuple(nodes), input_name=inputs[0].name,
                        output_name=g.output[0].name, opset=int(opset))
    params = {}
    for op, name, ins, _, attrs in nodes:
        attrs = dict(attrs)
        if op == "Conv":
            w = inits[ins[1]]
            params[_name(name)] = {"kernel": np.transpose(w, (2, 3, 1, 0)).astype(np.float32)}
            if len(ins) > 2 and ins[2]:
                params[_name(name)]["bias"] = inits[ins[2]].astype(np.float32)
        elif op in ("Gemm", "MatMul"):
            if ins[1] not in inits:
                raise OnnxImportError(f"node {name!r} ({op}, opset {opset}): only matrix "
                                      "products with a constant weight map to crossbars")
            w = inits[ins[1]].astype(np.float32)
            if op == "Gemm":
                w = (w.T if attrs.get("transB", 0) else w) * attrs.get("alpha", 1.0)
            params[_name(name)] = {"kernel": w}
            if op == "Gemm" and len(ins) > 2 and ins[2]:
                params[_name(name)]["bias"] = (np.broadcast_to(inits[ins[2]], (w.shape[1],))
                                               * attrs.get("beta", 1.0)).astype(np.float32)
    weight_names = {ins[1] for op, _, ins, _, _ in nodes if op in ("Conv", "Gemm", "MatMul")}
    weight_names |= {ins[2] for op, _, ins, _, _ in nodes
                     if op in ("Conv", "Gemm") and len(ins) > 2 and ins[2]}
    statics, traced, weights = [], [], []
    for k, v in inits.items():
        if k in weight_names:
            weights.append((k, tuple(v.shape)))
        elif v.size <= 64 or not np.issubdtype(v.dtype, np.floating):
            statics.append((k, str(v.dtype), tuple(v.shape), tuple(v.reshape(-1).tolist())))
        else:
            traced.append((k, f"c{len(traced)}"))
    module = module.clone(constants=tuple(traced), statics=tuple(statics),
                          weights=tuple(weights))
    consts = {key: inits[k].astype(np.float32) for k, key in traced}
    variables = {"params": params, "constants": consts}
    # Check the structure once (shapes, unsupported attributes) by tracing.
    try:
        jax.eval_shape(lambda v, x: module.apply(v, x), variables,
                       jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    except OnnxImportError:
        raise
    except Exception as e:
        raise OnnxImportError(f"the graph does not run on input NHWC {(1, *input_shape)}: "
                              f"{type(e).__name__}: {e}") from e
    return module, jax.tree_util.tree_map(jnp.asarray, variables)


def input_shape(model_or_path) -> tuple[int, int, int] | None:
    """One image's NHWC shape (H, W, C) from the graph's input, if static."""
    import onnx

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(
        str(model_or_path))
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inp.type.tensor_type.shape.dim]
    if len(dims) == 4 and all(dims[1:]):
        return (dims[2], dims[3], dims[1])
    return None


__all__ = ["NOT_ON_CROSSBARS", "OPSETS", "SUPPORTED", "OnnxImportError", "OnnxModule",
           "from_onnx", "input_shape"]
