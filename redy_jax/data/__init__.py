"""Datasets: Fashion-MNIST built offline from local files, TFDS datasets, digits."""

from redy_jax.data.loaders import DATASETS, Dataset, load, normalize

__all__ = ["DATASETS", "Dataset", "load", "normalize"]
