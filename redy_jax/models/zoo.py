"""Flax CNN zoo: small models for 28x28 Fashion-MNIST and ImageNet-shaped models.

Built as in flax ``examples/imagenet/models.py``: one generic class per family
and named configurations through ``functools.partial``. The models are plain
``flax.linen`` modules; nothing in them knows about crossbars: the simulator
intercepts their ``nn.Conv`` / ``nn.Dense`` calls (see ``redy_jax.integrate``).

Every model takes ``train: bool`` (BatchNorm statistics) and images NHWC float32.
The ``conv`` field lets a training script inject a faster gradient
implementation without changing the parameter tree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from redy_jax import checkpoint

ModuleDef = Any


def _norm(train: bool, **kw):
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, **kw)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) for 28x28 inputs: 2 conv (5x5) + 3 dense."""

    num_classes: int = 10
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = self.conv(6, (5, 5), padding="SAME", name="conv1")(x)
        x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        x = self.conv(16, (5, 5), padding="VALID", name="conv2")(x)
        x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(120, name="fc1")(x))
        x = nn.relu(nn.Dense(84, name="fc2")(x))
        return nn.Dense(self.num_classes, name="fc3")(x)


class BasicBlock(nn.Module):
    filters: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.filters, (3, 3), self.strides, padding=1, use_bias=False)(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3), padding=1, use_bias=False)(y)
        y = self.norm(scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != self.filters or self.strides != 1:
            x = self.conv(self.filters, (1, 1), self.strides, use_bias=False, name="proj")(x)
            x = self.norm(name="proj_bn")(x)
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    filters: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.filters, (1, 1), use_bias=False)(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3), self.strides, padding=1, use_bias=False)(y)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters * 4, (1, 1), use_bias=False)(y)
        y = self.norm(scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != self.filters * 4 or self.strides != 1:
            x = self.conv(self.filters * 4, (1, 1), self.strides, use_bias=False, name="proj")(x)
            x = self.norm(name="proj_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet (He et al., 2016). ``stem='cifar'``: one 3x3 conv; ``'imagenet'``: 7x7/2 + pool."""

    stage_sizes: Sequence[int]
    widths: Sequence[int]
    block: ModuleDef = BasicBlock
    stem: str = "cifar"
    num_classes: int = 10
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = _norm(train)
        if self.stem == "cifar":
            x = self.conv(self.widths[0], (3, 3), padding=1, use_bias=False, name="stem")(x)
            x = nn.relu(norm(name="stem_bn")(x))
        else:
            x = self.conv(self.widths[0], (7, 7), 2, padding=3, use_bias=False, name="stem")(x)
            x = nn.relu(norm(name="stem_bn")(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for i, n in enumerate(self.stage_sizes):
            for j in range(n):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block(self.widths[i], strides, conv=self.conv, norm=norm,
                               name=f"stage{i + 1}_block{j + 1}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman, 2015). ``cfg``: widths, with ``'M'`` for 2x2 max-pool."""

    cfg: Sequence[int | str]
    dense: Sequence[int] = (256,)
    num_classes: int = 10
    batch_norm: bool = True
    dropout: float = 0.0
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = _norm(train)
        k = 0
        for c in self.cfg:
            if c == "M":
                x = nn.max_pool(x, (2, 2), (2, 2))
                continue
            k += 1
            x = self.conv(int(c), (3, 3), padding=1, use_bias=not self.batch_norm,
                          name=f"conv{k}")(x)
            if self.batch_norm:
                x = norm(name=f"bn{k}")(x)
            x = nn.relu(x)
        x = x.reshape((x.shape[0], -1))
        for i, d in enumerate(self.dense):
            x = nn.relu(nn.Dense(d, name=f"fc{i + 1}")(x))
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name=f"fc{len(self.dense) + 1}")(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, linear 1x1 project."""

    out_ch: int
    strides: int
    expand: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        in_ch = x.shape[-1]
        hidden = in_ch * self.expand
        y = x
        if self.expand != 1:
            y = self.conv(hidden, (1, 1), use_bias=False, name="expand")(y)
            y = nn.relu6(self.norm(name="expand_bn")(y))
        y = self.conv(hidden, (3, 3), self.strides, padding=1, feature_group_count=hidden,
                      use_bias=False, name="depthwise")(y)
        y = nn.relu6(self.norm(name="depthwise_bn")(y))
        y = self.conv(self.out_ch, (1, 1), use_bias=False, name="project")(y)
        y = self.norm(name="project_bn")(y)
        if self.strides == 1 and in_ch == self.out_ch:
            y = x + y
        return y


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018).

    ``settings``: rows of (expansion t, channels c, repeats n, stride s).
    """

    settings: Sequence[tuple[int, int, int, int]]
    stem_ch: int = 32
    stem_stride: int = 2
    last_ch: int = 1280
    num_classes: int = 10
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = _norm(train)
        x = self.conv(self.stem_ch, (3, 3), self.stem_stride, padding=1, use_bias=False,
                      name="stem")(x)
        x = nn.relu6(norm(name="stem_bn")(x))
        b = 0
        for t, c, n, s in self.settings:
            for i in range(n):
                b += 1
                x = InvertedResidual(c, s if i == 0 else 1, t, conv=self.conv, norm=norm,
                                     name=f"block{b}")(x)
        x = self.conv(self.last_ch, (1, 1), use_bias=False, name="head")(x)
        x = nn.relu6(norm(name="head_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al., 2012), single-tower torchvision layout, 224x224 input."""

    num_classes: int = 1000
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(self.conv(64, (11, 11), 4, padding=2, name="conv1")(x))
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = nn.relu(self.conv(192, (5, 5), padding=2, name="conv2")(x))
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = nn.relu(self.conv(384, (3, 3), padding=1, name="conv3")(x))
        x = nn.relu(self.conv(256, (3, 3), padding=1, name="conv4")(x))
        x = nn.relu(self.conv(256, (3, 3), padding=1, name="conv5")(x))
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(4096, name="fc1")(x))
        x = nn.relu(nn.Dense(4096, name="fc2")(x))
        return nn.Dense(self.num_classes, name="fc3")(x)


# --- small models for 28x28 single-channel inputs (Fashion-MNIST) ---
ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), widths=(16, 32, 64))
VGG8 = functools.partial(VGG, cfg=(32, 32, "M", 64, 64, "M", 128, 128, "M"), dense=(256,))
MobileNetV2Small = functools.partial(
    MobileNetV2,
    settings=((1, 16, 1, 1), (4, 24, 2, 1), (4, 32, 2, 2), (4, 64, 2, 2)),
    stem_ch=16, stem_stride=2, last_ch=256,
)

# --- ImageNet-shaped models (224x224x3, 1000 classes) for energy/shape studies ---
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), widths=(64, 128, 256, 512),
                             stem="imagenet", num_classes=1000)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), widths=(64, 128, 256, 512),
                             block=Bottleneck, stem="imagenet", num_classes=1000)
VGG16 = functools.partial(
    VGG,
    cfg=(64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"),
    dense=(4096, 4096), batch_norm=False, num_classes=1000,
)
MobileNetV2ImageNet = functools.partial(
    MobileNetV2,
    settings=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1)),
    num_classes=1000,
)

SMALL_MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "resnet20": ResNet20,
    "vgg8": VGG8,
    "mobilenetv2": MobileNetV2Small,
}
IMAGENET_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "vgg16": VGG16,
    "mobilenetv2_imagenet": MobileNetV2ImageNet,
    "alexnet": AlexNet,
}
MODELS = {**SMALL_MODELS, **IMAGENET_MODELS}
INPUT_SHAPES = {**{k: (28, 28, 1) for k in SMALL_MODELS},
                **{k: (224, 224, 3) for k in IMAGENET_MODELS}}


def create_model(name: str, **kwargs) -> nn.Module:
    """Instantiates a zoo model by name (see ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kwargs)


def load_checkpoint(name: str, path=None, num_classes: int = 10):
    """``(model, variables, record)`` of a zoo model from ``path`` (default: the shipped
    Fashion-MNIST checkpoint). Shapes are checked against the model's own."""
    model = create_model(name, num_classes=num_classes)
    path = checkpoint.shipped(name) if path is None else path
    target = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, *INPUT_SHAPES[name]))))
    target = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), target)
    variables, record = checkpoint.load(path, target)
    return model, variables, record
