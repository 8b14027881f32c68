"""Datasets: Fashion-MNIST built offline from local files, TFDS datasets, digits."""

from redy_jax.data.loaders import (
    DATASETS,
    SPLITS,
    VALIDATION_IMAGES,
    Dataset,
    load,
    load_image_folder,
    load_npz,
    model_inputs,
    normalize,
    split_range,
    split_ranges,
)

__all__ = ["DATASETS", "SPLITS", "VALIDATION_IMAGES", "Dataset", "load", "load_image_folder",
           "load_npz", "model_inputs", "normalize", "split_range", "split_ranges"]
