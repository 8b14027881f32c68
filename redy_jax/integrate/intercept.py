"""Routes every ``nn.Conv`` / ``nn.Dense`` of an unmodified Flax model through crossbars.

Uses ``flax.linen.intercept_methods``, entered *inside* the jitted function (entered
outside, it would be baked into a cached trace). Other layers (BatchNorm, pooling,
activations, residual adds) run digitally in float, as written by the user.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp
from flax.linen.linear import canonicalize_padding

from redy_jax.hw.spec import HardwareSpec
from redy_jax.policy.map import PolicyMap
from redy_jax.quant.activations import ActQuant
from redy_jax.xbar.layer import crossbar_layer

# Layers that do matrix products the crossbar model does not map.
_UNSUPPORTED = ("ConvTranspose", "ConvLocal", "DenseGeneral", "Einsum",
                "MultiHeadDotProductAttention")


class UnsupportedLayerError(ValueError):
    """A model contains a layer the crossbar model cannot map."""


def module_path(module: nn.Module) -> str:
    return "/".join(str(p) for p in module.path) or type(module).__name__


def layer_kind(module: nn.Module) -> str | None:
    """``conv`` / ``depthwise`` / ``grouped`` / ``dense`` for mapped layers, None for others.

    Raises:
      UnsupportedLayerError: naming the layer, for matrix-product layers not modelled.
    """
    name = type(module).__name__
    if isinstance(module, nn.Conv):
        if len(module.kernel_size) != 2:
            raise UnsupportedLayerError(
                f"layer '{module_path(module)}' ({name}) has a {len(module.kernel_size)}-D "
                "kernel; only 2-D convolutions are mapped to crossbars")
        if module.feature_group_count == 1:
            return "conv"
        return "depthwise" if _is_depthwise(module) else "grouped"
    if isinstance(module, nn.Dense):
        return "dense"
    if name in _UNSUPPORTED or isinstance(module, (nn.ConvTranspose, nn.ConvLocal)):
        raise UnsupportedLayerError(
            f"layer '{module_path(module)}' ({name}) is not supported by the crossbar model; "
            "supported: nn.Conv (2-D, incl. grouped/depthwise) and nn.Dense")
    return None


def _is_depthwise(module: nn.Conv) -> bool:
    """One input channel per group (kernel HWIO with I == 1)."""
    kernel = module.get_variable("params", "kernel")
    return kernel is not None and kernel.shape[2] == 1


def conv_args(module: nn.Conv, x: jnp.ndarray) -> dict:
    """Static conv hyper-parameters of an ``nn.Conv`` in the form the simulator takes."""
    path = module_path(module)
    if x.ndim != 4:
        raise UnsupportedLayerError(f"layer '{path}': input must be NHWC (rank 4), got shape "
                                    f"{x.shape}")
    if module.mask is not None:
        raise UnsupportedLayerError(f"layer '{path}': masked convolutions are not supported")
    if module.input_dilation not in (None, 1, (1, 1)):
        raise UnsupportedLayerError(f"layer '{path}': input_dilation is not supported")
    if isinstance(module.padding, str) and module.padding.upper() in ("CIRCULAR", "CAUSAL"):
        raise UnsupportedLayerError(f"layer '{path}': padding {module.padding!r} is not supported")
    expand = lambda v: (1, 1) if v is None else ((v, v) if isinstance(v, int) else tuple(v))
    return dict(strides=expand(module.strides), kernel_dilation=expand(module.kernel_dilation),
                padding=canonicalize_padding(module.padding, 2),
                groups=module.feature_group_count)


def call_site(path: str, seen: Mapping) -> str:
    """The key of a layer call: its module path, ``path#2``, ``path#3``... for a module
    called more than once in one application (weight sharing)."""
    key, i = path, 2
    while key in seen:
        key, i = f"{path}#{i}", i + 1
    return key


def crossbar_interceptor(records: dict, infos: dict, quants: Mapping[str, ActQuant],
                         policies: PolicyMap, spec: HardwareSpec, mode: str,
                         ste: bool = False, capture: dict | None = None,
                         paths: set | None = None) -> Callable:
    """An interceptor that simulates every mapped layer and fills ``records`` / ``infos``
    (keyed by :func:`call_site`).

    ``quants``: the calibration's quantisers by call site (traced inside the pass); the
    policy is looked up by module path. ``capture``: when given, filled with each call
    site's tensors (see :func:`redy_jax.capture`). ``paths``: when given, receives the
    module path of every mapped layer, float ones included."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or module.is_initializing():
            return next_fun(*args, **kwargs)
        kind = layer_kind(module)
        if kind is None:
            return next_fun(*args, **kwargs)
        path = module_path(module)
        if paths is not None:
            paths.add(path)
        policy = policies.for_layer(path, kind)
        if not policy.crossbar:
            return next_fun(*args, **kwargs)
        x = jnp.asarray(args[0], jnp.float32)
        kernel = module.get_variable("params", "kernel")
        bias = module.get_variable("params", "bias") if module.use_bias else None
        extra = {} if kind == "dense" else conv_args(module, x)
        key = call_site(path, records)
        tensors = {} if capture is not None else None
        y, record, info = crossbar_layer(
            x, jnp.asarray(kernel, jnp.float32), bias, kind=kind, path=key,
            quant=_quant(quants, key), policy=policy, spec=spec, mode=mode, ste=ste,
            capture=tensors, **extra)
        records[key] = record
        infos[key] = info
        if capture is not None:
            capture[key] = tensors
        return y.astype(jnp.result_type(x))

    return interceptor


def _quant(quants: Mapping[str, ActQuant], path: str) -> ActQuant:
    if path not in quants:
        raise KeyError(f"no calibration for layer {path!r}; calibrated layers: "
                       f"{sorted(quants)[:5]}...")
    q = quants[path]
    return q


def observe_interceptor(observe: Callable[[str, jnp.ndarray], None]) -> Callable:
    """An interceptor that runs the model in float and calls ``observe(call site,
    input)`` for every mapped layer call (used by calibration)."""
    seen: dict[str, None] = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and not module.is_initializing():
            kind = layer_kind(module)
            if kind is not None:
                key = call_site(module_path(module), seen)
                seen[key] = None
                observe(key, jnp.asarray(args[0], jnp.float32))
        return next_fun(*args, **kwargs)

    return interceptor
