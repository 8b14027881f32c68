"""Flax CNN zoo (see ``zoo.py``)."""

from redy_jax.models.zoo import (
    IMAGENET_MODELS,
    INPUT_SHAPES,
    MODELS,
    SMALL_MODELS,
    VGG,
    VGG8,
    VGG16,
    AlexNet,
    LeNet5,
    MobileNetV2,
    MobileNetV2ImageNet,
    MobileNetV2Small,
    ResNet,
    ResNet18,
    ResNet20,
    ResNet50,
    create_model,
    load_checkpoint,
)

__all__ = [
    "IMAGENET_MODELS", "INPUT_SHAPES", "MODELS", "SMALL_MODELS", "AlexNet", "LeNet5",
    "MobileNetV2", "MobileNetV2ImageNet", "MobileNetV2Small", "ResNet", "ResNet18",
    "ResNet20", "ResNet50", "VGG", "VGG8", "VGG16", "create_model", "load_checkpoint",
]
